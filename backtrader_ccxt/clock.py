"""The exchange's clock: "now" for every closed-candle decision is the exchange's time.

A candle is closed when the *exchange's* clock has passed its close time, so a local clock
that runs fast would deliver forming candles. The offset is measured once with
``fetch_time`` (midpoint of the round trip) and then carried on the local *monotonic* clock,
so a step of the machine's wall clock later (NTP correcting it, a VM resumed) moves nothing:
the monotonic clock never steps, and follows NTP's rate corrections. A clock callable can be
injected instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ccxt

log = logging.getLogger(__name__)

__all__ = ["ExchangeClock"]

_UNSYNCED_MARGIN_MS = 250


class ExchangeClock:
    """Exchange time in ms. ``now`` (a callable returning ms) replaces the system clock.

    ``rate`` is how many exchange ms pass per real ms (1 for real exchanges; a test clock
    that runs 60x faster passes 60 so waits are converted correctly).
    """

    def __init__(
        self,
        now: Callable[[], float] | None = None,
        rate: float = 1.0,
        *,
        _wall: Callable[[], float] = time.time,
        _mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self.rate = float(rate) if now is not None else 1.0
        self._wall = _wall
        self._mono = _mono
        #: exchange ms = monotonic ms + this, once measured (None: the wall clock is used)
        self._mono_offset_ms: float | None = None
        #: how far our reading of the exchange clock may run ahead of it (half the round
        #: trip of the measurement, plus 2 ms); 0 for an injected clock
        self.margin_ms = 0
        self.synced = now is not None
        #: how long ccxt's rate limiter held the measuring request (kept out of the offset)
        self.waited_ms = 0.0

    @property
    def offset_ms(self) -> float:
        """Exchange time minus the local wall clock, now (ms)."""
        if self._now is not None:
            return float(self._now()) - self._wall() * 1000.0
        if self._mono_offset_ms is None:
            return 0.0
        return self._mono() * 1000.0 + self._mono_offset_ms - self._wall() * 1000.0

    def now_ms(self) -> int:
        if self._now is not None:
            return int(self._now())
        if self._mono_offset_ms is not None:
            return int(self._mono() * 1000.0 + self._mono_offset_ms)
        return int(self._wall() * 1000)

    def at_ms(self, wall_s: float) -> int | None:
        """The exchange time at a recent moment of the local wall clock (``time.time()``,
        as ccxt and :mod:`.departures` stamp requests), or None for an injected clock (which
        has no relation to the wall clock)."""
        if self._now is not None:
            return None
        return int(self.now_ms() - (self._wall() - wall_s) * 1000.0)

    def safe_now_ms(self) -> int:
        """A time the exchange has certainly reached: for deciding that a candle closed."""
        return self.now_ms() - self.margin_ms

    def seconds_until(self, exchange_ms: float) -> float:
        """Real seconds to wait until the exchange clock reads ``exchange_ms`` (>= 0)."""
        return max(0.0, (exchange_ms - self.now_ms()) / 1000.0 / self.rate)

    def sync(self, exchange) -> None:
        """Measure the offset to ``exchange`` (a sync ccxt instance); once, at store start."""
        if self.synced:
            return
        if not exchange.has.get("fetchTime"):
            log.warning("%s has no fetchTime: using the local clock as exchange time", exchange.id)
            # unmeasured: keep a margin a well-kept local clock stays within of the venue's
            self.margin_ms = _UNSYNCED_MARGIN_MS
            self.synced = True
            return
        # Time the request itself, not ccxt's rate limiter: right after load_markets,
        # fetch_time first waits out the limiter's delay (100+ ms on some venues), which
        # would bias the offset by half of it. ccxt stamps the moment the request leaves,
        # after the throttle, in lastRestRequestTimestamp.
        called = self._wall()
        server_ms = exchange.fetch_time()
        t1 = self._wall()
        mono1 = self._mono()
        left = getattr(exchange, "lastRestRequestTimestamp", 0) or 0
        t0 = left / 1000.0 if called - 0.001 <= left / 1000.0 <= t1 else called
        if not isinstance(server_ms, int | float):
            # an unreadable body (ccxt returns None for it): retryable, like a bad page
            raise ccxt.BadResponse(f"{exchange.id} fetch_time returned {server_ms!r}")
        # the server's stamp belongs to the round trip's midpoint, (t1 - t0) / 2 before t1
        self._mono_offset_ms = float(server_ms) - (mono1 - (t1 - t0) / 2.0) * 1000.0
        # the true offset lies within half the round trip of this one (plus the 1 ms steps
        # of the stamps): every "closed by now" judgement keeps that margin
        self.margin_ms = int((t1 - t0) * 500.0) + 2
        self.synced = True
        log.debug(
            "%s clock offset %.1f ms (round trip %.1f ms)",
            exchange.id,
            self.offset_ms,
            (t1 - t0) * 1000,
        )
        self.waited_ms = (t0 - called) * 1000.0  # the limiter's wait, kept out of the offset
