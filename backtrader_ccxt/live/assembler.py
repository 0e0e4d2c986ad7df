"""Which streamed candles are closed, and whether their streamed values can be trusted.

ccxt.pro's ``watch_ohlcv`` gives rows ``[t, o, h, l, c, v]`` with no "closed" flag, the forming
candle again and again. The rules (pure, no I/O):

- a candle is **closed** when a later candle arrives on the stream (or, handled by the
  caller, when its close time plus a grace has passed on the exchange clock);
- its last streamed values are **trusted** only if that update arrived at or after the
  candle's close time (it is the exchange's final update, not a partial one) *and* the
  connection stayed up from that update until the successor arrived (same ``epoch``).
  Otherwise the bar must come from REST;
- rows older than the forming candle (out-of-order or duplicate frames) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..bars import Bar, bar_from_row
from ..timeframes import Timeframe

__all__ = ["Closed", "CandleAssembler"]


@dataclass(frozen=True, slots=True)
class Closed:
    """A candle the stream has closed: ``bar`` holds its last streamed values."""

    bar: Bar
    trusted: bool


class CandleAssembler:
    """Tracks the forming candle of one (symbol, timeframe) stream."""

    def __init__(self, tf: Timeframe, tolerance_ms: int = 0) -> None:
        self.tf = tf
        self.tolerance_ms = tolerance_ms
        self.forming: Bar | None = None
        self._recv_ms = 0
        self._epoch = -1
        self.stale = 0

    def update(self, rows: Iterable[Sequence], recv_ms: int, epoch: int) -> list[Closed]:
        """Feed one ``watch_ohlcv`` result; return the candles it closed, oldest first."""
        out: list[Closed] = []
        for row in sorted(rows, key=lambda r: r[0]):
            bar = bar_from_row(row, self.tf)
            cur = self.forming
            if cur is not None and bar.open_ms < cur.open_ms:
                self.stale += 1
                continue
            if cur is not None and bar.open_ms > cur.open_ms:
                trusted = self._epoch == epoch and self._recv_ms + self.tolerance_ms >= cur.close_ms
                out.append(Closed(cur, trusted))
            self.forming = bar
            self._recv_ms = recv_ms
            self._epoch = epoch
        return out

    def forget_through(self, open_ms: int) -> None:
        """The candle at ``open_ms`` and everything before it were delivered another way."""
        if self.forming is not None and self.forming.open_ms <= open_ms:
            self.forming = None
