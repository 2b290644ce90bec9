"""What the HTTP test peers (Sentry ingest, OTLP/HTTP receiver) share: a server thread whose connections a stop
cuts, on the lifecycle every peer has (:class:`tests.peers.base.Peer`)."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.peers.base import Peer

__all__ = ["HttpPeer", "TrackedHTTPServer"]


class TrackedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, so a stop can cut them."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like any real server: without this, Nagle holds the body behind the headers
        # until the client's delayed ACK (40 ms per request on loopback).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def kick_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class HttpPeer(Peer):
    """An HTTP server thread; a subclass makes its server (:meth:`_make_server`) and says what it got (``describe``).

    On stop, open connections are cut and delays waiting on ``_stopping`` end.
    """

    def __init__(self, port: int | None) -> None:
        super().__init__(port)
        self._server: TrackedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _make_server(self, address: tuple[str, int]) -> TrackedHTTPServer:
        raise NotImplementedError

    def _serve(self, port: int) -> int:
        server = self._make_server(("127.0.0.1", port))
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return int(server.server_address[1])

    def _shutdown(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.kick_connections()
            server.server_close()
        if thread is not None:
            thread.join()
