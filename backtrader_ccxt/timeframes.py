"""Bar sizes: backtrader (timeframe, compression) <-> ccxt timeframe strings, and candle arithmetic.

Pure functions, no I/O. A :class:`Timeframe` knows how long its candles are, including
calendar months and years whose length varies, so a candle's close is always computed from
its open time (``close_of``) rather than by adding an average duration.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import backtrader as bt

from .errors import UnsupportedTimeframeError

__all__ = [
    "Timeframe",
    "by_duration",
    "from_backtrader",
    "parse",
    "resolve",
    "to_backtrader",
]

_UNITS_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}
_CALENDAR_UNITS = {"M": 1, "y": 12}  # in months

_BT_NAMES = {
    bt.TimeFrame.Seconds: "Seconds",
    bt.TimeFrame.Minutes: "Minutes",
    bt.TimeFrame.Days: "Days",
    bt.TimeFrame.Weeks: "Weeks",
    bt.TimeFrame.Months: "Months",
    bt.TimeFrame.Years: "Years",
}

_RE = re.compile(r"^(\d+)([smhdwMy])$")


@dataclass(frozen=True)
class Timeframe:
    """One candle size, e.g. ``Timeframe(1, 'm')`` for one-minute candles."""

    amount: int
    unit: str

    @property
    def ccxt(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def is_calendar(self) -> bool:
        return self.unit in _CALENDAR_UNITS

    @property
    def ms(self) -> int:
        """Nominal length in ms (exact except for months/years, where it is 30/365 days)."""
        if self.unit == "M":
            return self.amount * 30 * 86_400_000
        if self.unit == "y":
            return self.amount * 365 * 86_400_000
        return self.amount * _UNITS_MS[self.unit]

    def close_of(self, open_ms: int) -> int:
        """The close time (= the next candle's open) of the candle opening at ``open_ms``."""
        return self._shift(open_ms, 1)

    def open_of(self, close_ms: int) -> int:
        """The open time of the candle closing at ``close_ms`` (calendar-exact)."""
        return self._shift(close_ms, -1)

    def _shift(self, t_ms: int, sign: int) -> int:
        if not self.is_calendar:
            return t_ms + sign * self.ms
        months = sign * self.amount * _CALENDAR_UNITS[self.unit]
        dt = datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc)
        month0 = dt.month - 1 + months
        year = dt.year + month0 // 12
        month = month0 % 12 + 1
        day = min(dt.day, calendar.monthrange(year, month)[1])
        nxt = dt.replace(year=year, month=month, day=day)
        return int(nxt.timestamp() * 1000)

    def __str__(self) -> str:
        return self.ccxt


def parse(text: str) -> Timeframe:
    """Parse a ccxt timeframe string such as ``'1s'``, ``'15m'``, ``'4h'``, ``'1M'``."""
    match = _RE.match(text) if isinstance(text, str) else None
    if not match or int(match.group(1)) <= 0:
        raise UnsupportedTimeframeError(
            f"timeframe {text!r} is not a ccxt timeframe string; expected a positive number "
            f"followed by one of s, m, h, d, w, M, y (e.g. '1m', '4h', '1d')"
        )
    return Timeframe(int(match.group(1)), match.group(2))


def by_duration(names) -> list[str]:
    """ccxt timeframe strings shortest first (``1m, 15m, 12h, 1d, 1M``); unparseable last."""

    def key(name: str):
        try:
            return (0, parse(name).ms, name)
        except UnsupportedTimeframeError:
            return (1, 0, name)

    return sorted({str(n) for n in names}, key=key)


_RESAMPLE_HINT = (
    "; for a size the exchange lacks, fetch a smaller one and add it with "
    "cerebro.resampledata(data, timeframe=..., compression=...)"
)


def _offered(available) -> str:
    return ", ".join(by_duration(available)) + _RESAMPLE_HINT


def _candidates(timeframe: int, compression: int) -> list[str]:
    """ccxt spellings for a backtrader bar size, preferred first."""
    n = compression
    if timeframe == bt.TimeFrame.Seconds:
        if n % 60 == 0:
            return _candidates(bt.TimeFrame.Minutes, n // 60) + [f"{n}s"]
        return [f"{n}s"]
    if timeframe == bt.TimeFrame.Minutes:
        out = [f"{n}m"]
        if n % 60 == 0:
            out.insert(0, f"{n // 60}h")
        if n % 1440 == 0:
            out.insert(0, f"{n // 1440}d")
        if n % 10080 == 0:
            out.insert(0, f"{n // 10080}w")
        return out
    if timeframe == bt.TimeFrame.Days:
        return [f"{n // 7}w", f"{n}d"] if n % 7 == 0 else [f"{n}d"]
    if timeframe == bt.TimeFrame.Weeks:
        return [f"{n}w"]
    if timeframe == bt.TimeFrame.Months:
        return [f"{n // 12}y", f"{n}M"] if n % 12 == 0 else [f"{n}M"]
    if timeframe == bt.TimeFrame.Years:
        return [f"{n}y", f"{12 * n}M"]
    return []


def from_backtrader(timeframe: int, compression: int, available=None) -> Timeframe:
    """Map a backtrader bar size to a ccxt timeframe the exchange offers.

    ``available`` is ``exchange.timeframes`` (keys are ccxt strings); when given, the first
    spelling it contains wins, and an error lists what the exchange offers.
    """
    if not isinstance(compression, int) or isinstance(compression, bool) or compression < 1:
        raise UnsupportedTimeframeError(
            f"compression {compression!r} is invalid; expected a positive integer"
        )
    cands = _candidates(timeframe, compression)
    if not cands:
        valid = ", ".join(f"bt.TimeFrame.{v}" for v in _BT_NAMES.values())
        offered = (
            f"; the exchange's sizes: {', '.join(by_duration(available))}" if available else ""
        )
        if timeframe == bt.TimeFrame.Ticks:
            raise UnsupportedTimeframeError(
                "timeframe bt.TimeFrame.Ticks is not a candle size: ticks come from a tick "
                "feed (store.getdata(timeframe=bt.TimeFrame.Ticks), REST polling), not from "
                f"candles{offered}; pass a candle size as a ccxt string ('1m') or a backtrader "
                f"constant, valid choices: {valid}{_RESAMPLE_HINT}"
            )
        names = bt.TimeFrame.Names
        known = isinstance(timeframe, int) and 0 < timeframe < len(names)
        name = f"bt.TimeFrame.{names[timeframe]}" if known else repr(timeframe)
        raise UnsupportedTimeframeError(
            f"timeframe {name} is not supported{offered}; valid choices: {valid}"
        )
    if available is None:
        return parse(cands[0])
    for cand in cands:
        if cand in available:
            return parse(cand)
    name = _BT_NAMES.get(timeframe, timeframe)
    raise UnsupportedTimeframeError(
        f"timeframe {name} x compression {compression} ({cands[0]!r}) is not offered by the "
        f"exchange; valid choices: {_offered(available)}"
    )


def to_backtrader(tf: Timeframe) -> tuple[int, int]:
    """The backtrader (timeframe, compression) for a ccxt timeframe."""
    n, u = tf.amount, tf.unit
    return {
        "s": (bt.TimeFrame.Seconds, n),
        "m": (bt.TimeFrame.Minutes, n),
        "h": (bt.TimeFrame.Minutes, 60 * n),
        "d": (bt.TimeFrame.Days, n),
        "w": (bt.TimeFrame.Weeks, n),
        "M": (bt.TimeFrame.Months, n),
        "y": (bt.TimeFrame.Years, n),
    }[u]


def resolve(timeframe, compression, available=None) -> Timeframe:
    """Accept either a ccxt string (``'1m'``) or backtrader's (timeframe, compression)."""
    if isinstance(timeframe, str):
        tf = parse(timeframe)
        if available is not None and tf.ccxt not in available:
            raise UnsupportedTimeframeError(
                f"timeframe {timeframe!r} is not offered by the exchange; valid choices: "
                f"{_offered(available)}"
            )
        return tf
    return from_backtrader(timeframe, compression, available)
