"""Peers that fail at the TCP level: one that accepts and never answers, one that resets every connection.

Both count the connections they accepted, so a test can see how often a client really tried.
"""

from __future__ import annotations

import socket
import struct
import threading

from tests.peers.base import Peer

__all__ = ["HungPeer", "ResettingPeer"]


class _TcpPeer(Peer):
    """A listening socket whose accepted connections a subclass handles (:meth:`_accepted`)."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.accepted = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._held: list[socket.socket] = []
        self._stop = threading.Event()

    def _serve(self, port: int) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.settimeout(0.1)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        self._thread.start()
        return int(sock.getsockname()[1])

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._accepted(connection)

    def _accepted(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        for held in self._held:
            held.close()
        self._held.clear()


class HungPeer(_TcpPeer):
    """Accepts every connection, reads nothing, answers nothing, closes nothing (until stopped)."""

    def _accepted(self, connection: socket.socket) -> None:
        self._held.append(connection)


class ResettingPeer(_TcpPeer):
    """Accepts every connection and resets it at once (a server that is down behind a listening port)."""

    def _accepted(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
