"""Which streamed candles are closed, and whether their streamed values can be trusted.

ccxt.pro's ``watch_ohlcv`` gives rows ``[t, o, h, l, c, v]`` with no "closed" flag, the forming
candle again and again. The rules (pure, no I/O):

- a candle is **closed** when a later candle arrives on the stream (or, handled by the
  caller, when its close time plus a grace has passed on the exchange clock);
- its last streamed values are **trusted** only if the update that last *changed* them
  arrived at or after the candle's close time (it is the exchange's final update, not a
  partial one) *and* the connection stayed up from that update until the successor arrived
  (same ``epoch``). Otherwise the bar must come from REST. "Changed" matters because ccxt's
  cache keeps one row per timestamp: a final update followed, within one read, by a re-sent
  older partial shows up as that partial again, unchanged - never as proof of finality. A
  quiet candle whose final equals its last partial costs one REST confirmation;
- rows older than the forming candle, and updates of the forming candle that go backwards
  (volume lower, high lower or low higher than already seen: a candle only accumulates, so
  such a frame is an out-of-order older update) are ignored; a
  malformed row is dropped and makes the forming candle untrusted (that frame may have been
  its final update).
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

    def __init__(self, tf: Timeframe, tolerance_ms: int = 0, trust_successor: bool = True) -> None:
        self.tf = tf
        self.tolerance_ms = tolerance_ms
        #: False where the venue's own closed flag is read (:mod:`.closeflags`): then a candle
        #: closed by its successor without a flagged final is never trusted
        self.trust_successor = trust_successor
        self.forming: Bar | None = None
        self._recv_ms = 0
        self._epoch = -1
        self.stale = 0
        self.malformed = 0
        self._floor_ms: int | None = None  # candles at or before this were delivered

    def update(self, rows: Iterable[Sequence], recv_ms: int, epoch: int) -> list[Closed]:
        """Feed one ``watch_ohlcv`` result; return the candles it closed, oldest first."""
        out: list[Closed] = []
        bars = []
        for row in rows:
            try:
                bars.append(bar_from_row(row, self.tf))
            except (TypeError, ValueError, IndexError):
                self.malformed += 1  # a garbled frame; its candle will not be trusted
                self._epoch = -1
        for bar in sorted(bars, key=lambda b: b.open_ms):
            if self._floor_ms is not None and bar.open_ms <= self._floor_ms:
                continue
            cur = self.forming
            if cur is not None and (bar.open_ms < cur.open_ms or _regressed(cur, bar)):
                self.stale += 1
                continue
            if cur is not None and bar.open_ms == cur.open_ms:
                if bar != cur:  # a duplicate frame changes nothing, and proves nothing
                    self.forming = bar
                    self._recv_ms = recv_ms
                    self._epoch = epoch
                continue
            if cur is not None:
                trusted = (
                    self.trust_successor
                    and self._epoch == epoch
                    and self._recv_ms + self.tolerance_ms >= cur.close_ms
                )
                out.append(Closed(cur, trusted))
            self.forming = bar
            self._recv_ms = recv_ms
            self._epoch = epoch
        return out

    def forget_through(self, open_ms: int) -> None:
        """The candle at ``open_ms`` and everything before it were delivered another way:
        drop them, and ignore their later frames."""
        self._floor_ms = open_ms if self._floor_ms is None else max(self._floor_ms, open_ms)
        if self.forming is not None and self.forming.open_ms <= open_ms:
            self.forming = None


def _regressed(cur: Bar, new: Bar) -> bool:
    """An update of the same candle that is older than what we hold."""
    return new.open_ms == cur.open_ms and (
        new.volume < cur.volume or new.high < cur.high or new.low > cur.low
    )
