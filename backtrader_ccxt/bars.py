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

__all__ = ["BAD_ROW_KINDS", "Bar", "BadRow", "BarGate", "Status", "bar_from_row", "closed_bars"]

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


class BadRow(ValueError):
    """A ccxt OHLCV row that is not a candle. ``kind`` says why, one of :data:`BAD_ROW_KINDS`."""

    def __init__(self, kind: str, row, why: str) -> None:
        super().__init__(f"not a candle ({kind}: {why}): {row!r}"[:300])
        self.kind = kind
        self.row = row


#: Why a row is refused: ``shape`` (not a sequence of at least 5 fields), ``time`` (open time
#: missing, not an integer number of ms, or negative), ``misaligned`` (open time not on the
#: timeframe's grid, checked up to 1h bars: longer ones follow the venue's own day), ``price``
#: (an open/high/low/close that is missing, not a number, not finite or <= 0), ``range``
#: (high < low, or open/close outside low..high), ``volume`` (not a number, not finite or < 0).
BAD_ROW_KINDS = ("shape", "time", "misaligned", "price", "range", "volume")

_ALIGN_UP_TO_MS = 3_600_000


def _price(value, name: str, row) -> float:
    if value is None or isinstance(value, bool):
        raise BadRow("price", row, f"{name} is {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadRow("price", row, f"{name} {value!r} is not a number") from None
    if not math.isfinite(out) or out <= 0:
        raise BadRow("price", row, f"{name} {value!r} is not a positive finite price")
    return out


def bar_from_row(row: Sequence, tf: Timeframe) -> Bar:
    """The one parser for a ccxt OHLCV row ``[open_ms, open, high, low, close, volume]``,
    for every path (REST, stream, cache, download); raises :class:`BadRow` (a
    ``ValueError``) for a row that is not a candle (see :data:`BAD_ROW_KINDS`).

    Numeric strings are accepted (venues and caches send them). A missing volume (``None``,
    or a 5-field row: index and mark price candles have none) is taken as 0.
    """
    if row is None or isinstance(row, str | bytes) or not hasattr(row, "__len__") or len(row) < 5:
        raise BadRow("shape", row, "expected [open_ms, open, high, low, close, volume]")
    t = row[0]
    if t is None or isinstance(t, bool):
        raise BadRow("time", row, f"open time is {t!r}")
    try:
        t_f = float(t)
    except (TypeError, ValueError):
        raise BadRow("time", row, f"open time {t!r} is not a number") from None
    if not math.isfinite(t_f) or t_f != int(t_f) or t_f < 0:
        raise BadRow("time", row, f"open time {t!r} is not a whole number of ms >= 0")
    open_ms = int(t_f) if not isinstance(t, int) else t
    if not tf.is_calendar and tf.ms <= _ALIGN_UP_TO_MS and open_ms % tf.ms:
        raise BadRow("misaligned", row, f"open time {open_ms} is not on the {tf.ccxt} grid")
    o = _price(row[1], "open", row)
    h = _price(row[2], "high", row)
    lo = _price(row[3], "low", row)
    c = _price(row[4], "close", row)
    if h < lo or not (lo <= o <= h) or not (lo <= c <= h):
        raise BadRow("range", row, "high < low, or open/close outside low..high")
    v = row[5] if len(row) > 5 else None
    if v is None:
        vol = 0.0
    else:
        try:
            vol = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            vol = math.nan
        if not math.isfinite(vol) or vol < 0:
            raise BadRow("volume", row, f"volume {v!r} is not a finite number >= 0")
    return Bar(open_ms, tf.close_of(open_ms), o, h, lo, c, vol)


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
