"""A background thread running its own asyncio loop; the only door into it is ``submit``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

__all__ = ["LoopThread"]


class LoopThread:
    """Start with :meth:`start` (returns once the loop runs), talk with :meth:`submit`,
    end with :meth:`stop`, which runs ``on_stop`` on the loop (to close ccxt instances),
    cancels what is left, closes the loop and joins the thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_error)
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        """Run ``coro`` on the loop; the returned future is safe to wait on from any thread."""
        if self.loop is None:
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable, *args) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, on_stop: Callable[[], Awaitable] | None = None, timeout: float = 2.0) -> bool:
        """Stop the loop within ``timeout`` seconds; returns whether the thread ended."""
        if self._thread is None or self.loop is None:
            return True
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.stop() called from its own thread")
        deadline = time.monotonic() + timeout  # one budget for closing and joining
        if on_stop is not None and self._thread.is_alive():
            fut = self.submit(on_stop())
            try:
                fut.result(max(0.0, deadline - time.monotonic() - 0.2))
            except concurrent.futures.TimeoutError:
                log.warning("%s: shutdown did not finish within %.1fs", self.name, timeout)
                fut.cancel()
            except Exception:  # noqa: BLE001 - a failing close must not block the stop
                log.exception("%s: error while shutting down", self.name)
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        ended = not self._thread.is_alive()
        if not ended:
            log.warning("%s: thread did not end within %.1fs", self.name, timeout)
        self._thread = None
        return ended


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Errors raised in callbacks no task awaits (ccxt's socket callbacks on a garbled
    frame): the watcher sees their effect as a NetworkError; log them once, briefly."""
    exc = context.get("exception")
    log.warning(
        "loop callback error: %s%s",
        context.get("message", ""),
        f" ({type(exc).__name__}: {exc})" if exc else "",
    )
