"""Trades: the one parser for a ccxt trade, the exactly-once gate, and bars built from trades.

Pure rules, no I/O; every time is ms since the epoch, UTC, on the exchange clock.

* :func:`trade_from_ccxt` turns a ccxt trade dict into an immutable :class:`Trade` or raises
  ``ValueError`` with the reason; :func:`parse_trades` splits a page into trades and rejects.
* :class:`TradeGate` lets each trade through once. Where the venue gives ids it goes by id:
  decimal ids (Binance's are increasing integers, as are most venues') by a high-water mark,
  so an overlap between a REST page and the stream can only be dropped and an id gap is
  visible (:attr:`TradeGate.gaps`); other string ids by a set of the ids seen within a time
  window. Where there are no ids it goes by content ``(timestamp, price, amount, side)`` with
  an occurrence count: two identical trades in one batch are two trades, and a later batch
  (a REST page overlapping what was delivered) adds only the occurrences beyond those seen.
* :class:`TradeBars` aggregates trades into :class:`~backtrader_ccxt.bars.Bar` of any
  :class:`~backtrader_ccxt.timeframes.Timeframe` under the bar contract: a bar leaves only once
  the exchange clock has passed its close plus a grace (a quiet market still gets its bar on
  time; the next trade is not needed), stamped at close, once, with final values.

Empty intervals (no trade at all) give **no bar** by default, as Binance's REST omits candles
without trades and as a trade stream cannot tell "no trade" from "not yet": ``empty="flat"``
instead emits a flat bar at the last traded price with volume 0, as Binance's WebSocket and
some venues' REST do. Either way a bar from trades equals the venue's candle of the same
interval whenever that interval had trades.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from .bars import Bar
from .errors import ConfigurationError
from .timeframes import Timeframe

__all__ = [
    "EMPTY_RULES",
    "Trade",
    "TradeBars",
    "TradeGate",
    "interval_open",
    "parse_trades",
    "trade_from_ccxt",
]

_SIDES = ("buy", "sell")
_DAY_MS = 86_400_000
_WEEK_OFFSET_MS = 4 * _DAY_MS  # weekly candles open on Mondays; the epoch was a Thursday

#: How :class:`TradeBars` treats an interval without trades.
EMPTY_RULES = ("skip", "flat")


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade. ``id`` is the venue's id as a string (ccxt's form) or None.

    ``side`` is the taker's side, ``'buy'``, ``'sell'`` or None where the venue omits it.
    """

    id: str | None
    timestamp_ms: int
    price: float
    amount: float
    side: str | None

    @property
    def seq(self) -> int | None:
        """The id as an integer when it is a decimal number (ordered ids), else None."""
        i = self.id
        if i is not None and i.isdigit() and i.isascii():
            return int(i)
        return None

    @property
    def content(self) -> tuple:
        """What identifies a trade where the venue gives no id."""
        return (self.timestamp_ms, self.price, self.amount, self.side)


def _positive(name: str, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} {value!r} is not a number") from exc
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name} {value!r} is not a positive finite number")
    return out


def trade_from_ccxt(raw: Mapping) -> Trade:
    """Build a :class:`Trade` from a ccxt trade dict; ``ValueError`` says what is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"a trade must be a dict, got {type(raw).__name__}")
    ts = raw.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise ValueError(f"timestamp {ts!r} is not an integer of ms")
    if isinstance(ts, float) and (not math.isfinite(ts) or ts != int(ts)):
        raise ValueError(f"timestamp {ts!r} is not an integer of ms")
    ts = int(ts)
    if ts < 0:
        raise ValueError(f"timestamp {ts!r} is before the epoch")
    tid = raw.get("id")
    if tid is not None:
        if isinstance(tid, bool) or not isinstance(tid, (int, str)):
            raise ValueError(f"id {tid!r} is neither a string nor an integer")
        tid = str(tid)
        if not tid:
            tid = None
    side = raw.get("side")
    if side is not None and side not in _SIDES:
        raise ValueError(f"side {side!r} is not one of 'buy', 'sell' or None")
    return Trade(
        id=tid,
        timestamp_ms=ts,
        price=_positive("price", raw.get("price")),
        amount=_positive("amount", raw.get("amount")),
        side=side,
    )


def parse_trades(raws: Iterable[Mapping]) -> tuple[list[Trade], list[tuple[object, str]]]:
    """Parse a page of ccxt trades: ``(trades in exchange order, [(raw, reason), ...])``.

    Exchange order is (timestamp, id) with decimal ids compared as numbers.
    """
    good: list[Trade] = []
    bad: list[tuple[object, str]] = []
    for raw in raws:
        try:
            good.append(trade_from_ccxt(raw))
        except ValueError as exc:
            bad.append((raw, str(exc)))
    good.sort(key=_order)
    return good, bad


def _order(t: Trade) -> tuple:
    seq = t.seq
    return (t.timestamp_ms, 0 if seq is not None else 1, seq or 0, t.id or "")


class TradeGate:
    """Lets each trade through once; feed it batches in exchange order.

    A *batch* is one view of the venue's ledger: one REST page or one watch result. Ids decide
    where they exist; see the module docstring for the three rules.

    Params:
        window_ms: how far back (behind the newest trade seen) string ids and id-less
            contents are remembered; a trade older than that is taken as already delivered
            and dropped (counted in :attr:`stale`). Default one minute.

    Attributes:
        last_seq: the highest decimal id delivered (None before the first), where to resume a
            REST walk by id (``fromId = last_seq + 1``).
        gaps: ``(first_missing, last_missing)`` decimal id ranges skipped between delivered
            trades, oldest first (a lost trade, or a venue whose ids are not consecutive).
        duplicates: trades refused as already delivered; stale: trades refused as too old.
    """

    def __init__(self, window_ms: int = 60_000, last_seq: int | None = None) -> None:
        if isinstance(window_ms, bool) or not isinstance(window_ms, int) or window_ms < 0:
            raise ConfigurationError(
                f"window_ms {window_ms!r} is invalid; expected an integer of ms >= 0"
            )
        self.window_ms = window_ms
        self.last_seq = last_seq
        self.newest_ms: int | None = None
        self.gaps: list[tuple[int, int]] = []
        self.duplicates = 0
        self.stale = 0
        self._ids: dict[str, int] = {}  # string id -> timestamp
        self._counts: dict[tuple, int] = {}  # content -> occurrences delivered

    def admit(self, batch: Iterable[Trade]) -> list[Trade]:
        """The trades of ``batch`` not delivered before, in exchange order."""
        trades = sorted(batch, key=_order)
        out: list[Trade] = []
        in_batch: dict[tuple, int] = {}
        floor = None if self.newest_ms is None else self.newest_ms - self.window_ms
        for t in trades:
            seq = t.seq
            if seq is not None:
                if self.last_seq is not None and seq <= self.last_seq:
                    self.duplicates += 1
                    continue
                if self.last_seq is not None and seq > self.last_seq + 1:
                    self.gaps.append((self.last_seq + 1, seq - 1))
                self.last_seq = seq
            elif floor is not None and t.timestamp_ms < floor:
                self.stale += 1
                continue
            elif t.id is not None:
                if t.id in self._ids:
                    self.duplicates += 1
                    continue
                self._ids[t.id] = t.timestamp_ms
            else:
                key = t.content
                n = in_batch[key] = in_batch.get(key, 0) + 1
                if n <= self._counts.get(key, 0):
                    self.duplicates += 1
                    continue
                self._counts[key] = n
            out.append(t)
            if self.newest_ms is None or t.timestamp_ms > self.newest_ms:
                self.newest_ms = t.timestamp_ms
        self._prune()
        return out

    def fill(self, batch: Iterable[Trade]) -> list[Trade]:
        """The trades of ``batch`` whose decimal ids lie in a recorded gap (lost trades fetched
        later, e.g. over REST by id), in id order; each is let through once and its gap shrinks.

        They come after later trades: a consumer that needs exchange order holds the trades
        past a gap until it is filled (an open bar from trades takes them in any order).
        """
        out: list[Trade] = []
        for t in sorted(batch, key=_order):
            seq = t.seq
            if seq is None:
                continue
            for n, (a, b) in enumerate(self.gaps):
                if a <= seq <= b:
                    self.gaps[n : n + 1] = [g for g in ((a, seq - 1), (seq + 1, b)) if g[0] <= g[1]]
                    out.append(t)
                    break
        return out

    def _prune(self) -> None:
        if self.newest_ms is None:
            return
        floor = self.newest_ms - self.window_ms
        if self._ids:
            self._ids = {i: ts for i, ts in self._ids.items() if ts >= floor}
        if self._counts:
            self._counts = {k: n for k, n in self._counts.items() if k[0] >= floor}


def interval_open(tf: Timeframe, t_ms: int) -> int:
    """Open time of the ``tf`` interval containing instant ``t_ms``, on the venues' grid:
    epoch aligned, weeks on Mondays, months and years on the first of the month (UTC)."""
    if tf.is_calendar:
        dt = datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc)
        months = tf.amount * (12 if tf.unit == "y" else 1)
        index = (dt.year - 1970) * 12 + dt.month - 1
        index -= index % months
        start = datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)
        return calendar.timegm(start.timetuple()) * 1000
    offset = _WEEK_OFFSET_MS % tf.ms if tf.unit == "w" else 0
    return offset + (t_ms - offset) // tf.ms * tf.ms


class _Bucket:
    __slots__ = ("open", "high", "low", "close", "volume", "last_key")

    def __init__(self, t: Trade) -> None:
        self.open = self.high = self.low = self.close = t.price
        # Summed as decimals: repr() of a float parsed from a venue's decimal string gives that
        # string back, so the sum is exact and float() of it is the venue's own volume.
        self.volume = Decimal(repr(t.amount))
        self.last_key = _order(t)

    def add(self, t: Trade) -> None:
        if t.price > self.high:
            self.high = t.price
        if t.price < self.low:
            self.low = t.price
        key = _order(t)
        if key >= self.last_key:  # the close is the last trade in exchange order
            self.close = t.price
            self.last_key = key
        self.volume += Decimal(repr(t.amount))


class TradeBars:
    """Builds closed bars from trades, closed by the exchange clock plus a grace.

    Feed admitted trades with :meth:`add` (any order within an open interval) and the exchange
    clock with :meth:`advance`, which returns the bars whose ``close + grace_ms`` has passed,
    oldest first. A trade for an interval already delivered cannot change it: it is refused
    and counted in :attr:`late` (raise the grace if that happens).

    Params:
        tf: the bar size (any :class:`~backtrader_ccxt.timeframes.Timeframe`, ``'10s'``
            included, calendar months too).
        grace_ms: how long after an interval's close its late trades are still waited for.
        empty: ``"skip"`` (default): an interval without trades gives no bar, like Binance's
            REST; ``"flat"``: a flat bar at the last traded price, volume 0 (only after the
            first trade, and for the intervals between delivered bars).
    """

    def __init__(self, tf: Timeframe, grace_ms: int = 0, empty: str = "skip") -> None:
        if isinstance(grace_ms, bool) or not isinstance(grace_ms, int) or grace_ms < 0:
            raise ConfigurationError(
                f"grace_ms {grace_ms!r} is invalid; expected an integer of ms >= 0"
            )
        if empty not in EMPTY_RULES:
            raise ConfigurationError(
                f"empty {empty!r} is invalid; valid choices: {', '.join(EMPTY_RULES)}"
            )
        self.tf = tf
        self.grace_ms = grace_ms
        self.empty = empty
        self.late = 0
        self.last_open_ms: int | None = None  # open of the last delivered bar
        self._last_price: float | None = None
        self._buckets: dict[int, _Bucket] = {}

    def add(self, trade: Trade) -> bool:
        """Take one trade into its interval; False (and ``late`` += 1) if that bar is gone."""
        start = interval_open(self.tf, trade.timestamp_ms)
        if self.last_open_ms is not None and start <= self.last_open_ms:
            self.late += 1
            return False
        bucket = self._buckets.get(start)
        if bucket is None:
            self._buckets[start] = _Bucket(trade)
        else:
            bucket.add(trade)
        return True

    def advance(self, now_ms: int) -> list[Bar]:
        """The bars closed by ``now_ms`` (exchange clock) plus the grace, oldest first."""
        out: list[Bar] = []
        for start in sorted(self._buckets):
            close = self.tf.close_of(start)
            if close + self.grace_ms > now_ms:
                break
            if self.empty == "flat":
                out.extend(self._flats(start))
            b = self._buckets.pop(start)
            out.append(Bar(start, close, b.open, b.high, b.low, b.close, float(b.volume)))
            self.last_open_ms = start
            self._last_price = b.close
        if self.empty == "flat":
            out.extend(self._flats(None, now_ms))
        return out

    def _flats(self, before: int | None, now_ms: int | None = None) -> list[Bar]:
        """Flat bars for the empty intervals after the last delivered bar, up to ``before``
        (an interval with trades) or up to what ``now_ms`` has closed."""
        if self.last_open_ms is None or self._last_price is None:
            return []
        out = []
        p = self._last_price
        start = self.tf.close_of(self.last_open_ms)
        while start != before:
            close = self.tf.close_of(start)
            if before is None and (close + self.grace_ms > now_ms or start in self._buckets):
                break
            out.append(Bar(start, close, p, p, p, p, 0.0))
            self.last_open_ms = start
            start = close
        return out

    def pending(self) -> int:
        """Intervals holding trades but not yet closed (for memory checks)."""
        return len(self._buckets)
