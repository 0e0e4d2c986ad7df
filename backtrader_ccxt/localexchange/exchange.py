"""LocalExchange: the public handle. Owns the server thread, its event loop and the replay."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable

from .data import BINANCE_INTERVALS, Candle, Replay, check_symbol, parse_timeframe
from .faults import Faults
from .server import ExchangeServer
from .stats import Stats

__all__ = ["LocalExchange"]

log = logging.getLogger(__name__)

# Every REST base URL ccxt's binance knows (urls.api), with its path on the real host. All are
# pointed at the local server so that no request can leave the machine; only /api/v3 answers.
_REST_API_PATHS = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}
_WS_KEYS = (
    "spot",
    "margin",
    "linear",
    "inverse",
    "stock",
    "option",
    "optionMarket",
    "optionPrivate",
    "papi",
)


class LocalExchange:
    """A local exchange speaking Binance's SPOT protocol (REST + WebSocket) on 127.0.0.1.

    It replays real candles re-stamped onto the current clock, so the real ``ccxt.binance``,
    ``ccxt.async_support.binance`` and ``ccxt.pro.binance`` clients talk to it unmodified once
    their URLs point at it (:meth:`ccxt_config`). See ``docs/localexchange.md``.

    Params:
        symbols: served symbols. ``BTC/USDT`` and ``ETH/USDT`` replay real data; any other
            ``BASE/QUOTE`` is derived from one of them (deterministic price scale and shift).
        timeframes: intervals that must be served; any fixed-length Binance interval is served
            anyway, and extra ones listed here (e.g. ``"5s"``) are added.
        history: closed candles available before the start instant, per symbol and timeframe.
        updates_per_candle: partial (``x: false``) WebSocket updates per candle before the
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
    ):
        if isinstance(symbols, str):
            symbols = (symbols,)
        self.symbols = tuple(dict.fromkeys(check_symbol(s) for s in symbols))
        if not self.symbols:
            raise ValueError("symbols must name at least one symbol, e.g. ('BTC/USDT',)")
        if isinstance(timeframes, str):
            timeframes = (timeframes,)
        self.timeframes = tuple(dict.fromkeys(parse_timeframe(t).name for t in timeframes))
        for name, value, low in (
            ("history", history, 0),
            ("updates_per_candle", updates_per_candle, 1),
            ("empty_every", empty_every, 0),
            ("max_catchup", max_catchup, 1),
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
        self.stats = Stats()
        self.faults = Faults(self)
        self._replay: Replay | None = None
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
            )
            for series in self._replay.series.values():
                series.rows  # noqa: B018 - load the bundled files before serving
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
            server = ExchangeServer(
                self._replay,
                self.stats,
                self.faults._state,
                self.now_ms,
                host=self.host,
                port=self._requested_port,
                timeframes=self.timeframes,
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
        return f"ws://{self.host}:{self._need_port()}/ws"

    def ccxt_config(self) -> dict:
        """Constructor config for ``ccxt.binance`` / ``ccxt.async_support.binance`` /
        ``ccxt.pro.binance`` that points every URL at this exchange and loads spot markets only.

        Merge your own keys (``timeout``, ``enableRateLimit`` ...) into a copy as needed.
        """
        rest, ws = self.rest_url, self.ws_url
        api: dict = {key: rest + path for key, path in _REST_API_PATHS.items()}
        api["ws"] = dict.fromkeys(_WS_KEYS, ws)
        api["ws"]["ws-api"] = {
            "spot": f"ws://{self.host}:{self.port}/ws-api/v3",
            "linear": f"ws://{self.host}:{self.port}/ws-fapi/v1",
            "inverse": f"ws://{self.host}:{self.port}/ws-dapi/v1",
        }
        config: dict = {
            "urls": {"api": api},
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "defaultType": "spot",
                "adjustForTimeDifference": False,
            },
        }
        extra = [t for t in self.timeframes if t not in BINANCE_INTERVALS]
        if extra:
            config["timeframes"] = {t: t for t in extra}
        return config

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

    # -- counters ---------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero the counters of :attr:`stats` (the open-connection gauges are kept)."""
        self._call(self.stats.reset)

    # -- hooks for Faults (run on the server thread) ----------------------------------------

    def _drop_connections(self, clean: bool) -> int:
        return 0 if self._server is None else self._server.drop_connections(clean)

    def _make_empty(self, symbol: str, timeframe: str, open_ms: int) -> None:
        replay, tf = self._check(symbol, timeframe)
        replay.make_empty(symbol, tf, open_ms)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "not started"
        return f"LocalExchange({list(self.symbols)}, {list(self.timeframes)}, {where})"
