"""Running cerebro live: Ctrl-C stops it cleanly instead of unwinding through it."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["run_live", "stop_on_sigint"]


@contextlib.contextmanager
def stop_on_sigint(cerebro):
    """While inside, Ctrl-C (SIGINT) calls ``cerebro.runstop()``: cerebro leaves its loop and
    every feed's ``stop()`` closes its threads and sockets. A bare Ctrl-C would instead raise
    KeyboardInterrupt out of ``cerebro.run()`` with all of them still open. Only the main
    thread can own a signal handler; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cerebro.runstop())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_live(cerebro, **kwargs):
    """``cerebro.run(**kwargs)`` with :func:`stop_on_sigint`; returns what ``run`` returns."""
    with stop_on_sigint(cerebro):
        return cerebro.run(**kwargs)
