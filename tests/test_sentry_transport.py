"""Sentry's event transport (sentry_transport.py) with a real peer on 127.0.0.1: after the client closes."""

from __future__ import annotations

import time

import sentry_sdk

from litestar_omnii_obs._internal.sentry_transport import QuietHttpTransport
from tests.peers.tcp_peers import ResettingPeer


def test_a_closed_client_never_probes_sentry_again() -> None:
    # An event kept while Sentry was down schedules a probe 2 s later. Once the client has closed, that
    # probe must not fire: sentry-sdk's submit() would restart the killed worker, which would then send
    # from a client nobody owns (in a test suite: in the middle of another test).
    with ResettingPeer() as sentry:
        client = sentry_sdk.Client(dsn=f"http://key@127.0.0.1:{sentry.port}/1", transport=QuietHttpTransport)
        transport = client.transport
        assert isinstance(transport, QuietHttpTransport)
        client.capture_event({"message": "kept while Sentry is down"})
        client.flush(timeout=2.0)
        assert sentry.accepted == 1  # tried once, reset: kept, probe scheduled
        transport.kill()
        time.sleep(transport.health.probe_interval + 0.5)
        assert sentry.accepted == 1, "a killed transport probed again"
        transport.finish()
    assert transport.health.lost() == {"still queued at shutdown": 1}
