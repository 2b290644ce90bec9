"""What the HTTP test peers (Sentry ingest, OTLP/HTTP receiver) share: a server thread on 127.0.0.1 that can be
stopped and restarted on the same port, connections that can be cut, and waiting for what arrives."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


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


class HttpPeer:
    """Lifecycle and waiting; a subclass makes its server (:meth:`_make_server`) and says what it got (``describe``).

    ``port=None`` binds a free port on the first :meth:`start`; later starts (after :meth:`stop`) rebind the same
    port. Subclasses call :meth:`_arrived` under ``_cond`` whenever something is recorded.
    """

    def __init__(self, port: int | None) -> None:
        self._requested_port = port or 0
        self._bound_port: int | None = None
        self._server: TrackedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self._cond = threading.Condition()
        self._generation = 0

    def _make_server(self, address: tuple[str, int]) -> TrackedHTTPServer:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError(f"{type(self).__name__} already started")
            port = self._bound_port if self._bound_port is not None else self._requested_port
            server = self._make_server(("127.0.0.1", port))
            self._bound_port = server.server_address[1]
            self._stopping.clear()
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
            )
            self._thread.start()
            return self

    def stop(self) -> None:
        """Stop serving: the port closes, open connections are cut, pending delays end. Safe to call twice."""
        with self._lifecycle:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
            if server is None:
                return
            self._stopping.set()
            server.shutdown()
            server.kick_connections()
            server.server_close()
            if thread is not None:
                thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._bound_port

    def _arrived(self) -> None:
        """Wake :meth:`wait_for` (call with ``_cond`` held)."""
        self._generation += 1
        self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Re-evaluate ``predicate`` whenever something arrives; return its first truthy result.

        Raises ``TimeoutError`` (listing what was received) if it stays falsy for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                generation = self._generation
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{type(self).__name__}: condition not met within {timeout}s; received: {self.describe()}"
                )
            with self._cond:
                if self._generation == generation:  # nothing new yet: sleep until something arrives
                    self._cond.wait(remaining)
