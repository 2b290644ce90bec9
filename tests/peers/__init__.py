"""Real protocol peers for tests, on 127.0.0.1.

* :mod:`.base`: the lifecycle every peer shares (start, stop, restart on the same port, ``wait_for``).
* :mod:`.otlp_receiver` (OTLP/gRPC) and :mod:`.otlp_http_receiver` (OTLP/HTTP): collectors.
* :mod:`.sentry_ingest`: Sentry's envelope endpoint and its OTLP traces endpoint.
* :mod:`.tcp_peers`: peers that fail at the TCP level (hung, resetting).
* :mod:`.decode`: OTLP request bodies as flat records, what every OTLP-receiving peer reports.
"""
