"""CCXTStore: one exchange session (one exchange, one account), shared by its feeds.

Not a singleton: two stores for two exchanges or two accounts coexist in one cerebro. The
constructor only validates and remembers; the first feed's ``start()`` loads the markets and
measures the clock, and the background loop thread starts only when a threaded or WebSocket
feed needs it.
"""

from __future__ import annotations

import copy
import difflib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

import ccxt

from .clock import ExchangeClock
from .errors import (
    CapabilityError,
    ConfigurationError,
    UnknownExchangeError,
    UnknownSymbolError,
    choices,
)
from .rest import call_with_retry
from .retry import Backoff
from .timeframes import Timeframe, resolve

log = logging.getLogger(__name__)

__all__ = ["CCXTStore"]

_SECRET_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")


class CCXTStore:
    """Owns the ccxt session(s) for one exchange and account.

    Params:
      - ``exchange`` (str, default ``'binance'``): a ccxt exchange id (``ccxt.exchanges``).
      - ``config`` (dict): passed to every ccxt / ccxt.pro instance the store creates:
        credentials, ``options``, ``timeout``, ``urls`` overrides (e.g. the local exchange).
      - ``sandbox`` (bool, default False): switch every instance to the exchange's testnet.
      - ``retries`` (int, default 5): attempts after the first for a retryable REST failure
        (network, 429, 5xx, timeout, garbled body) before it is reported.
      - ``retry_delay`` / ``retry_max_delay`` (float seconds, default 0.5 / 30): the capped
        exponential backoff between those attempts; a ``Retry-After`` is honoured.
      - ``debug`` (bool, default False): log this package's decisions at DEBUG level.
        ccxt's own ``verbose`` is never switched on (it prints request headers).
      - ``clock`` (callable returning exchange time in ms, default None): replaces the
        exchange clock (measured with ``fetch_time`` at start) - for tests.
      - ``clock_rate`` (float, default 1): exchange ms per real ms of that clock (a test clock
        running 60x fast passes 60, so waits are scaled).
    """

    def __init__(
        self,
        exchange: str = "binance",
        config: Mapping | None = None,
        sandbox: bool = False,
        retries: int = 5,
        debug: bool = False,
        clock: Callable[[], float] | None = None,
        clock_rate: float = 1.0,
        retry_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        if not isinstance(exchange, str) or exchange not in ccxt.exchanges:
            close = difflib.get_close_matches(str(exchange), ccxt.exchanges, n=5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownExchangeError(
                f"unknown exchange {exchange!r}{hint}; valid choices: {choices(ccxt.exchanges, 200)}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise ConfigurationError(
                f"config must be a dict of ccxt constructor options, got {type(config).__name__}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"retries must be an integer >= 0, got {retries!r}")
        if not (0 < retry_delay <= retry_max_delay):
            raise ConfigurationError(
                f"need 0 < retry_delay <= retry_max_delay, got {retry_delay!r}, {retry_max_delay!r}"
            )
        self.exchange_id = exchange
        self._config = copy.deepcopy(dict(config or {}))
        self.sandbox = bool(sandbox)
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.retry_max_delay = float(retry_max_delay)
        self.debug = bool(debug)
        self.clock = ExchangeClock(clock, clock_rate)
        self._secrets = tuple(
            str(v) for k, v in self._config.items() if k in _SECRET_KEYS and v and len(str(v)) >= 4
        )
        self._lock = threading.RLock()
        self._exchange = None
        self._markets_loaded = False
        self._pro_has: dict | None = None  # ccxt.pro's `has`, read once
        self._manager = None
        self._users = 0
        #: what the live machinery did: reconnects, stalls, REST fills/confirmations, ...
        self.stats: Counter = Counter()
        if self.debug:
            logging.getLogger("backtrader_ccxt").setLevel(logging.DEBUG)

    def __repr__(self) -> str:
        return f"CCXTStore(exchange={self.exchange_id!r}, sandbox={self.sandbox})"

    # -- secrets ---------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every credential of this store replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- ccxt instances --------------------------------------------------------------------

    def _instance_config(self) -> dict:
        cfg = copy.deepcopy(self._config)
        cfg.setdefault("enableRateLimit", True)
        cfg.pop("verbose", None)
        return cfg

    def _apply_sandbox(self, ex) -> None:
        if not self.sandbox:
            return
        error = None
        if not (ex.urls or {}).get("test"):
            error = "no test URLs in ccxt"
        else:
            try:
                ex.set_sandbox_mode(True)
            except (ccxt.NotSupported, TypeError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            raise CapabilityError(
                f"exchange {self.exchange_id!r} has no sandbox/testnet ({error}); "
                "valid choices: sandbox=False"
            )

    @property
    def exchange(self):
        """The blocking ccxt instance (created on first use, no I/O)."""
        with self._lock:
            if self._exchange is None:
                ex = getattr(ccxt, self.exchange_id)(self._instance_config())
                self._apply_sandbox(ex)
                self._exchange = ex
            return self._exchange

    def new_async_exchange(self):
        """A new ccxt.pro instance for the loop thread, sharing the loaded markets.

        Call only from the loop thread that will use it (ccxt binds it to that loop).
        """
        import ccxt.pro as ccxtpro

        cls = getattr(ccxtpro, self.exchange_id, None)
        if cls is None:
            import ccxt.async_support as ccxt_async

            cls = getattr(ccxt_async, self.exchange_id)
        cfg = self._instance_config()
        # ccxt.pro keeps 1,000 rows per symbol and timeframe that we never read back (we copy
        # each update as it comes): a few are enough, and memory stays flat with 200 feeds
        cfg.setdefault("options", {}).setdefault("OHLCVLimit", 10)
        ex = cls(cfg)
        self._apply_sandbox(ex)
        if self._markets_loaded:
            ex.set_markets_from_exchange(self.exchange)
        return ex

    def has(self, capability: str, websocket: bool = False) -> bool:
        """Whether the exchange offers ``capability`` (``exchange.has``), in ccxt.pro if asked."""
        if websocket:
            with self._lock:
                if self._pro_has is None:
                    import ccxt.pro as ccxtpro

                    cls = getattr(ccxtpro, self.exchange_id, None)
                    self._pro_has = dict(cls().has) if cls is not None else {}
            return bool(self._pro_has.get(capability))
        return bool(self.exchange.has.get(capability))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, data=None, broker=None) -> None:
        """Load markets and measure the clock once; called by each feed's ``start()``."""
        with self._lock:
            if not self._markets_loaded:
                self._load_markets()
            if data is not None:
                self._users += 1  # only once started: a failed start holds nothing

    def _load_markets(self) -> None:
        ex = self.exchange

        def load() -> None:
            markets = ex.load_markets(reload=True)
            if not markets:
                raise ccxt.BadResponse(f"{ex.id} returned no markets")

        for what, fn in (
            ("loading markets", load),
            ("reading the clock", lambda: self.clock.sync(ex)),
        ):
            call_with_retry(
                ex,
                fn,
                f"{self.exchange_id}: {what}",
                self.retries,
                Backoff(self.retry_delay, self.retry_max_delay),
                self.redact,
            )
        self._markets_loaded = True

    def stop(self, data=None) -> None:
        """Release one feed (or everything when called without ``data``, as cerebro does)."""
        with self._lock:
            if data is not None:
                self._users = max(0, self._users - 1)
                if self._users:
                    return
            manager, self._manager = self._manager, None
            exchange = self._exchange
        if manager is not None:
            manager.stop()
        session = getattr(exchange, "session", None)
        if session is not None:
            session.close()  # the blocking instance's keep-alive sockets

    def getdata(self, **kwargs):
        """A :class:`~backtrader_ccxt.feed.CCXTFeed` on this store (same params)."""
        from .feed import CCXTFeed

        return CCXTFeed(store=self, **kwargs)

    def get_notifications(self) -> list:
        """For ``cerebro.addstore``: this store reports through its feeds, so nothing here."""
        return []

    @property
    def manager(self):
        """The background loop manager (threaded polling, WebSocket); started on first use."""
        from .live.manager import StreamManager

        with self._lock:
            if self._manager is None:
                self._manager = StreamManager(self)
            return self._manager

    # -- validation ------------------------------------------------------------------------

    def check_symbol(self, symbol) -> str:
        """The unified symbol, or :class:`UnknownSymbolError` naming close valid choices."""
        markets = self.exchange.markets or {}
        if isinstance(symbol, str) and symbol in markets:
            return symbol
        if isinstance(symbol, str):
            by_id = self.exchange.markets_by_id or {}
            if symbol in by_id:
                return by_id[symbol][0]["symbol"]
        close = difflib.get_close_matches(str(symbol), list(markets), n=8, cutoff=0.5)
        shown = choices(close) if close else choices(markets, 20)
        raise UnknownSymbolError(
            f"symbol {symbol!r} is not listed on {self.exchange_id}; valid choices include: {shown}"
        )

    def resolve_timeframe(self, timeframe, compression) -> Timeframe:
        return resolve(timeframe, compression, self.exchange.timeframes or None)

    def max_page(self, symbol: str) -> int | None:
        """The exchange's max OHLCV rows per request for this market, if ccxt knows it."""
        ex = self.exchange
        market = (ex.markets or {}).get(symbol, {})
        kind = "spot" if market.get("spot", True) else ("swap" if market.get("swap") else "future")
        feats = (ex.features or {}).get(kind) or {}
        if kind != "spot" and isinstance(feats, dict) and "linear" in feats:
            feats = feats.get("linear" if market.get("linear", True) else "inverse") or {}
        limit = ((feats or {}).get("fetchOHLCV") or {}).get("limit")
        return int(limit) if limit else None
