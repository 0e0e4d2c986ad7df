"""LocalExchange: the public handle. Owns the server thread, its event loop and the replay."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable

from ..errors import ConfigurationError
from .accounts import Account, Ledger, dec
from .data import Candle, Replay, check_symbol, parse_timeframe
from .matching import MatchingEngine, TradePath
from .protocol import CandleFrame, Protocol, protocol_class
from .server import ExchangeServer
from .stats import Stats
from .timing import Timing
from .trades import TradeLedger
from .trading import TradingDesk
from .trading_faults import Faults

__all__ = ["LedgerView", "LocalExchange"]

log = logging.getLogger(__name__)


class LocalExchange:
    """A local spot exchange on 127.0.0.1 speaking Binance's, OKX v5's or Bybit v5's public
    protocol (REST + WebSocket candles).

    It replays real candles re-stamped onto the current clock, so the real ccxt,
    ccxt.async_support and ccxt.pro clients of that venue (``ccxt.binance``, ``ccxt.okx``,
    ``ccxt.bybit`` ...) talk to it unmodified once their URLs point at it
    (:meth:`ccxt_config`). On Binance it also trades: :meth:`add_account`,
    ``ccxt_config(account=...)``, :attr:`ledger`, :attr:`max_fill_qty` and the trading fault
    controls (``trading_faults.py``). See ``docs/localexchange.md``.

    Params:
        protocol: ``"binance"`` (default), ``"okx"`` or ``"bybit"``: the venue whose REST
            and WebSocket formats, paging, errors and frame timing are spoken. The replay, the
            fault controls and the counters are the same for all.
        symbols: served symbols. ``BTC/USDT`` and ``ETH/USDT`` replay real data; any other
            ``BASE/QUOTE`` is derived from one of them (deterministic price scale and shift).
        timeframes: unified intervals that must be served; every fixed-length interval the
            venue has is served anyway, and extra ones listed here (e.g. ``"1s"`` on OKX and
            Bybit, ``"5s"``) are added, on the wire under their own name, and in
            :meth:`ccxt_config`'s ``timeframes``.
        history: closed candles available before the start instant, per symbol and timeframe.
        updates_per_candle: partial (not final) WebSocket updates per candle before the
            final one; they fall in the first 90% of the candle.
        host, port: where to listen; port 0 picks a free port (see :attr:`port`).
        clock: callable returning "now" in seconds (default ``time.time``), used for
            everything. With a custom clock the emission timer polls every ``poll_interval``.
        empty_every: if > 0, every candle whose row index is a multiple of this has no trades
            (flat, volume 0); see ``faults.omit_empty`` and ``faults.make_empty``.
        ping_interval: seconds between the server's WebSocket pings (Binance: 20).
        pong_timeout: seconds without a pong before the server drops a connection (Binance: 60).
        rest_timeout_hold: seconds a ``rest_errors("timeout")`` request is held by default.
        max_catchup: when the clock jumps (or the loop was blocked), at most this many missed
            finals per timeframe are sent; older ones are skipped, as a lagging venue would.
        poll_interval: longest timer sleep (seconds) when a custom clock is used.
        late_final_every: if > 0, the final of every candle whose index is a multiple of it is
            sent after the successor's first update (OKX does this at times). None: the
            protocol's default (OKX 3, Binance and Bybit 0). Settable while running
            (:attr:`late_final_every`).
        trades_timeframe: the timeframe whose candles the public trades reproduce exactly
            (see :meth:`trades`); default the shortest of ``timeframes``; served too.
    """

    def __init__(
        self,
        symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT"),
        timeframes: Iterable[str] = ("1s", "1m"),
        history: int = 3000,
        updates_per_candle: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        *,
        empty_every: int = 0,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        rest_timeout_hold: float = 30.0,
        max_catchup: int = 1000,
        poll_interval: float = 0.05,
        protocol: str = "binance",
        late_final_every: int | None = None,
        trades_timeframe: str | None = None,
    ):
        self._protocol_class: type[Protocol] = protocol_class(protocol)
        self.protocol = protocol
        if isinstance(symbols, str):
            symbols = (symbols,)
        self.symbols = tuple(dict.fromkeys(check_symbol(s) for s in symbols))
        if not self.symbols:
            raise ValueError("symbols must name at least one symbol, e.g. ('BTC/USDT',)")
        if isinstance(timeframes, str):
            timeframes = (timeframes,)
        self.timeframes = tuple(dict.fromkeys(parse_timeframe(t).name for t in timeframes))
        if trades_timeframe is None:
            trades_timeframe = min(self.timeframes, key=lambda t: parse_timeframe(t).ms)
        self.trades_timeframe = parse_timeframe(trades_timeframe).name
        if self.trades_timeframe not in self.timeframes:  # served, so REST can show them
            self.timeframes += (self.trades_timeframe,)
        self._ledger: TradeLedger | None = None
        for name, value, low in (
            ("history", history, 0),
            ("updates_per_candle", updates_per_candle, 1),
            ("empty_every", empty_every, 0),
            ("max_catchup", max_catchup, 1),
            ("late_final_every", 0 if late_final_every is None else late_final_every, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.history = history
        self.updates_per_candle = updates_per_candle
        self.host = host
        self._requested_port = port
        self._clock = clock or time.time
        self._exact_clock = clock is None
        self.empty_every = empty_every
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.rest_timeout_hold = rest_timeout_hold
        self.max_catchup = max_catchup
        self.poll_interval = poll_interval
        base = self._protocol_class.default_timing
        self._timing = Timing(
            base.final_delay_ms,
            base.final_delay_fraction,
            base.late_final_every if late_final_every is None else late_final_every,
        )
        self._frame_listeners: list[Callable[[CandleFrame], None]] = []
        self.stats = Stats()
        self.faults = Faults(self)
        self._accounts = Ledger()
        self._desk: TradingDesk | None = None
        self._max_fill_qty = None
        #: the trading ground truth (orders, fills, balances, accepted creates) per account
        self.ledger = LedgerView(self)
        self._replay: Replay | None = None
        self._wire: Protocol | None = None
        self._server: ExchangeServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalExchange:
        """Start serving in a background thread; returns self once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("LocalExchange is already running")
        if self._replay is None:
            self._replay = Replay(
                self.symbols,
                self.now_ms(),
                self.history,
                self.updates_per_candle,
                self.empty_every,
                self._protocol_class.settled_last_update,
            )
            for series in self._replay.series.values():
                series.rows  # noqa: B018 - load the bundled files before serving
        if self._ledger is None or self._ledger.replay is not self._replay:
            # also over a replay a subclass set (RehearsalExchange: the user's history)
            self._ledger = TradeLedger(self._replay, self.trades_timeframe)
        ready: concurrent.futures.Future = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="LocalExchange", daemon=True
        )
        self._thread = thread
        thread.start()
        try:
            self.port = ready.result(timeout=30)
        except BaseException:
            thread.join(timeout=30)
            self._thread = None
            raise
        log.info("local exchange serving on %s", self.rest_url)
        return self

    def _thread_main(self, ready: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        try:
            assert self._replay is not None
            wire = self._protocol_class(
                self._replay, self.faults._state, self.now_ms, self.timeframes
            )
            wire.ledger = self._ledger
            self._wire = wire
            desk = self._make_desk(wire)
            server = ExchangeServer(
                wire,
                self._replay,
                self.stats,
                self.faults._state,
                self.now_ms,
                self._timing,
                host=self.host,
                port=self._requested_port,
                exact_clock=self._exact_clock,
                poll_interval=self.poll_interval,
                ping_interval=self.ping_interval,
                pong_timeout=self.pong_timeout,
                rest_timeout_hold=self.rest_timeout_hold,
                max_catchup=self.max_catchup,
            )
            try:
                port = loop.run_until_complete(server.start())
            except BaseException as e:
                ready.set_exception(e)
                loop.run_until_complete(server.stop())
                return
            self._loop = loop
            self._server = server
            self._loop_thread_id = threading.get_ident()
            server.streams.frame_listeners = self._frame_listeners
            desk.hub = server.streams
            desk._stopping = False
            ready.set_result(port)
            loop.run_forever()
        finally:
            self._loop = None
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    def stop(self) -> None:
        """Close every connection, end every server task and the thread. Idempotent."""
        thread, loop, server = self._thread, self._loop, self._server
        if thread is None:
            return
        try:
            if loop is not None and self._desk is not None:
                self._call(self._desk.stop)
            if loop is not None and server is not None:
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        finally:
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._thread = None
            self._server = None
            log.info("local exchange on port %s stopped", self.port)

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _call(self, fn, *args):
        """Run ``fn(*args)`` on the server thread and wait for its result."""
        loop = self._loop
        if loop is None or threading.get_ident() == getattr(self, "_loop_thread_id", None):
            return fn(*args)
        done: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                done.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                done.set_exception(e)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    # -- addresses and client configuration -------------------------------------------------

    def _need_port(self) -> int:
        if self.port is None:
            raise RuntimeError("LocalExchange is not started: call start() or use 'with'")
        return self.port

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self._need_port()}"

    @property
    def ws_url(self) -> str:
        """The candle WebSocket: Binance ``/ws``, OKX ``/ws/v5/business``, Bybit
        ``/v5/public/spot``."""
        return f"ws://{self.host}:{self._need_port()}{self._protocol_class.ws_path}"

    def ccxt_config(self, account: Account | None = None) -> dict:
        """Constructor config for this protocol's ccxt classes (``ccxt.<venue>``,
        ``ccxt.async_support.<venue>``, ``ccxt.pro.<venue>``) that points every REST and
        WebSocket URL of the venue at this exchange (the WebSocket API included), loads spot
        markets only (no ``sapi`` currency or margin calls: ``fetchCurrencies`` and
        ``fetchMargins`` off), and adds the extra timeframes to ``timeframes``.

        ``account``: one of :meth:`add_account`'s, whose ``apiKey`` and ``secret`` are added
        (Binance only trades). Merge your own keys (``timeout``, ``enableRateLimit`` ...)
        into a copy as needed.
        """
        port = self._need_port()
        wire = self._wire
        if wire is None:
            raise RuntimeError("LocalExchange is not started: call start() or use 'with'")
        config = wire.ccxt_config(self.host, port)
        if account is not None:
            self._need_trading()
            self._accounts.book(account)  # ValueError if not ours
            config["apiKey"] = account.api_key
            config["secret"] = account.secret
        return config

    # -- trading ----------------------------------------------------------------------------

    def add_account(
        self,
        balances: dict | None = None,
        fee_rate: float | str = 0.001,
        *,
        api_key: str | None = None,
        secret: str | None = None,
        name: str | None = None,
    ) -> Account:
        """A new trading account holding ``balances`` (``{"USDT": 10_000, "BTC": 0}``, free)
        and paying ``fee_rate`` of each execution's quote amount, in the quote asset.
        ``api_key`` / ``secret``: random (64 hex characters) unless given. Before or after
        :meth:`start`; any number of accounts. See docs/localexchange.md, "Trading"."""
        self._need_trading()
        return self._call(self._accounts.add_account, balances, fee_rate, api_key, secret, name)

    @property
    def accounts(self) -> list[Account]:
        return self._call(self._accounts.accounts)

    @property
    def max_fill_qty(self):
        """Partial fills: the most base quantity one public trade fills of a resting order,
        and the size of each execution of an immediate fill (a Decimal), or None (the
        default: whole fills). Settable at any time; applies to every open order."""
        return self._max_fill_qty

    @max_fill_qty.setter
    def max_fill_qty(self, value) -> None:
        qty = None if value is None else dec(value)
        if qty is not None and qty <= 0:
            raise ValueError(f"max_fill_qty must be > 0 or None, got {value!r}")
        self._max_fill_qty = qty
        if self._desk is not None:
            self._call(setattr, self._desk.engine, "max_fill_qty", qty)

    def _need_trading(self) -> None:
        if self.protocol != "binance":
            raise ConfigurationError(
                f"trading (accounts, orders, user streams) is served on protocol 'binance' "
                f"only; this exchange speaks {self.protocol!r}"
            )

    def _make_desk(self, wire: Protocol) -> TradingDesk:
        """The trading desk over the trade ledger (kept across restarts); Binance's
        private API on it."""
        assert self._replay is not None and self._ledger is not None
        path = TradePath(self._ledger)
        if self._desk is None:
            from .binance_private import symbol_rules

            rules = {s: symbol_rules(series) for s, series in self._replay.series.items()}
            engine = MatchingEngine(self._accounts, path, rules)
            engine.max_fill_qty = self._max_fill_qty
            self._desk = TradingDesk(
                engine,
                self.faults.trading,
                self.now_ms,
                exact_clock=self._exact_clock,
                poll_interval=self.poll_interval,
            )
            self._desk.stats = self.stats
        desk = self._desk
        desk.engine.path = path
        if self.protocol == "binance":
            from .binance_private import BinancePrivate

            private = BinancePrivate(wire, desk)
            wire.private = private
            desk.render = private.render
            desk.streams.wrap = private.wrap
        return desk

    def _drop_user_streams(self, count: bool = True) -> int:
        return 0 if self._desk is None else self._desk.drop_streams(count)

    def _ledger_read(self, fn, *args):
        if self._desk is not None and self._loop is not None:
            self._desk.sync()
        return fn(*args)

    # -- frame hook and venue behaviour ----------------------------------------------------

    def add_frame_listener(self, fn: Callable[[CandleFrame], None]) -> None:
        """Call ``fn(frame)`` for every candle frame written to a WebSocket connection, right
        after it was written (``frame.sent_at`` is ``time.time()`` then): one call per
        connection, faults' duplicates and out-of-order frames included (``frame.kind``).

        ``fn`` runs on the server thread: keep it short (append to a list, a queue); an
        exception it raises is logged and ignored. May be called before or after start().
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self._call(self._frame_listeners.append, fn)

    def remove_frame_listener(self, fn: Callable[[CandleFrame], None]) -> None:
        """Stop calling ``fn`` (ValueError if it was not added)."""
        self._call(self._frame_listeners.remove, fn)

    @property
    def late_final_every(self) -> int:
        """See the constructor; set it (0 turns late finals off) at any time."""
        return self._timing.late_final_every

    @late_final_every.setter
    def late_final_every(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"late_final_every must be an int >= 0, got {value!r}")
        self._call(setattr, self._timing, "late_final_every", value)

    # -- ground truth -----------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's "now" in ms since the epoch."""
        return int(self._clock() * 1000)

    def _need_replay(self) -> Replay:
        if self._replay is None:
            raise RuntimeError("LocalExchange is not started: call start() or use 'with'")
        return self._replay

    def _check(self, symbol: str, timeframe: str):
        replay = self._need_replay()
        if symbol not in replay.series:
            raise ValueError(f"symbol {symbol!r} is not served; served: {list(self.symbols)}")
        return replay, replay.timeframe(timeframe)

    @property
    def start_ms(self) -> int:
        """The start instant: ``history`` closed candles exist before it."""
        return self._need_replay().start_ms

    def first_open_ms(self, timeframe: str) -> int:
        """Open time of the oldest candle served for ``timeframe``."""
        replay = self._need_replay()
        return replay.first_open(replay.timeframe(timeframe))

    def candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[list]:
        """CLOSED candles ``[open_ms, o, h, l, c, v]`` (floats) with open in ``[since, until)``,
        exactly as REST serves them (empty ones left out while ``faults.omit_empty`` is on)."""
        replay, tf = self._check(symbol, timeframe)
        return replay.closed_ohlcv(
            symbol, tf, since_ms, until_ms, self.now_ms(), self.faults.omit_empty
        )

    def candle_at(self, symbol: str, timeframe: str, open_ms: int) -> list | None:
        """The closed candle opening exactly at ``open_ms``, or None (not aligned, not served
        yet, still forming, before the history, or omitted as empty)."""
        replay, tf = self._check(symbol, timeframe)
        if tf.floor(open_ms) != open_ms:
            return None
        rows = replay.closed_ohlcv(
            symbol, tf, open_ms, open_ms + 1, self.now_ms(), self.faults.omit_empty
        )
        return rows[0] if rows else None

    def candle_detail(self, symbol: str, timeframe: str, open_ms: int) -> Candle:
        """All served fields (wire strings, trades, taker volumes) of a candle's final state."""
        replay, tf = self._check(symbol, timeframe)
        return replay.candle(symbol, tf, tf.index(open_ms))

    def forming(self, symbol: str, timeframe: str) -> list:
        """The forming candle ``[open_ms, o, h, l, c, v]`` as REST shows it right now."""
        replay, tf = self._check(symbol, timeframe)
        return replay.forming(symbol, tf, self.now_ms()).ohlcv

    def trades(
        self, symbol: str, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[dict]:
        """The public trades with time in ``[since, until)`` that have happened, oldest first,
        as ccxt trade dicts (``id``, ``timestamp``, ``price``, ``amount``, ``side``).

        They are derived from the candles of :attr:`trades_timeframe` (the constructor's
        ``trades_timeframe``): aggregated into bars of that size they give exactly
        ``candles(symbol, trades_timeframe)``, empty candles having no trade. Ids are
        consecutive integers per symbol, from 0 at the oldest history trade. Served by the
        Binance protocol (REST ``trades``, ``historicalTrades``, ``aggTrades``; streams
        ``@trade``, ``@aggTrade``); see ``localexchange/trades.py``.
        """
        self._check(symbol, self.trades_timeframe)
        ledger = self._ledger
        assert ledger is not None
        rows = self._call(ledger.between, symbol, since_ms, until_ms, self.now_ms())
        return [t.ccxt() for t in rows]

    # -- counters ---------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero the counters of :attr:`stats` (the open-connection gauges are kept)."""
        self._call(self.stats.reset)

    # -- hooks for Faults (run on the server thread) ----------------------------------------

    def _drop_connections(self, clean: bool) -> int:
        return 0 if self._server is None else self._server.drop_connections(clean)

    def _set_max_age(self, max_age_ms: int | None) -> None:
        if self._server is None:
            self.faults._state.max_age_ms = max_age_ms
        else:
            self._server.streams.set_max_age(max_age_ms)

    def _make_empty(self, symbol: str, timeframe: str, open_ms: int) -> None:
        replay, tf = self._check(symbol, timeframe)
        replay.make_empty(symbol, tf, open_ms)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "not started"
        return (
            f"LocalExchange({self.protocol}, {list(self.symbols)}, {list(self.timeframes)}, "
            f"{where})"
        )


class LedgerView:
    """``ex.ledger``: the trading ground truth, read on the server thread after matching up
    to the exchange clock's now. Amounts are Decimals; times exchange ms."""

    def __init__(self, owner: LocalExchange):
        self._owner = owner

    def _read(self, fn, *args):
        return self._owner._call(self._owner._ledger_read, fn, *args)

    def orders(self, account: Account, symbol: str | None = None) -> list[dict]:
        """Every order of ``account`` (of ``symbol`` if given), oldest first, as Binance's
        order snapshot (``orderId``, ``clientOrderId``, ``symbol`` as the market id,
        ``side``, ``type``, ``timeInForce``, ``status``, ``price``, ``stopPrice``,
        ``origQty``, ``executedQty``, ``cummulativeQuoteQty``, ``time``, ``updateTime`` ...,
        strings as on the wire)."""

        def read():
            return [o.snapshot() for o in self._owner._accounts.orders(account, symbol)]

        return self._read(read)

    def fills(self, account: Account, symbol: str | None = None) -> list[dict]:
        """Every execution, oldest first: ``id`` (the trade id), ``orderId``,
        ``clientOrderId``, ``symbol`` (unified), ``side``, ``price``, ``qty``, ``quoteQty``,
        ``commission``, ``commissionAsset``, ``isBuyer``, ``isMaker``, ``time``; amounts
        Decimal."""

        def read():
            return [f.ledger_row() for f in self._owner._accounts.fills(account, symbol)]

        return self._read(read)

    def balances(self, account: Account) -> dict:
        """``{asset: (free, locked)}``, Decimals."""
        return self._read(self._owner._accounts.balances, account)

    def create_requests(self, account: Account) -> list[dict]:
        """Every ``POST /api/v3/order`` the exchange ACCEPTED for ``account``, oldest first:
        the request's parameters (strings, ``signature`` left out) plus the ``orderId``
        booked. Rejected requests are not in it."""
        return self._read(self._owner._accounts.creates, account)
