"""Small shared test helpers."""

from __future__ import annotations

import threading
import time


def eventually(cond, timeout: float = 5.0, interval: float = 0.01):
    """Poll ``cond()`` until it returns a truthy value (returned) or ``timeout`` seconds pass
    (AssertionError). For waiting on another thread without a fixed sleep."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {cond}")
        pause.wait(interval)
