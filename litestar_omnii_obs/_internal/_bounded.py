"""Run blocking shutdown work off the event loop, giving up after a bound.

Flushing a sink, Sentry or an exporter can block for as long as its peer does (a pipe
nobody reads, a dead collector). The work runs in a daemon thread, so neither the event
loop nor the process exit waits on it past ``timeout``; ``asyncio.to_thread`` would not
do, since the loop's executor is joined when the loop closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

__all__ = ["run_bounded"]

_logger = logging.getLogger("litestar_omnii_obs")


async def run_bounded(work: Callable[[], object], timeout: float, name: str) -> bool:  # noqa: ASYNC109
    """Run ``work`` in a daemon thread; ``True`` if it finished within ``timeout`` seconds.

    An exception from ``work`` is logged (it never reaches the caller) and counts as finished.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            work()
        except Exception:
            _logger.exception("%s failed", name)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed after we gave up waiting
                loop.call_soon_threadsafe(resolve)

    threading.Thread(target=run, name=f"omnii-obs-{name}", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False
    return True
