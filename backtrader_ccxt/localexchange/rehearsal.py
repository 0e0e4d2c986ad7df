"""Rehearsal: the local exchange replaying the user's own candles at N times real speed.

A :class:`RehearsalExchange` serves candles the user already has (rows from a
:class:`~backtrader_ccxt.cache.HistoryCache`, a DataFrame of :mod:`backtrader_ccxt.frames`'
layout, or a CSV / Parquet file written by ``frames.export_frame``) at their **original**
timestamps, over the same REST and WebSocket as :class:`~.exchange.LocalExchange`: partial
updates, flagged finals, the venue's timing, the fault controls and the counters all work.
Its clock starts ``warmup`` candles after the first one (so a feed has history to backfill)
and runs ``speed`` times real time, so a live strategy runs unchanged over last week in
minutes; :meth:`RehearsalExchange.store_kwargs` gives the store the same clock.

The pure part (:func:`clean_rows`, :class:`HistoryReplay`) turns rows into the exchange's
integer units and answers "which candle opens at this instant" from them; the rest is the
exchange's own machinery. Holes in the history (candles a venue omitted) are served as
omitted candles (``faults.omit_empty`` starts True), so the live feed sees exactly the bars
a backtest of the same rows sees. After the last candle nothing more closes: the feed ends
at ``todate`` (:attr:`RehearsalExchange.todate`).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ..errors import ConfigurationError
from .data import Replay, Timeframe, check_symbol, fmt_units, parse_timeframe
from .exchange import LocalExchange

__all__ = ["CLOCK_STARTS", "HistoryReplay", "RehearsalExchange", "clean_rows"]

#: when the rehearsal clock starts running
CLOCK_STARTS = ("request", "start")
#: REST paths (substrings) of candle requests, every protocol: Binance klines / uiKlines,
#: OKX market/candles and history-candles, Bybit market/kline
_CANDLE_PATHS = (
    "/api/v3/klines",
    "/api/v3/uiKlines",
    "/market/candles",
    "/market/history-candles",
    "/v5/market/kline",
)

_UNITS_EXP = 8  # values are held as integers of 1e-8, like the bundled data
_EPOCH = datetime(1970, 1, 1)

Units = tuple[int, int, int, int, int]


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(sep=" ")


def _units(x: Any, what: str) -> tuple[int, bool]:
    """A value as integer 1e-8 units and whether it had to be rounded to get there."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} is {x!r}: expected a number") from None
    if not math.isfinite(f) or f < 0:
        raise ConfigurationError(f"{what} is {x!r}: expected a finite number >= 0")
    exact = Decimal(repr(f)).scaleb(_UNITS_EXP)
    units = int(exact.to_integral_value(ROUND_HALF_EVEN))
    return units, units != exact


def clean_rows(rows: Iterable[Sequence], timeframe: Timeframe, symbol: str) -> dict[int, Units]:
    """Validated rows ``[open_ms, o, h, l, c, v]`` as ``{open_ms: (o, h, l, c, v)}`` in
    integer units of 1e-8, ascending.

    Raises :class:`ConfigurationError` naming the row and value for: no rows, a row that is
    not six values, unsorted or duplicate open times, an open time off the timeframe's grid,
    rows closer or farther apart than ``timeframe`` everywhere (the wrong timeframe), NaN,
    infinite or negative values, a high below or a low above the other prices. Values with
    more than 8 decimals are rounded to 8 (the wire's precision).
    """
    out: dict[int, Units] = {}
    prev: int | None = None
    min_step: int | None = None
    tf = timeframe
    for i, row in enumerate(rows):
        if isinstance(row, str | bytes) or len(row) < 6:
            raise ConfigurationError(
                f"{symbol}: row {i} is {row!r}: expected [open_ms, open, high, low, close, volume]"
            )
        try:
            t = int(row[0])
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{symbol}: row {i} opens at {row[0]!r}: expected epoch milliseconds"
            ) from None
        if t != row[0] and float(row[0]) != t:
            raise ConfigurationError(f"{symbol}: row {i} opens at {row[0]!r}: not whole ms")
        if tf.floor(t) != t:
            raise ConfigurationError(
                f"{symbol}: row {i} opens at {t} ({_iso(t)}), not on the {tf.name} grid "
                f"(opens are multiples of {tf.ms} ms): wrong timeframe {tf.name!r}, or "
                "close-stamped times given as opens?"
            )
        if prev is not None:
            if t == prev:
                raise ConfigurationError(
                    f"{symbol}: rows {i - 1} and {i} both open at {t} ({_iso(t)}): duplicate"
                )
            if t < prev:
                raise ConfigurationError(
                    f"{symbol}: row {i} opens at {t} ({_iso(t)}), before row {i - 1} "
                    f"({_iso(prev)}): rows must be sorted by time, oldest first"
                )
            step = t - prev
            min_step = step if min_step is None else min(min_step, step)
        prev = t
        vals = []
        for name, x in zip(("open", "high", "low", "close", "volume"), row[1:6], strict=True):
            units, _ = _units(x, f"{symbol}: row {i} ({_iso(t)}) {name}")
            vals.append(units)
        o, h, lo, c, _v = vals
        if h < max(o, lo, c) or lo > min(o, h, c):
            raise ConfigurationError(
                f"{symbol}: row {i} ({_iso(t)}) has high {row[2]!r} / low {row[3]!r} that do "
                f"not bound open {row[1]!r} and close {row[4]!r}"
            )
        out[t] = tuple(vals)  # type: ignore[assignment]
    if not out:
        raise ConfigurationError(f"{symbol}: the history has no rows")
    if min_step is not None and min_step != tf.ms:
        raise ConfigurationError(
            f"{symbol}: consecutive rows are at least {min_step} ms apart, but timeframe "
            f"{tf.name!r} is {tf.ms} ms: pass the rows' own timeframe"
        )
    return out


def _tick_units(tables: Iterable[dict[int, Units]]) -> int:
    """The coarsest power-of-ten tick (at most 0.01) that every price is a multiple of."""
    tick = 1_000_000
    for table in tables:
        for o, h, lo, c, _v in table.values():
            while tick > 1 and (o % tick or h % tick or lo % tick or c % tick):
                tick //= 10
            if tick == 1:
                return 1
    return tick


class _HistorySeries:
    """What the venue formats read of a served symbol (tick size; ``shift`` for
    ``empty_every``); mirrors :class:`~.data.SymbolSeries`."""

    def __init__(self, symbol: str, tick_units: int) -> None:
        self.symbol = symbol
        self.shift = 0
        self.tick_units = tick_units
        self.tick_size = fmt_units(tick_units)
        self.rows: list = []  # nothing to preload


class HistoryReplay(Replay):
    """A :class:`~.data.Replay` whose candles are the user's rows at their own times.

    Candles of the history's timeframe are its rows; a longer timeframe on the same grid
    (``5m`` from ``1m`` rows) is aggregated from them; a candle without rows (a hole, before
    the first or after the last row, a timeframe the rows cannot make) is *empty*, so it is
    omitted while ``faults.omit_empty`` is on, and served flat at the previous close with no
    volume when it is off.

    Params:
        tables: ``{symbol: {open_ms: (o, h, l, c, v)}}`` in 1e-8 units (:func:`clean_rows`).
        timeframe: the rows' timeframe.
        start_ms, updates_per_candle, empty_every, settled_last_update: as for ``Replay``
            (``history`` is not used: the first row is the oldest candle).
    """

    def __init__(
        self,
        tables: Mapping[str, dict[int, Units]],
        timeframe: Timeframe,
        start_ms: int,
        updates_per_candle: int,
        empty_every: int = 0,
        settled_last_update: Callable[[int], bool] | None = None,
    ) -> None:
        super().__init__((), start_ms, 0, updates_per_candle, empty_every, settled_last_update)
        self.base = timeframe
        self.tables = dict(tables)
        tick = _tick_units(self.tables.values())
        self.series = {s: _HistorySeries(s, tick) for s in self.tables}  # type: ignore[misc]
        self._opens = {s: list(t) for s, t in self.tables.items()}
        self.first_ms = min(opens[0] for opens in self._opens.values())
        self.last_ms = max(opens[-1] for opens in self._opens.values())

    def first_open(self, tf: Timeframe) -> int:
        return tf.floor(self.first_ms)

    def _final(self, symbol: str, tf: Timeframe, k: int) -> Units | None:
        open_ms = tf.open_of(k)
        table = self.tables[symbol]
        if tf.ms == self.base.ms and tf.offset == self.base.offset:
            return table.get(open_ms)
        base = self.base
        if tf.ms % base.ms or base.floor(open_ms) != open_ms:
            return None
        parts = [table[t] for t in range(open_ms, open_ms + tf.ms, base.ms) if t in table]
        if not parts:
            return None
        return (
            parts[0][0],
            max(p[1] for p in parts),
            min(p[2] for p in parts),
            parts[-1][3],
            sum(p[4] for p in parts),
        )

    def is_empty(self, symbol: str, tf: Timeframe, k: int) -> bool:
        return self._final(symbol, tf, k) is None or super().is_empty(symbol, tf, k)

    def units(self, symbol: str, tf: Timeframe, k: int) -> Units:
        if not super().is_empty(symbol, tf, k):
            final = self._final(symbol, tf, k)
            if final is not None:
                return final
        # no trades: flat at the last close before it (the first open if there is none)
        opens = self._opens[symbol]
        i = bisect.bisect_left(opens, tf.open_of(k)) - 1
        table = self.tables[symbol]
        last = table[opens[i]][3] if i >= 0 else table[opens[0]][0]
        return last, last, last, last, 0


def _rows_of(source: Any, timeframe: str) -> list:
    """Rows from a list of rows, a DataFrame (``frames`` layout) or a CSV / Parquet path."""
    if isinstance(source, str | os.PathLike):
        from ..frames import frame_to_rows, read_frame

        return frame_to_rows(read_frame(source), timeframe)
    if hasattr(source, "columns") and hasattr(source, "index"):
        from ..frames import frame_to_rows

        return frame_to_rows(source, timeframe)
    if isinstance(source, Iterable):
        return list(source)
    raise ConfigurationError(
        f"history must be rows [open_ms, o, h, l, c, v], a DataFrame or a CSV/Parquet path, "
        f"got {type(source).__name__}"
    )


class RehearsalExchange(LocalExchange):
    """A :class:`~.exchange.LocalExchange` that serves the user's own candles at their own
    timestamps, on a clock running ``speed`` times real time. See ``docs/rehearsal.md``.

    >>> ex = RehearsalExchange({"BTC/USDT": frame}, "1m", speed=600)  # doctest: +SKIP
    >>> with ex:  # doctest: +SKIP
    ...     store = CCXTStore(**ex.store_kwargs())  # the venue, its URLs, this clock
    ...     data = store.getdata(dataname="BTC/USDT", timeframe="1m", **ex.feed_kwargs())

    Params:
        history: ``{symbol: source}``; a source is rows ``[open_ms, o, h, l, c, v]``
            (``HistoryCache.read``, ``ex.candles``, ccxt's ``fetch_ohlcv``), a DataFrame of
            :mod:`backtrader_ccxt.frames`' layout (``HistoryCache.read_frame``,
            ``frames.history_frame``; close or open stamped), or the path of a CSV / Parquet
            file written by ``frames.export_frame``. Every symbol has the same timeframe.
        timeframe: the rows' timeframe (``"1m"``); served as is, and longer timeframes on its
            grid (``"5m"``, ``"1h"``) are aggregated from it.
        speed: exchange seconds per real second (default 60: an hour of history per minute).
        warmup: candles already closed when the clock starts (default 100): the history a
            feed backfills before going live. Fewer than the candles the history spans.
        clock_start: ``"request"`` (default): the clock stands at the warmup's end until a
            client first asks for candles (a REST candle request or a WebSocket
            subscription), so however long the store takes to start, the feed's backfill
            finds exactly ``warmup`` closed candles; ``"start"``: it runs from ``start()``.
            :meth:`start_clock` starts it at any time.
        protocol, updates_per_candle, host, port and the other keywords: as for
            ``LocalExchange`` (``symbols``, ``timeframes``, ``history`` and ``clock`` are set
            by the rehearsal; ``poll_interval`` defaults to a fiftieth of a bar's real
            duration, between 1 and 50 ms, so finals leave on time at high speed).
    """

    def __init__(
        self,
        history: Mapping[str, Any],
        timeframe: str,
        *,
        speed: float = 60.0,
        warmup: int = 100,
        clock_start: str = "request",
        **kwargs: Any,
    ) -> None:
        taken = sorted(set(kwargs) & {"symbols", "timeframes", "history", "clock"})
        if taken:
            raise ConfigurationError(
                f"RehearsalExchange sets {', '.join(taken)} itself: pass the history as "
                "{symbol: rows, frame or path} and the timeframe instead"
            )
        if not isinstance(history, Mapping) or not history:
            raise ConfigurationError(
                "history must be a non-empty dict {symbol: rows, DataFrame or CSV path}, "
                f"got {history!r:.80}"
            )
        try:
            tf = parse_timeframe(timeframe)
        except ValueError as e:
            raise ConfigurationError(str(e)) from None
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0:
            raise ConfigurationError(f"speed must be a number > 0 (e.g. 60), got {speed!r}")
        if clock_start not in CLOCK_STARTS:
            raise ConfigurationError(
                f"clock_start must be one of {', '.join(CLOCK_STARTS)}, got {clock_start!r}"
            )
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigurationError(f"warmup must be an int >= 0, got {warmup!r}")
        tables = {}
        for symbol, source in history.items():
            try:
                check_symbol(symbol)
            except ValueError as e:
                raise ConfigurationError(str(e)) from None
            tables[symbol] = clean_rows(_rows_of(source, tf.name), tf, symbol)
        first = min(next(iter(t)) for t in tables.values())
        last = max(next(reversed(t)) for t in tables.values())
        n = (last - first) // tf.ms + 1
        if warmup >= n:
            raise ConfigurationError(
                f"warmup {warmup} leaves nothing to rehearse: the history spans {n} candles "
                f"of {tf.name}; use warmup < {n}"
            )
        self.speed = float(speed)
        self.warmup = warmup
        self.history_timeframe = tf
        self.first_open_ms_ = first
        self.last_open_ms = last
        #: where the rehearsal clock starts: the open of candle ``warmup``
        self.start_at_ms = first + warmup * tf.ms
        self._tables = tables
        self.clock_start = clock_start
        self._t0: float | None = None
        self._clock_lock = threading.Lock()
        # The emission timer cannot map this clock to real time, so it re-reads it every
        # poll_interval: at most a fiftieth of a bar late, or finals would look late to the
        # feed at high speed (0.05 s is half a 1m bar at 600x).
        bar_real_s = tf.ms / 1000.0 / self.speed
        kwargs.setdefault("poll_interval", min(0.05, max(0.001, bar_real_s / 50)))
        super().__init__(
            symbols=tuple(tables),
            timeframes=(tf.name,),
            history=0,
            clock=self._rehearsal_clock,
            **kwargs,
        )
        self.faults.omit_empty = True  # holes are candles the venue left out

    # -- the clock --------------------------------------------------------------------------

    def _rehearsal_clock(self) -> float:
        t0 = self._t0
        start = self.start_at_ms / 1000.0
        if t0 is None:
            if not (self.running and self._asked_for_candles()):
                return start
            with self._clock_lock:
                if self._t0 is None:
                    self._t0 = time.time()
                t0 = self._t0
        return start + (time.time() - t0) * self.speed

    def _asked_for_candles(self) -> bool:
        if self.clock_start == "start":
            return True
        stats = self.stats
        if stats.ws_streams_subscribed:
            return True
        return any(p in path for path in list(stats.rest_by_path) for p in _CANDLE_PATHS)

    def start_clock(self) -> None:
        """Start the rehearsal clock now, if it has not started yet (see ``clock_start``)."""
        with self._clock_lock:
            if self._t0 is None:
                self._t0 = time.time()

    @property
    def clock_started(self) -> bool:
        """Whether the rehearsal clock runs (it stands at the warmup's end until then)."""
        return self._t0 is not None

    def store_clock(self) -> tuple[Callable[[], float], float]:
        """``(clock, rate)`` for ``CCXTStore(clock=..., clock_rate=...)``: the exchange's clock
        in ms and how many exchange ms pass per real ms, so the store and the exchange agree."""
        return (lambda: self._rehearsal_clock() * 1000.0), self.speed

    def store_kwargs(self) -> dict:
        """Keywords for ``CCXTStore(**ex.store_kwargs())``: the venue id, the ccxt config
        pointing at this exchange, and the rehearsal clock. Call it after ``start()``."""
        clock, rate = self.store_clock()
        return {
            "exchange": self.protocol,
            "config": self.ccxt_config(),
            "clock": clock,
            "clock_rate": rate,
        }

    def feed_kwargs(self, latency: float = 0.05) -> dict:
        """Keywords for ``store.getdata(dataname=..., timeframe=..., **ex.feed_kwargs())``:
        ``fromdate`` / ``todate`` spanning the whole history (the feed backfills the warmup,
        goes live, and ends with the last candle) and a ``poll_grace`` that leaves the
        candle's final ``latency`` REAL seconds to arrive.

        Why the grace: a feed's ``poll_grace`` is exchange time (default: a quarter bar, at
        most 1 s). At ``speed=600`` one second of exchange time is 1.7 ms of real time, less
        than a frame takes through ccxt.pro, so every final would look late: the feed would
        confirm each candle over REST instead of taking the stream's final, and could end at
        ``todate`` before the last final arrived. Scaled (at most half a candle), the
        rehearsal behaves as the live run will at real speed.
        """
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise ConfigurationError(f"latency must be a number of seconds >= 0, got {latency!r}")
        bar_s = self.history_timeframe.ms / 1000.0
        grace = min(max(min(1.0, bar_s / 4), latency * self.speed), bar_s / 2)
        return {"fromdate": self.fromdate, "todate": self.todate, "poll_grace": grace}

    @property
    def fromdate(self) -> datetime:
        """Close time (naive UTC) of the first candle: a feed's ``fromdate`` for all of it."""
        return _EPOCH + timedelta(milliseconds=self.first_open_ms_ + self.history_timeframe.ms)

    @property
    def todate(self) -> datetime:
        """Close time (naive UTC) of the last candle: a feed's ``todate`` that ends it there."""
        return _EPOCH + timedelta(milliseconds=self.last_open_ms + self.history_timeframe.ms)

    @property
    def end_ms(self) -> int:
        """Exchange time at which the last candle closes."""
        return self.last_open_ms + self.history_timeframe.ms

    @property
    def finished(self) -> bool:
        """Whether the rehearsal clock has passed the last candle's close."""
        return self.now_ms() >= self.end_ms

    def real_seconds_left(self) -> float:
        """Real seconds until the last candle closes (0 once it has)."""
        return max(0.0, (self.end_ms - self.now_ms()) / 1000.0 / self.speed)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> RehearsalExchange:
        """Start serving; the clock starts at the open of candle ``warmup``, now."""
        if self.running:
            raise RuntimeError("LocalExchange is already running")
        self._replay = HistoryReplay(
            self._tables,
            self.history_timeframe,
            self.start_at_ms,
            self.updates_per_candle,
            self.empty_every,
            self._protocol_class.settled_last_update,
        )
        self._t0 = None
        super().start()
        if self.clock_start == "start":
            self.start_clock()
        return self

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "not started"
        return (
            f"RehearsalExchange({self.protocol}, {list(self.symbols)}, "
            f"{self.history_timeframe.name}, {_iso(self.first_open_ms_)} .. "
            f"{_iso(self.last_open_ms)}, speed {self.speed:g}, {where})"
        )
