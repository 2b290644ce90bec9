"""The package's internals: not API, and free to change. The API is what ``litestar_omnii_obs`` exports,
``litestar_omnii_obs.testing`` and the ``litestar obs`` commands."""
