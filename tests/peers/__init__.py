"""Real protocol peers (an OTLP/gRPC collector and a Sentry ingest endpoint) for tests."""
