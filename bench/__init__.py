"""Benchmark of litestar_omnii_obs against bare Litestar and the alternatives (issue 5); see run.sh."""
