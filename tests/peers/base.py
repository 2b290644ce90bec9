"""What every test peer shares: its lifecycle on 127.0.0.1 and waiting for what arrives.

A peer binds a free port on its first :meth:`Peer.start` (or the port it was given) and every
later start rebinds that same port, so a test can stop a peer and bring it back where the
package under test still points (:meth:`Peer.restart`). Subclasses say how to serve
(:meth:`Peer._serve`) and how to stop (:meth:`Peer._shutdown`), and call :meth:`Peer._arrived`
under ``_cond`` whenever they record something, which wakes :meth:`Peer.wait_for`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["Peer"]

T = TypeVar("T")


class Peer:
    """A server on ``127.0.0.1`` that can be started, stopped and restarted on the same port; thread-safe."""

    def __init__(self, port: int | None = None) -> None:
        self._requested_port = port or 0
        self._bound_port: int | None = None
        self._serving = False
        self._lifecycle = threading.Lock()
        self._cond = threading.Condition()
        self._generation = 0

    # -- what a subclass provides -------------------------------------------------------------------

    def _serve(self, port: int) -> int:
        """Start serving on ``127.0.0.1:port`` (0: any free port); return the port bound."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Stop serving: the port closes, open connections are cut."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short summary of what arrived (timeout messages show it)."""
        return ""

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        with self._lifecycle:
            if self._serving:
                raise RuntimeError(f"{type(self).__name__} already started")
            port = self._bound_port if self._bound_port is not None else self._requested_port
            self._bound_port = self._serve(port)
            self._serving = True
            return self

    def stop(self) -> None:
        """Stop serving. Safe to call twice; what was recorded survives (a restart keeps it)."""
        with self._lifecycle:
            if not self._serving:
                return
            self._serving = False
            self._shutdown()

    def restart(self) -> Self:
        """Stop, then serve again on the same port (a peer that went away and came back)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._serving

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._bound_port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- waiting ------------------------------------------------------------------------------------

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
