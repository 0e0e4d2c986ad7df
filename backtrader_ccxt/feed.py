"""CCXTFeed: backtrader's side of the boundary. It never touches ccxt objects.

The feed validates its params at ``start()``, picks a source for its mode and turns what the
source hands over (closed :class:`~.bars.Bar` items and :class:`~.bars.Status` events) into
backtrader lines and notifications.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import backtrader as bt
from backtrader.linebuffer import LineBuffer

from .bars import Bar, BarGate, Status, bar_from_row
from .cache import FeedCacheLink, HistoryCache, cache_key
from .errors import CapabilityError, ConfigurationError, ConfigurationWarning, unknown_keywords
from .heap import StartupFreeze, freeze_for
from .live import tradepolling
from .live.manager import Doorbell, doorbell_for
from .live.polling import PollingSource
from .progress import BackfillReport
from .rest import RestTarget
from .retry import Backoff
from .spec import FeedSpec, VenueParams
from .sync import Delivery, Turns, delivery_for, turns_for
from .timeframes import parse as parse_tf
from .timeframes import to_backtrader
from .tz import resolve_tz, to_utc_ms

log = logging.getLogger(__name__)

__all__ = ["CCXTFeed"]

_DEFAULT_PAGE = 500
_EPOCH = datetime(1970, 1, 1)

_STORE_PARAM = "a store parameter: CCXTStore({name}=...).getdata(...)"
#: Feed keywords of the prior plugins that this feed does not take, and what to write instead
#: (the cloudQuant fork's feed built its own store from the store's keywords).
_PRIOR_FEED_PARAMS = {
    **{
        n: _STORE_PARAM.format(name=n)
        for n in ("exchange", "config", "retries", "sandbox", "use_rate_limiter")
    },
    "currency": "the prior plugins' broker currency: store.getbroker(currency=...) here",
    "symbol": "write dataname='BTC/USDT'",
}


_BAR_FIELDS = ("open", "high", "low", "close", "volume")
_last_num = (None, 0.0)  # (close_ms, date2num): a burst's bars share their close


def _date2num_ms(close_ms: int, dt: datetime) -> float:
    """``bt.date2num(dt)``, computed once for the bars of many feeds closing together."""
    global _last_num
    ms, num = _last_num
    if ms != close_ms:
        num = bt.date2num(dt)
        _last_num = (close_ms, num)
    return num


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class CCXTFeed(bt.feed.DataBase):
    """Historical then live OHLCV bars for one symbol from a ccxt exchange.

    Bars are closed candles only, each exactly once, in strictly increasing time, with the
    exchange's final values, stamped at the candle's **close** as naive UTC. Notifications:
    DELAYED while backfilling, LIVE once live, CONNBROKEN while the exchange is unreachable,
    DISCONNECTED at the end.

    Params:
      - ``store`` (CCXTStore): the session to use (``store.getdata(...)`` sets it).
      - ``dataname`` (str): unified ccxt symbol, e.g. ``'BTC/USDT'`` or ``'BTC/USDT:USDT'``
        (the exchange's own id, e.g. ``'BTCUSDT'``, is accepted too).
      - ``timeframe=bt.TimeFrame.Ticks``: a tick feed, every public trade once (open = high
        = low = close = price, volume = amount, stamped at the trade's time + 1 ms, the close of
        its millisecond, so ``resampledata`` gives the venue's candles), backfilled from
        ``fromdate`` or the last ``backfill_bars`` trades, then live by REST polling
        (:mod:`~.live.tradepolling`, every ``poll_grace``, default 1 s), the threaded
        poller, or WebSocket (``watch_trades``: :mod:`~.live.tradestream`).
      - ``name`` (str): the name backtrader shows for the feed.
      - ``timeframe`` / ``compression``: the exchange bar size, as backtrader constants
        (``bt.TimeFrame.Minutes``, 15) or a ccxt string in ``timeframe`` (``'15m'``).
        Read from these params, never from ``resampledata``'s target. Without
        ``timeframe`` the bars are daily (backtrader's default), and a live feed warns
        (:class:`~.errors.ConfigurationWarning`) at ``start()``: pass it explicitly.
      - ``fromdate`` / ``todate`` (naive UTC datetimes): the first and last bar by close time.
      - ``historical`` (bool, default False): backfill ``fromdate..todate`` (or until now)
        then end with DISCONNECTED, no live part.
      - ``backfill_start`` (bool, default True): backfill history before going live; False
        starts with the first candle that closes after ``start()``.
      - ``backfill_bars`` (int, default 100): without ``fromdate``, how many closed bars of
        history to backfill.
      - ``ohlcv_limit`` (int, default None): rows per REST page, capped by the exchange's own
        maximum (used when None).
      - ``fetch_ohlcv_params`` (dict, default None): venue params passed to every REST
        candle request (ccxt ``fetch_ohlcv(..., params=...)``), e.g. ``{'price': 'mark'}``
        for mark-price candles on the venues that offer them.
      - ``drop_newest`` (bool, default False): distrust the newest closed row of a REST page
        that reaches the present (for venues whose REST finalises candles late); it is
        fetched again on the next poll.
      - ``use_websocket`` (bool, default False): live bars from ccxt.pro ``watch_ohlcv`` on the
        store's loop thread. An exchange without ``watchOHLCV`` raises
        :class:`~.errors.CapabilityError` at ``start()`` (no silent fallback).
      - ``use_threaded_data`` (bool, default False): the REST poller on the store's loop
        thread, so ``_load`` never blocks on network I/O.
      - ``ws_reconnect_delay`` / ``ws_max_reconnect_delay`` (seconds, default 1 / 30): capped
        exponential backoff with jitter between reconnects (and between REST retries once a
        live poll's own retries are spent); reset after a healthy message.
      - ``ws_stall_timeout`` (seconds, default None = 3 bars, within 10..90 s; 60 s for a
        tick feed): a stream silent this long is treated as dead, reconnected and REST-filled
        (a tick feed on a pair quieter than that reconnects each time: raise it there).
      - ``ws_max_connection_age`` (seconds, default 43200 = 12 h; None: never): a connection
        this old is closed and reopened on purpose (Binance cuts every connection at 24 h;
        sockets of long runs degrade), with the same REST fill as after any break.
      - ``ws_reconnections`` (int, default None = forever): consecutive reconnect attempts
        allowed during one outage; when spent, the stream's feeds end with DISCONNECTED
        (and the store notifies RECONNECT_BUDGET_SPENT).
      - ``poll_grace`` (seconds, default None = a quarter bar, at most 1 s): how long after a
        candle's close (exchange clock) to poll for it, or to confirm it over REST when the
        stream has not closed it.
      - ``qcheck`` (seconds, default 0.5): the longest ``_load`` waits before returning None so
        cerebro can run its timers and resampler checks.
      - ``cache`` (:class:`~.cache.HistoryCache` or a path, default None): an on-disk cache of
        closed candles; history already there is read from it and only the missing tail is
        fetched, and what the feed delivers is stored (in batches, and at LIVE and at stop).
      - ``debug`` (bool, default False): log every bar and status at INFO.
    """

    params = (
        ("store", None),
        ("timeframe", None),  # None: backtrader's Days, with a warning for a live feed
        ("historical", False),
        ("backfill_start", True),
        ("backfill_bars", 100),
        ("ohlcv_limit", None),
        ("fetch_ohlcv_params", None),
        ("drop_newest", False),
        ("use_websocket", False),
        ("use_threaded_data", False),
        ("ws_reconnect_delay", 1.0),
        ("ws_max_reconnect_delay", 30.0),
        ("ws_stall_timeout", None),
        ("ws_max_connection_age", 12 * 3600.0),
        ("ws_reconnections", None),
        ("poll_grace", None),
        ("qcheck", 0.5),
        ("cache", None),
        ("debug", False),
    )

    def __init__(self, **kwargs) -> None:
        if kwargs:  # backtrader hands over what is not a declared param: a typo, surely
            valid = [name for name, _ in self.params._getitems()]
            raise unknown_keywords("CCXTFeed", kwargs, valid, _PRIOR_FEED_PARAMS)
        self._tf_missing = self.p.timeframe is None
        if self._tf_missing:
            self.p.timeframe = bt.TimeFrame.Days
        # A ccxt string ('15m') is turned into backtrader's (timeframe, compression) here,
        # before backtrader copies them to _timeframe/_compression; a bad one raises at start().
        self._tf_text = self.p.timeframe if isinstance(self.p.timeframe, str) else None
        if self._tf_text is not None:
            try:
                self.p.timeframe, self.p.compression = to_backtrader(parse_tf(self._tf_text))
            except ConfigurationError:
                pass
        self._ticks = self._tf_text is None and self.p.timeframe == bt.TimeFrame.Ticks
        self._store = self.p.store
        self._source = None
        self._gate = BarGate()
        self._ended = False
        self.spec: FeedSpec | None = None
        self.mode = "polling"
        self._cache_link: FeedCacheLink | None = None
        self._cached: deque[Bar] = deque()
        self._ahead: Bar | None = None  # the next bar, held until its turn (sync.py)
        self._ahead_fresh = False  # not from the cache: to be written back to it
        self._members: list[CCXTFeed] | None = None
        self._turns_memo: Turns | None | bool = False
        self._master = None
        self._report: BackfillReport | None = None

    # -- backtrader hooks ------------------------------------------------------------------

    def islive(self) -> bool:
        return not self.p.historical

    def haslivedata(self) -> bool:
        return self._ahead is not None or bool(self._source is not None and self._source.pending())

    def _gettz(self):
        # backtrader shows bar times in tz and reads naive fromdate/todate in it; its own
        # tzparse needs pytz for a name and fails on zoneinfo (no .localize)
        return resolve_tz(self.p.tz)

    def _gettzinput(self):
        return None  # the lines are UTC: nothing to reinterpret on input

    def _timeoffset(self) -> timedelta:
        # The resampler closes a bar by wall clock when _load returns None. Look at the clock
        # a grace plus a margin behind the exchange, so it never closes a bar before its last
        # candle could have arrived.
        if self._store is None or self.spec is None:
            return timedelta()
        offset = self._store.clock.offset_ms - self.spec.grace_ms - 1000
        return timedelta(milliseconds=offset)

    def start(self) -> None:
        super().start()
        self._ended = False
        self._gate = BarGate()
        self._ahead = None
        self._members = None
        self._turns_memo = False  # not decided yet (see _turns)
        lines = self.lines
        self._dt_line = lines.datetime
        #: (line, Bar field) in the order _fill writes them, and the tick_* slots of each
        self._bar_lines = [(getattr(lines, f), f) for f in _BAR_FIELDS]
        aliases = self.getlinealiases()
        self._tick_slots = [
            ("tick_" + a, line)
            for a, line in zip(aliases, lines.lines, strict=False)
            if a != "datetime"
        ]
        self._tick_first = "tick_" + aliases[0]
        self._line0 = lines.lines[0]  # backtrader's length and tick_last line
        # shared with the cerebro's other CCXT feeds: see sync.Delivery and manager.Doorbell
        env = getattr(self, "_env", None)
        self._delivery: Delivery = delivery_for(env)
        self._bell: Doorbell = doorbell_for(env)
        self._freeze: StartupFreeze = freeze_for(env)
        self._first_since: int | None = None  # the window's start, before the cache moves it
        self._check_params()
        self._qcheck_s = float(self.p.qcheck)  # checked: a number >= 0
        store = self._store
        store.start(data=self)
        try:
            self.spec = self._make_spec()
            self._use_cache()
            self._source = self._make_source()
        except BaseException:
            store.stop(data=self)
            raise
        self._report = self._make_report()
        self._freeze.started(self)
        self.put_notification(self.DELAYED)
        self._source.start()

    def stop(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.stop()
        link, self._cache_link = self._cache_link, None
        if link is not None:
            link.flush(self._store.clock.now_ms())
            if not isinstance(self.p.cache, HistoryCache):
                link.cache.close()  # we opened it from a path
        if self._store is not None:
            self._store.stop(data=self)
        if getattr(self, "_freeze", None) is not None:
            self._freeze.stopped(self)
        if not self._ended:
            self._ended = True
            self.put_notification(self.DISCONNECTED)
        super().stop()

    def qbuffer(self, savemem=0, replaying=False):
        # exactbars >= 1: a turn in which this feed has no bar (load() moves forward, then
        # back) must leave its last bar in place, or the strategy's clock reads an empty
        # buffer while a sibling delivers: keep one slot extra, as backtrader does for
        # resampled and replayed data
        super().qbuffer(savemem=savemem, replaying=True)

    def next(self, datamaster=None, ticks=True):
        # cerebro calls next() once per data and loop turn, then again with a master for the
        # datas that did not deliver: the one place a feed learns that a new turn began
        turns = self._turns()
        if datamaster is None:
            if self._delivery.enter(self) and self._source is not None:
                self._bell.settle()  # a burst of bars arriving: this turn takes it whole
            if turns is not None:
                turns.enter(self, self._members)
        if datamaster is None and not ticks:
            # cerebro's first call of a turn: backtrader's next() comes down to load() when
            # nothing was loaded ahead (a live feed never preloads); its length checks go
            # through three layers of lines
            line0 = self._line0
            if line0.lencount >= len(line0.array) - line0.extension:
                return self.load()
        self._master = datamaster
        try:
            return super().next(datamaster=datamaster, ticks=ticks)
        finally:
            self._master = None

    def load(self):
        # The common live turn with many feeds: nothing here and no reason to wait. Answer
        # before backtrader's load() moves every line forward and back again (with 1,000
        # feeds, most of the cost of a turn of cerebro's loop).
        if (
            self._ahead is None
            and not self._cached
            and not self._ended
            and self._source is not None
            and not self._barstack
            and not self._barstash
            and self._wait_s(self._turns()) == 0
            and self._source.idle()
        ):
            return None
        if self._filters or self._barstack or self._barstash or self._tzinput:
            return super().load()
        # backtrader's load() without what this feed never has (filters, a bar stack, input
        # to localize): forward, our bar, the fromdate/todate window. A turn that delivers
        # 1,000 bars runs this 1,000 times.
        while True:
            self.forward()
            ret = self._load()
            if not ret:
                self.backwards(force=True)  # force: exactbars keeps its pointer accounting
                return ret
            dt = self._dt_line[0]
            if dt < self.fromdate:
                self.backwards()
                continue
            if dt > self.todate:
                self.backwards(force=True)
                return False
            return True

    # backtrader's per-turn bookkeeping, once per data and turn: its generic versions look
    # every line up by name each time (with 1,000 feeds, a fifth of a turn that delivers)

    def do_qcheck(self, onoff, qlapse):
        q = self._qcheck_s if onoff else 0.0
        self._qcheck = q - qlapse if q > qlapse else 0.0

    def _tick_fill(self, force=False):
        # line.array[line._idx] is line[0] (LineBuffer.__getitem__) without two calls
        if force or getattr(self, self._tick_first, None) is None:
            for name, line in self._tick_slots:
                setattr(self, name, line.array[line._idx])
            line0 = self._line0
            self.tick_last = line0.array[line0._idx]

    def _tick_nullify(self):
        for name, _ in self._tick_slots:
            setattr(self, name, None)
        self.tick_last = None

    def _wait_s(self, turns: Turns | None) -> float | None:
        """How long ``_load`` may wait for a bar (None: until one comes)."""
        if self.p.historical:
            return None
        if self._delivery.delivered:  # a sibling delivered: let the strategy see it now
            return 0
        if turns is not None and turns.turn_ms is not None:  # a bar arriving is not for it
            return 0
        return self._qcheck

    def _load(self):
        if self._source is None:
            return False
        turns = self._turns()
        if self._ahead is None and not self._ended:
            self._pull(self._wait_s(turns))
        bar = self._ahead
        if bar is None:
            if self._ended:
                return False
            if self._source.done:
                self._end()
                return False
            return None
        if turns is not None and not self._may_deliver(turns, bar):
            self._store.stats["sync_held"] += 1
            return None
        self._ahead = None
        if self._ahead_fresh and self._cache_link is not None:
            self._cache_link.add(bar.row(), self._store.clock.now_ms())
        if self._report is not None and not self._report.finished:
            self._report.bar(bar.close_ms)
        self._fill(bar)
        self._delivery.delivered = True
        return True

    def sync_peek(self) -> int | None:
        """The close time (ms) of the bar this feed holds for its turn, after refreshing
        the look-ahead without waiting (see :mod:`.sync`); None if it holds none."""
        if self._ahead is None and not self._ended and self._source is not None:
            self._pull(None if self.p.historical else 0)
        return None if self._ahead is None else self._ahead.close_ms

    # -- internals -------------------------------------------------------------------------

    def _pull(self, timeout: float | None) -> None:
        """Fill the look-ahead: the cache first, then the source, handling statuses that
        come before the next bar (those after it stay queued, in order)."""
        while self._ahead is None and not self._ended:
            if self._cached:
                bar = self._cached.popleft()
                if self._gate.admit(bar):
                    self._ahead, self._ahead_fresh = bar, False
                continue
            item = self._source.get(timeout)
            if item is None:
                return
            if isinstance(item, Status):
                self._on_status(item)
            elif self._ticks or self._gate.admit(item):
                # ticks share milliseconds: their source gates them by trade id
                self._ahead, self._ahead_fresh = item, True

    def _turns(self) -> Turns | None:
        """The cerebro's turn state if this feed must keep in step with others: several
        CCXT feeds and a bounded buffer (exactbars >= 1) that cannot be rewound. Decided
        once per run, at the first turn (cerebro has set the buffers up by then)."""
        turns = self._turns_memo
        if turns is not False:
            return turns
        turns = self._turns_memo = self._find_turns()
        return turns

    def _find_turns(self) -> Turns | None:
        if self._members is None:
            env = getattr(self, "_env", None)
            datas = getattr(env, "datas", None) or []
            self._members = [d for d in datas if isinstance(d, CCXTFeed) and not d._filtered()]
        if (
            len(self._members) < 2
            or self._filtered()
            or self.lines.datetime.mode != LineBuffer.QBuffer
        ):
            return None
        return turns_for(self._env)

    def _live_siblings(self) -> list:
        """Every CCXT feed of this cerebro that goes live (this one included)."""
        datas = getattr(getattr(self, "_env", None), "datas", None) or [self]
        return [d for d in datas if isinstance(d, CCXTFeed) and not d.p.historical]

    def _filtered(self) -> bool:
        # a resampled or replayed feed delivers what its filter makes of our bars, at times
        # of its own: holding its input bars back would only starve the filter
        return bool(self.resampling or self.replaying)

    def _may_deliver(self, turns: Turns, bar: Bar) -> bool:
        master = self._master
        # a master that is not one of ours (a CSV, another package's feed) sets its own time:
        # backtrader would rewind us if we went past it
        if master is not None and bt.date2num(bar.dt) > master.lines.datetime[0]:
            return False
        return turns.admit(bar.close_ms)

    def _fill(self, bar: Bar) -> None:
        self._dt_line[0] = _date2num_ms(bar.close_ms, bar.dt)
        for line, field in self._bar_lines:
            line[0] = getattr(bar, field)
        self.lines.openinterest[0] = 0.0
        if self.p.debug:
            log.info(
                "%s bar %s O=%s H=%s L=%s C=%s V=%s",
                self._label(),
                bar.dt,
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                bar.volume,
            )

    def _on_status(self, status: Status) -> None:
        level = logging.WARNING if status.code == "CONNBROKEN" else logging.INFO
        if status.fatal:
            level = logging.ERROR
        if self.p.debug or level >= logging.WARNING:
            log.log(level, "%s %s %s", self._label(), status.code, status.message)
        if status.code == "DISCONNECTED" or status.fatal:
            self._end(status)
            return
        if status.code == "LIVE" and self._report is not None:
            self._report.done()
        if status.code == "LIVE" and self._cache_link is not None:
            self._cache_link.flush(self._store.clock.now_ms())
        if status.code == "LIVE":
            self._freeze.live(self, self._live_siblings)
        self.put_notification(getattr(self, status.code), status.message)

    def _end(self, status: Status | None = None) -> None:
        if self._report is not None and not (status and status.fatal):
            self._report.done()  # a historical feed's whole run is its backfill
        self._ended = True
        msg = status.message if status else ""
        self.put_notification(self.DISCONNECTED, msg)

    def _label(self) -> str:
        ex = self._store.exchange_id if self._store is not None else "?"
        return f"[{ex} {self.p.dataname} {self.spec.tf if self.spec else ''}]"

    def _check_params(self) -> None:
        p = self.p
        from .store import CCXTStore

        if not isinstance(self._store, CCXTStore):
            raise ConfigurationError(
                f"store must be a CCXTStore, got {type(self._store).__name__}; "
                "use store.getdata(...) or CCXTFeed(store=store, ...)"
            )
        if not isinstance(p.dataname, str) or not p.dataname:
            raise ConfigurationError(
                f"dataname must be a unified symbol string such as 'BTC/USDT', got {p.dataname!r}"
            )
        modes = [n for n in ("use_websocket", "use_threaded_data") if getattr(p, n)]
        if len(modes) > 1:
            raise ConfigurationError(
                "use_websocket=True and use_threaded_data=True conflict: choose one live mode "
                "(valid choices: REST polling (default), use_threaded_data=True, use_websocket=True)"
            )
        if p.historical and modes:
            raise ConfigurationError(
                f"historical=True conflicts with {modes[0]}=True: a historical feed has no live "
                "part (valid choices: historical=True alone, or a live mode)"
            )
        if self._ticks:
            self._check_tick_params()
        if p.ohlcv_limit is not None and (not _is_int(p.ohlcv_limit) or p.ohlcv_limit < 1):
            raise ConfigurationError(
                f"ohlcv_limit must be a positive integer or None, got {p.ohlcv_limit!r}"
            )
        if not _is_int(p.backfill_bars) or p.backfill_bars < 0:
            raise ConfigurationError(
                f"backfill_bars must be an integer >= 0, got {p.backfill_bars!r}"
            )
        for name in ("ws_reconnect_delay", "ws_max_reconnect_delay", "qcheck"):
            val = getattr(p, name)
            if not _is_num(val) or val < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {val!r}")
        if p.ws_reconnect_delay <= 0:
            raise ConfigurationError(
                f"ws_reconnect_delay must be > 0 (a zero delay would reconnect in a tight "
                f"loop), got {p.ws_reconnect_delay!r}"
            )
        if p.ws_reconnect_delay > p.ws_max_reconnect_delay:
            raise ConfigurationError(
                f"ws_reconnect_delay ({p.ws_reconnect_delay}) exceeds ws_max_reconnect_delay "
                f"({p.ws_max_reconnect_delay})"
            )
        for name in ("poll_grace", "ws_stall_timeout"):
            val = getattr(p, name)
            if val is not None and (not _is_num(val) or val < 0):
                raise ConfigurationError(f"{name} must be a number >= 0 or None, got {val!r}")
        age = p.ws_max_connection_age
        if age is not None and (not _is_num(age) or age <= 0):
            raise ConfigurationError(
                f"ws_max_connection_age must be a number of seconds > 0 or None (never), got {age!r}"
            )
        budget = p.ws_reconnections
        if budget is not None and (not _is_int(budget) or budget < 0):
            raise ConfigurationError(
                f"ws_reconnections must be an integer >= 0 or None (forever), got {budget!r}"
            )
        for name in ("fromdate", "todate"):
            val = getattr(p, name)
            if val is not None and not isinstance(val, datetime):
                raise ConfigurationError(f"{name} must be a datetime or None, got {val!r}")
        if p.fetch_ohlcv_params is not None and not isinstance(p.fetch_ohlcv_params, Mapping):
            raise ConfigurationError(
                f"fetch_ohlcv_params must be a dict of venue params or None, got "
                f"{p.fetch_ohlcv_params!r}"
            )
        if p.fetch_ohlcv_params and "paginate" in p.fetch_ohlcv_params:
            raise ConfigurationError(
                "fetch_ohlcv_params must not set 'paginate': the feed pages itself (valid "
                "choices: venue params such as {'price': 'mark'})"
            )
        if p.fetch_ohlcv_params and p.cache is not None:
            # the cache keys candles by exchange, symbol and timeframe: mark-price candles
            # would land on (and be served as) the trade candles of the same key
            raise ConfigurationError(
                f"fetch_ohlcv_params={dict(p.fetch_ohlcv_params)!r} cannot be combined with "
                "cache: venue params can change what a candle is (mark or index price) and the "
                "cache would mix them with plain candles; valid choices: cache=None, or no "
                "fetch_ohlcv_params"
            )
        if self._tf_missing and not p.historical:
            msg = (
                f"CCXTFeed {p.dataname!r} has no timeframe: backtrader's default is daily bars, "
                "so this live feed delivers one bar a day and is silent until the day closes. "
                "Pass timeframe='1m' (or bt.TimeFrame.Minutes) - or timeframe='1d' to keep days."
            )
            log.warning("%s", msg)
            warnings.warn(msg, ConfigurationWarning, stacklevel=2)
        resolve_tz(p.tz)  # raises ConfigurationError naming the bad value
        if p.tzinput is not None:
            raise ConfigurationError(
                f"tzinput={p.tzinput!r} is not supported: exchange candles are UTC; valid "
                "choices: None (use tz= to show bars and read fromdate/todate in a zone)"
            )
        if (
            p.use_websocket
            and not self._ticks
            and not self._store.has("watchOHLCV", websocket=True)
        ):
            raise CapabilityError(
                f"exchange {self._store.exchange_id!r} has no WebSocket OHLCV (ccxt.pro "
                "watchOHLCV); valid choices: use_websocket=False (REST polling, the default) "
                "or use_threaded_data=True"
            )
        tz = resolve_tz(p.tz)
        if (
            p.fromdate is not None
            and p.todate is not None
            and to_utc_ms(p.fromdate, tz) > to_utc_ms(p.todate, tz)
        ):
            raise ConfigurationError(
                f"fromdate {p.fromdate} is after todate {p.todate}; valid choices: "
                "fromdate <= todate"
            )

    def _check_tick_params(self) -> None:
        p = self.p
        for name in ("cache", "fetch_ohlcv_params"):
            if getattr(p, name):
                raise ConfigurationError(
                    f"timeframe=bt.TimeFrame.Ticks cannot be combined with {name}="
                    f"{getattr(p, name)!r}; valid choices: a tick feed (REST polling, threaded "
                    f"or WebSocket) without {name}, or a candle timeframe with {name}"
                )
        if not self._store.has("fetchTrades"):
            raise CapabilityError(
                f"exchange {self._store.exchange_id!r} has no fetchTrades: no tick feed; valid "
                "choices: a candle timeframe such as '1m'"
            )
        if p.use_websocket and not self._store.has("watchTrades", websocket=True):
            raise CapabilityError(
                f"exchange {self._store.exchange_id!r} has no WebSocket trades (ccxt.pro "
                "watchTrades); valid choices: use_websocket=False (REST polling, the default) "
                "or use_threaded_data=True"
            )

    def _tick_spec(self, symbol: str, now: int) -> tradepolling.TradeSpec:
        p = self.p
        store = self._store
        limit = min(p.ohlcv_limit or store.max_page(symbol) or _DEFAULT_PAGE, 1000)
        tz = resolve_tz(p.tz)
        since = None
        if p.fromdate is not None and p.backfill_start:
            since = to_utc_ms(p.fromdate, tz)
        stall = p.ws_stall_timeout if p.ws_stall_timeout is not None else 60.0
        options = getattr(store.exchange, "options", None) or {}
        venue = tradepolling.venue_paging(store.exchange_id, options)
        limit = min(limit, venue.pop("max_page", limit))
        return tradepolling.TradeSpec(
            **venue,
            symbol=symbol,
            since_ms=since,
            page_limit=limit,
            until_ms=None if p.todate is None else to_utc_ms(p.todate, tz) + 1,
            historical=bool(p.historical),
            backfill_trades=p.backfill_bars if p.backfill_start else 0,
            poll_interval_ms=int(1000 * (p.poll_grace if p.poll_grace is not None else 1.0)),
            retries=store.retries,
            reconnect_delay=float(p.ws_reconnect_delay),
            max_reconnect_delay=float(p.ws_max_reconnect_delay),
            stall_timeout=float(stall),
            max_connection_age=None
            if p.ws_max_connection_age is None
            else float(p.ws_max_connection_age),
            reconnections=p.ws_reconnections,
        )

    def _make_spec(self) -> FeedSpec:
        p = self.p
        store = self._store
        symbol = store.check_symbol(p.dataname)
        now = store.clock.now_ms()
        tz = resolve_tz(p.tz)  # naive fromdate/todate are read in tz, as backtrader filters
        if p.fromdate is not None and to_utc_ms(p.fromdate, tz) > now:
            raise ConfigurationError(
                f"fromdate {p.fromdate} is in the future (exchange time now "
                f"{_EPOCH + timedelta(milliseconds=now)} UTC); valid choices: a past datetime "
                "or None"
            )
        if self._ticks:
            return self._tick_spec(symbol, now)
        tf = store.resolve_timeframe(self._tf_text or p.timeframe, p.compression)
        limit = store.max_page(symbol)
        page = min(p.ohlcv_limit or limit or _DEFAULT_PAGE, limit or 10**9)
        forming = now - now % tf.ms if not tf.is_calendar else now - tf.ms
        if not p.backfill_start:
            since = forming
        elif p.fromdate is not None:
            since = tf.open_of(to_utc_ms(p.fromdate, tz))  # the candle closing at fromdate
        else:
            since = forming - p.backfill_bars * tf.ms
        until = None
        if p.todate is not None:
            until = tf.open_of(to_utc_ms(p.todate, tz)) + 1  # up to the one closing at todate
        grace = p.poll_grace if p.poll_grace is not None else min(1.0, tf.ms / 4000)
        stall = p.ws_stall_timeout
        if stall is None:
            stall = min(90.0, max(10.0, 3 * tf.ms / 1000))
        return FeedSpec(
            symbol=symbol,
            tf=tf,
            since_ms=since,
            page_limit=page,
            until_ms=until,
            historical=bool(p.historical),
            drop_newest=bool(p.drop_newest),
            grace_ms=int(grace * 1000),
            retries=store.retries,
            reconnect_delay=float(p.ws_reconnect_delay),
            max_reconnect_delay=float(p.ws_max_reconnect_delay),
            stall_timeout=float(stall),
            max_connection_age=None
            if p.ws_max_connection_age is None
            else float(p.ws_max_connection_age),
            reconnections=p.ws_reconnections,
            ohlcv_params=VenueParams(p.fetch_ohlcv_params),
        )

    def _make_report(self) -> BackfillReport | None:
        spec = self.spec
        if not self.p.backfill_start or self._ticks:  # no progress report for ticks yet
            return None
        now = self._store.clock.now_ms()
        end = now if spec.until_ms is None else min(now, spec.until_ms)
        first = spec.since_ms if self._first_since is None else self._first_since
        if self.p.fromdate is None and not self.p.historical:
            asked, exact = self.p.backfill_bars, True  # a count the user gave
        else:  # a window: venues may omit candles without trades
            asked = 0 if spec.tf.is_calendar else max(0, (end - first) // spec.tf.ms)
            exact = False
        return BackfillReport(self._label(), first, end, asked, exact)

    def _use_cache(self) -> None:
        """Serve cached history first and fetch only from where the cache ends."""
        cache = self.p.cache
        if cache is None:
            return
        if isinstance(cache, str | os.PathLike):
            cache = HistoryCache(cache)
        elif not isinstance(cache, HistoryCache):
            raise ConfigurationError(
                f"cache must be a HistoryCache or a path, got {type(cache).__name__}"
            )
        spec = self.spec
        self._first_since = spec.since_ms
        link = FeedCacheLink(cache, cache_key(self._store), spec.symbol, spec.tf.ccxt)
        rows, resume = link.cached(spec.since_ms, spec.until_ms)
        self._cached = deque(bar_from_row(r, spec.tf) for r in rows)
        self.spec = replace(spec, since_ms=resume)
        self._cache_link = link

    def _make_source(self):
        p = self.p
        store = self._store
        spec = self.spec
        if self._ticks and p.use_websocket:
            self.mode = "websocket"
            return store.manager.subscribe(spec, "tickstream", self._bell)
        if self._ticks and p.use_threaded_data:
            self.mode = "threaded"
            return store.manager.subscribe(spec, "tickpoll", self._bell)
        if self._ticks:
            self.mode = "polling"
            return tradepolling.TradePollingSource(
                store.exchange,
                spec,
                store.clock,
                spec.retries,
                tradepolling.backoff_for(store),
                store.redact,
                store.notify,
                store.stats,
            )
        if p.use_websocket:
            self.mode = "websocket"
            return store.manager.subscribe(spec, "stream", self._bell)
        if p.use_threaded_data:
            self.mode = "threaded"
            return store.manager.subscribe(spec, "poll", self._bell)
        self.mode = "polling"
        target = RestTarget(
            symbol=spec.symbol,
            tf=spec.tf,
            retries=spec.retries,
            backoff=Backoff(store.retry_delay, store.retry_max_delay),
            redact=store.redact,
            params=dict(spec.ohlcv_params),
            notify=store.notify,
            give_up_is_fatal=spec.historical,
            stats=store.stats,
        )
        return PollingSource(store.exchange, spec, store.clock, target)
