"""The replayed price series: real 1m candles re-stamped onto any timeframe grid.

Pure computation, no networking. Every value is a function of ``(symbol, timeframe, open_ms)``
and the exchange configuration, so REST history, the WebSocket stream and the ground truth
returned by :meth:`LocalExchange.candles` always agree.

The rules:

* Candle ``k`` of a timeframe is the one opening at ``offset + k * length`` (epoch aligned;
  weekly candles open on Mondays like Binance's). It shows source row ``(k + shift) % N`` of the
  symbol's bundled 1m file (``N`` = 2880 rows), whatever the timeframe: 1s bars replay the real
  1m price path, one source candle per bar.
* The two real markets (``BTC/USDT``, ``ETH/USDT``) use shift 0 and their source values
  unchanged. Any other symbol is *derived* from one of them with a deterministic per-symbol price
  scale and row shift, so its series differs.
* At the wrap-around (row ``N - 1`` to row ``0``) prices jump back to the start of the source
  file (about 6% for BTC, 4% for ETH); nothing is rescaled, so every price stays one of the
  source's decimal values.
* Prices and volumes are kept as integers of 1e-8 and formatted as Binance's 8-decimal strings;
  the floats handed out are ``float(string)``, so parsing what REST returns gives exactly them.
"""

from __future__ import annotations

import bisect
import csv
import io
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

__all__ = [
    "BINANCE_INTERVALS",
    "REAL_SYMBOLS",
    "Candle",
    "Replay",
    "SymbolSeries",
    "Timeframe",
    "parse_timeframe",
]

_UNITS = 10**8  # values are held as integers of 1e-8
_STEP_UNITS = 1000  # volume step (LOT_SIZE stepSize 0.00001)
_DAY_MS = 86_400_000
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": _DAY_MS, "w": 7 * _DAY_MS}

#: Binance SPOT kline intervals with a fixed length (``1M`` is calendar based, not served).
BINANCE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
)

#: Symbols backed directly by a bundled file.
REAL_SYMBOLS = {"BTC/USDT": "BTCUSDT-1m.csv", "ETH/USDT": "ETHUSDT-1m.csv"}

_TF_RE = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")


@dataclass(frozen=True)
class Timeframe:
    """A fixed-length candle interval and its alignment on the epoch grid."""

    name: str
    ms: int
    offset: int = 0  # candle opens are ``offset + k * ms``

    def index(self, t_ms: int) -> int:
        """Index ``k`` of the candle containing instant ``t_ms``."""
        return (t_ms - self.offset) // self.ms

    def open_of(self, k: int) -> int:
        return self.offset + k * self.ms

    def floor(self, t_ms: int) -> int:
        """Open time of the candle containing ``t_ms``."""
        return self.open_of(self.index(t_ms))

    def ceil_index(self, t_ms: int) -> int:
        """Index of the first candle opening at or after ``t_ms``."""
        return -((self.offset - t_ms) // self.ms)


def parse_timeframe(name: str) -> Timeframe:
    """Parse a Binance-style interval such as ``1s``, ``5m``, ``1h``, ``1w``.

    Raises ``ValueError`` for calendar intervals (``1M``) and anything malformed.
    """
    m = _TF_RE.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(
            f"unsupported timeframe {name!r}: use a fixed-length interval like "
            f"{', '.join(BINANCE_INTERVALS)} (or e.g. '5s')"
        )
    count, unit = int(m.group(1)), m.group(2)
    ms = count * _UNIT_MS[unit]
    # Binance's weekly candles open on Monday 00:00 UTC; the epoch was a Thursday.
    offset = (4 * _DAY_MS) % ms if unit == "w" else 0
    return Timeframe(name, ms, offset)


def check_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise ValueError(f"invalid symbol {symbol!r}: expected 'BASE/QUOTE' like 'BTC/USDT'")
    return symbol


def fmt_units(units: int) -> str:
    """Integer of 1e-8 -> Binance's 8-decimal string."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // _UNITS}.{units % _UNITS:08d}"


def short_decimal(text: str) -> str:
    """An 8-decimal string in the shortest form OKX and Bybit use: ``"26800.10000000"`` ->
    ``"26800.1"``, ``"0.00000000"`` -> ``"0"``. ``float()`` of both is the same number."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _to_units(text: str) -> int:
    return int(Decimal(text).scaleb(8))


@dataclass(frozen=True)
class Candle:
    """One candle as the exchange serves it.

    The string fields are what goes on the wire; ``ohlcv`` is the ground truth
    ``[open_ms, o, h, l, c, v]`` with floats parsed from those strings.
    """

    open_ms: int
    close_ms: int  # Binance's closeTime: open + length - 1
    o: str
    h: str
    l: str  # noqa: E741 - Binance's field name
    c: str
    v: str
    q: str  # quote asset volume
    n: int  # number of trades
    taker_base: str
    taker_quote: str
    first_trade: int
    last_trade: int

    @property
    def ohlcv(self) -> list:
        return [
            self.open_ms,
            float(self.o),
            float(self.h),
            float(self.l),
            float(self.c),
            float(self.v),
        ]


class _SourceTable:
    """Rows of one bundled file as integers of 1e-8."""

    def __init__(self, rows: list[tuple[int, int, int, int, int]]):
        self.rows = rows

    @classmethod
    def load(cls, filename: str) -> _SourceTable:
        text = resources.files(__package__).joinpath("data", filename).read_text("utf-8")
        reader = csv.reader(io.StringIO(text))
        header = next(reader)
        if header != ["timestamp_ms", "open", "high", "low", "close", "volume"]:
            raise ValueError(f"unexpected header in {filename}: {header}")
        rows = [tuple(_to_units(x) for x in rec[1:6]) for rec in reader if rec]
        return cls(rows)


_source_cache: dict[str, _SourceTable] = {}
_source_lock = threading.Lock()


def _source(symbol: str) -> _SourceTable:
    with _source_lock:
        table = _source_cache.get(symbol)
        if table is None:
            table = _source_cache[symbol] = _SourceTable.load(REAL_SYMBOLS[symbol])
        return table


class SymbolSeries:
    """The per-symbol price path: source rows, price scale and row shift."""

    def __init__(self, symbol: str):
        self.symbol = check_symbol(symbol)
        if symbol in REAL_SYMBOLS:
            self.base_symbol = symbol
            self.scale_milli = 1000  # price scale in thousandths
            self.shift = 0
        else:
            crc = zlib.crc32(symbol.encode())
            self.base_symbol = ("BTC/USDT", "ETH/USDT")[crc & 1]
            self.scale_milli = 500 + (crc >> 1) % 9000  # 0.5 .. 9.499
            self.shift = 1 + (crc >> 14) % 2879
        # Source prices have at most 4 decimals, so a scale in thousandths keeps 7 or fewer.
        self.tick_units = 1_000_000 if self.scale_milli == 1000 else 1000
        self.tick_size = fmt_units(self.tick_units)
        self._rows: list[tuple[int, int, int, int, int]] | None = None
        self._lock = threading.Lock()

    @property
    def rows(self) -> list[tuple[int, int, int, int, int]]:
        rows = self._rows
        if rows is None:
            with self._lock:
                if self._rows is None:
                    src = _source(self.base_symbol).rows
                    s = self.scale_milli
                    self._rows = [
                        (o * s // 1000, h * s // 1000, lo * s // 1000, c * s // 1000, v)
                        for o, h, lo, c, v in src
                    ]
                rows = self._rows
        return rows

    def row(self, k: int) -> tuple[int, int, int, int, int]:
        rows = self.rows
        return rows[(k + self.shift) % len(rows)]


def _trades(volume_units: int) -> int:
    if volume_units <= 0:
        return 0
    return 1 + volume_units * 3 // _UNITS


def _make_candle(
    tf: Timeframe, k: int, o: int, h: int, lo: int, c: int, v: int, n: int | None = None
) -> Candle:
    """Candle ``k`` in Binance's shape from integer units; ``n`` trades (default: from ``v``)."""
    open_ms = tf.open_of(k)
    if n is None:
        n = _trades(v)
    q = v * (o + h + lo + c) // (4 * _UNITS)
    first = k * 100_000 if n else -1
    return Candle(
        open_ms=open_ms,
        close_ms=open_ms + tf.ms - 1,
        o=fmt_units(o),
        h=fmt_units(h),
        l=fmt_units(lo),
        c=fmt_units(c),
        v=fmt_units(v),
        q=fmt_units(q),
        n=n,
        taker_base=fmt_units(v // 2),
        taker_quote=fmt_units(q // 2),
        first_trade=first,
        last_trade=first + n - 1 if n else -1,
    )


def _path_point(o: float, h: float, lo: float, c: float, g: float) -> tuple[float, float, float]:
    """Price, running high and running low at progress ``g`` (0..1) through a candle.

    The path goes open -> first extreme (1/3) -> second extreme (2/3) -> close, visiting the
    low first on an up candle and the high first on a down candle, so it touches the real high
    and low and ends at the real close.
    """
    e1, e2 = (lo, h) if c >= o else (h, lo)
    pts = ((0.0, o), (1 / 3, e1), (2 / 3, e2), (1.0, c))
    price = c
    seen = [o]
    for (t0, p0), (t1, p1) in zip(pts[:-1], pts[1:], strict=True):
        if g <= t1:
            price = p0 + (p1 - p0) * ((g - t0) / (t1 - t0))
            break
        seen.append(p1)
    seen.append(price)
    return price, max(seen), min(seen)


class Replay:
    """All served series of one exchange: candles, forming snapshots and history bounds.

    Params:
        symbols: served symbols ("BASE/QUOTE").
        start_ms: the start instant; ``history`` closed candles exist before it.
        history: closed candles available before ``start_ms`` for every timeframe.
        updates_per_candle: partial updates per candle (before the final one).
        empty_every: if > 0, every candle whose row index is a multiple of it has no trades.
        settled_last_update: optional rule ``k -> bool``: when true, candle ``k``'s last
            partial update already shows its final values (the last trade came early), as
            Bybit's final often repeats its last partial. Default: never.
    """

    def __init__(
        self,
        symbols,
        start_ms: int,
        history: int,
        updates_per_candle: int,
        empty_every: int = 0,
        settled_last_update: Callable[[int], bool] | None = None,
    ):
        self.series = {s: SymbolSeries(s) for s in symbols}
        self.start_ms = start_ms
        self.history = history
        self.updates = updates_per_candle
        self.empty_every = empty_every
        self.settled_last_update = settled_last_update
        self._empties: dict[tuple[str, str], set[int]] = {}
        self._tf_cache: dict[str, Timeframe] = {}

    # -- timeframes -------------------------------------------------------------------------

    def timeframe(self, name: str) -> Timeframe:
        tf = self._tf_cache.get(name)
        if tf is None:
            tf = self._tf_cache[name] = parse_timeframe(name)
        return tf

    def first_open(self, tf: Timeframe) -> int:
        """Open time of the oldest candle that exists."""
        return tf.floor(self.start_ms) - self.history * tf.ms

    def update_offsets(self, tf: Timeframe) -> list[int]:
        """Offsets (ms from open) of the partial updates: spread over the first 90%."""
        u = self.updates
        return [(j * 9 * tf.ms) // (10 * u) for j in range(u)]

    def update_index(self, tf: Timeframe, open_ms: int, now_ms: int) -> int:
        """Index of the latest partial update due at ``now_ms`` for the candle opened at open_ms."""
        elapsed = now_ms - open_ms
        offsets = self.update_offsets(tf)
        return max(0, bisect.bisect_right(offsets, elapsed) - 1)

    # -- empty candles ----------------------------------------------------------------------

    def make_empty(self, symbol: str, tf: Timeframe, open_ms: int) -> None:
        self._empties.setdefault((symbol, tf.name), set()).add(tf.index(open_ms))

    def is_empty(self, symbol: str, tf: Timeframe, k: int) -> bool:
        every = self.empty_every
        if every and (k + self.series[symbol].shift) % every == 0:
            return True
        marked = self._empties.get((symbol, tf.name))
        return bool(marked) and k in marked

    # -- candles ----------------------------------------------------------------------------

    def units(self, symbol: str, tf: Timeframe, k: int) -> tuple[int, int, int, int, int]:
        """Final ``(o, h, l, c, v)`` of candle ``k`` in integers of 1e-8 (no bounds check)."""
        series = self.series[symbol]
        if self.is_empty(symbol, tf, k):
            # No trades: flat at the last traded price, like an exchange's empty candle.
            j = k - 1
            for _ in range(10_000):
                if not self.is_empty(symbol, tf, j):
                    break
                j -= 1
            last = series.row(j)[3]
            return last, last, last, last, 0
        return series.row(k)

    def candle(self, symbol: str, tf: Timeframe, k: int) -> Candle:
        """Final values of candle ``k`` (no bounds check)."""
        return _make_candle(tf, k, *self.units(symbol, tf, k))

    def partial(self, symbol: str, tf: Timeframe, k: int, j: int) -> Candle:
        """The candle as shown by partial update ``j`` (0-based) while it is forming.

        Prices are snapped to the symbol's tick size and volumes to its step size, like real
        trades would be.
        """
        tick = self.series[symbol].tick_units
        o, h, lo, c, v = self.units(symbol, tf, k)
        settled = self.settled_last_update
        if settled is not None and j == self.updates - 1 and settled(k):
            return _make_candle(tf, k, o, h, lo, c, v)
        g = (j + 1) / (self.updates + 1)
        price, high, low = (
            round(x / tick) * tick for x in _path_point(float(o), float(h), float(lo), float(c), g)
        )
        vol = int(v * g) // _STEP_UNITS * _STEP_UNITS
        n = (_trades(v) * (j + 1)) // (self.updates + 1)
        if v and not n:
            n = 1
        return _make_candle(tf, k, o, high, low, price, vol, n)

    def forming(self, symbol: str, tf: Timeframe, now_ms: int) -> Candle:
        """The forming candle as of ``now_ms``: the state shown by the latest partial update."""
        k = tf.index(now_ms)
        open_ms = tf.open_of(k)
        return self.partial(symbol, tf, k, self.update_index(tf, open_ms, now_ms))

    # -- ranges -----------------------------------------------------------------------------

    def klines(
        self,
        symbol: str,
        tf: Timeframe,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        now_ms: int,
        omit_empty: bool = False,
    ) -> tuple[list[Candle], int]:
        """Rows of ``GET /api/v3/klines`` and how many empty candles were omitted.

        Binance semantics: open times in ``[start, end]``, at most ``limit`` rows, ascending;
        the forming candle last with its values as of ``now``; nothing in the future; without
        ``start`` the newest ``limit`` rows.
        """
        return self.rows(
            symbol, tf, start_ms, end_ms, limit, now_ms, omit_empty, newest=start_ms is None
        )

    def rows(
        self,
        symbol: str,
        tf: Timeframe,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        now_ms: int,
        omit_empty: bool = False,
        *,
        newest: bool,
        closed_only: bool = False,
    ) -> tuple[list[Candle], int]:
        """Candles with open time in ``[start, end]`` (either bound optional), ascending, and
        how many empty ones were omitted. At most ``limit``: the newest ones if ``newest``,
        else the oldest. Never in the future nor before the history; the forming candle (as
        of ``now``) only without ``closed_only``. Every venue's paging is built on this."""
        first_k = tf.index(self.first_open(tf))
        now_k = tf.index(now_ms)
        top = now_k - 1 if closed_only else now_k
        hi = top if end_ms is None else min(top, tf.index(end_ms))
        lo = first_k if start_ms is None else max(first_k, tf.ceil_index(start_ms))
        ks = range(hi, lo - 1, -1) if newest else range(lo, hi + 1)
        out: list[Candle] = []
        omitted = 0
        for k in ks:
            if len(out) >= limit:
                break
            if omit_empty and self.is_empty(symbol, tf, k):
                omitted += 1
                continue
            out.append(
                self.forming(symbol, tf, now_ms) if k == now_k else self.candle(symbol, tf, k)
            )
        if newest:
            out.reverse()
        return out, omitted

    def closed_ohlcv(
        self,
        symbol: str,
        tf: Timeframe,
        since_ms: int | None,
        until_ms: int | None,
        now_ms: int,
        omit_empty: bool = False,
    ) -> list[list]:
        """Closed candles with open time in ``[since, until)`` as ``[open_ms, o, h, l, c, v]``.

        ``units / 1e8`` is the correctly rounded float of the decimal, the same number
        ``float()`` gives for the 8-decimal string served on the wire.
        """
        lo = tf.index(self.first_open(tf))
        if since_ms is not None:
            lo = max(lo, tf.ceil_index(since_ms))
        hi = tf.index(now_ms) - 1
        if until_ms is not None:
            hi = min(hi, tf.ceil_index(until_ms) - 1)
        out = []
        scale = float(_UNITS)
        for k in range(lo, hi + 1):
            if omit_empty and self.is_empty(symbol, tf, k):
                continue
            o, h, lo_, c, v = self.units(symbol, tf, k)
            out.append([tf.open_of(k), o / scale, h / scale, lo_ / scale, c / scale, v / scale])
        return out
