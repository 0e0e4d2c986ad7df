"""Backoff: how long to wait before the next attempt. Sans-I/O; the callers do the waiting.

Capped exponential backoff with full jitter, reset after a success. A server's
``Retry-After`` (rate limits) is a floor under the computed delay.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

__all__ = ["Backoff", "retry_after_seconds"]


class Backoff:
    """Delays ``initial * factor**n``, capped at ``maximum``, with jitter in [50%, 100%].

    ``next_delay()`` returns the delay for the next attempt and advances; ``reset()`` after a
    healthy response starts over. ``rng`` is injectable so tests can assert the sequence.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 2.0,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or maximum < initial:
            raise ValueError(f"need 0 <= initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self, floor: float = 0.0) -> float:
        exponent = min(self.attempts, 60)  # far past any cap; avoids float overflow
        raw = min(self.maximum, self.initial * self.factor**exponent)
        self.attempts += 1
        delay = raw * (0.5 + 0.5 * self._rng.random()) if self.jitter else raw
        return max(delay, floor)

    def reset(self) -> None:
        self.attempts = 0


def retry_after_seconds(headers: Mapping | None, cap: float = 300.0) -> float:
    """The ``Retry-After`` of the last response, in seconds (0 when absent or unparseable)."""
    if not headers:
        return 0.0
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return min(cap, max(0.0, float(value)))
            except (TypeError, ValueError):
                return 0.0
    return 0.0
