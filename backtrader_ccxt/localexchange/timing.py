"""When each candle frame is due: the per-candle emission schedule. Pure, no I/O.

Time is cut into *periods*, one per candle: period ``k`` runs from candle ``k``'s open to
candle ``k + 1``'s. Inside period ``k`` the stream sends candle ``k``'s partial updates and,
somewhere, the final of candle ``k - 1``. Where that final falls is the venue's habit:

* Binance: at the close instant, just before the successor's first update.
* Bybit: a little after ``end`` (``final_delay``), and the successor's first update right
  after it (recorded v5 frames: ~0.45 s on 1m candles).
* OKX: usually at the close, but on some candles only AFTER the successor's first update
  (``late_final_every``), as the real venue does at times.

Every rule is a function of the candle index, so the schedule is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import Timeframe

__all__ = ["FINAL", "PARTIAL", "Event", "Timing"]

FINAL = "final"  # the final of the PREVIOUS candle (k - 1)
PARTIAL = "partial"  # partial update j of candle k


@dataclass(frozen=True)
class Event:
    offset_ms: int  # from the period's open
    kind: str  # FINAL or PARTIAL
    j: int = 0  # update index (PARTIAL only)


@dataclass
class Timing:
    """A venue's frame timing.

    Params:
        final_delay_ms: longest delay of a final after its candle's end, in ms (Bybit ~500).
        final_delay_fraction: the delay is also at most this fraction of the candle length,
            so fast (1s) candles keep their shape.
        late_final_every: if > 0, the final of every candle whose index is a multiple of it
            is sent only after the successor's first update (0: never).
    """

    final_delay_ms: int = 0
    final_delay_fraction: float = 0.05
    late_final_every: int = 0

    def final_delay(self, tf: Timeframe) -> int:
        return min(self.final_delay_ms, int(tf.ms * self.final_delay_fraction))

    def is_late(self, k: int) -> bool:
        """Whether candle ``k``'s final comes after candle ``k + 1``'s first update."""
        every = self.late_final_every
        return every > 0 and k % every == 0

    def schedule(self, tf: Timeframe, offsets: list[int], k: int) -> list[Event]:
        """Events of period ``k`` in send order. ``offsets``: the partial updates' offsets
        from the open (``Replay.update_offsets``), ascending, the first one 0."""
        delay = self.final_delay(tf)
        # keep the successor's first update before its second one
        ceiling = offsets[1] - 1 if len(offsets) > 1 else (tf.ms * 9) // 10
        first = min(max(offsets[0], delay), max(ceiling, 0))
        parts = [Event(first, PARTIAL, 0)]
        parts += [Event(off, PARTIAL, j) for j, off in enumerate(offsets[1:], 1)]
        if not self.is_late(k - 1):
            return [Event(first, FINAL), *parts]
        # late: halfway between the successor's first and second updates
        nxt = offsets[1] if len(offsets) > 1 else tf.ms
        late = Event(first + max((nxt - first) // 2, 1), FINAL)
        return [parts[0], late, *parts[1:]]
