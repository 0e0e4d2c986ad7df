"""The bar type that crosses every boundary, and the pure rules that produce it.

A :class:`Bar` is immutable and always *closed*: it is built from a ccxt OHLCV row only once
the candle is known to be final. Its backtrader timestamp is the candle's **close** time as
naive UTC (backtrader stamps bars at their close).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .timeframes import Timeframe

__all__ = ["Bar", "Status", "bar_from_row", "closed_bars", "BarGate"]

_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed candle. Times are ms since the epoch, UTC."""

    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def dt(self) -> datetime:
        """The close time as a naive UTC datetime: what backtrader stamps the bar with."""
        return _EPOCH + timedelta(milliseconds=self.close_ms)

    def row(self) -> list:
        """The ccxt row ``[open_ms, o, h, l, c, v]`` this bar was built from."""
        return [self.open_ms, self.open, self.high, self.low, self.close, self.volume]


@dataclass(frozen=True, slots=True)
class Status:
    """A change of connection state, sent to a feed beside its bars.

    ``code`` is one of the names of backtrader's data statuses (``'LIVE'``, ``'DELAYED'``,
    ``'CONNBROKEN'``, ``'DISCONNECTED'``, ``'NOTSUBSCRIBED'``); the loop thread never imports
    backtrader objects, the feed maps the name.
    """

    code: str
    message: str = ""
    fatal: bool = False


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not math.isfinite(out):
        raise ValueError(f"non-finite value {value!r}")
    return out


def bar_from_row(row: Sequence, tf: Timeframe) -> Bar:
    """Build a bar from a ccxt OHLCV row; raises ``ValueError`` for a malformed row.

    A missing volume (some venues send ``None``) is taken as 0.
    """
    if row is None or len(row) < 5:
        raise ValueError(f"malformed OHLCV row {row!r}")
    try:
        open_ms = int(row[0])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed OHLCV row {row!r}") from exc
    vol = row[5] if len(row) > 5 and row[5] is not None else 0.0
    return Bar(
        open_ms=open_ms,
        close_ms=tf.close_of(open_ms),
        open=_num(row[1]),
        high=_num(row[2]),
        low=_num(row[3]),
        close=_num(row[4]),
        volume=_num(vol),
    )


def closed_bars(
    rows: Iterable[Sequence],
    tf: Timeframe,
    now_ms: int,
    after_ms: int | None = None,
    until_ms: int | None = None,
) -> list[Bar]:
    """The closed candles among ``rows``, sorted, de-duplicated.

    Keeps rows whose candle has closed by ``now_ms`` (exchange clock), that open after
    ``after_ms`` and before ``until_ms``. When a timestamp repeats, the later row wins (ccxt
    and exchanges send the newer state last).
    """
    by_open: dict[int, Bar] = {}
    for row in rows:
        bar = bar_from_row(row, tf)
        if after_ms is not None and bar.open_ms <= after_ms:
            continue
        if until_ms is not None and bar.open_ms >= until_ms:
            continue
        if bar.close_ms > now_ms:
            continue
        by_open[bar.open_ms] = bar
    return [by_open[k] for k in sorted(by_open)]


class BarGate:
    """The "time already seen" guard: lets each bar through once, in strictly increasing time."""

    __slots__ = ("last_open_ms",)

    def __init__(self, last_open_ms: int | None = None) -> None:
        self.last_open_ms = last_open_ms

    def admit(self, bar: Bar) -> bool:
        if self.last_open_ms is not None and bar.open_ms <= self.last_open_ms:
            return False
        self.last_open_ms = bar.open_ms
        return True
