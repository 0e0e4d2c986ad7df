"""CCXTStore: one exchange session (one exchange, one account), shared by its feeds.

Not a singleton: two stores for two exchanges or two accounts coexist in one cerebro. The
constructor only validates and remembers; the first feed's ``start()`` loads the markets and
measures the clock, and the background loop thread starts only when a threaded or WebSocket
feed needs it.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

import ccxt

from . import departures, notifications, redaction
from .clock import ExchangeClock
from .errors import (
    CapabilityError,
    ConfigurationError,
    UnknownExchangeError,
    UnknownSymbolError,
    choices,
    unknown_keywords,
)
from .notifications import NotificationQueue, StoreNotification
from .rest import call_with_retry
from .retry import Backoff
from .timeframes import Timeframe, resolve

log = logging.getLogger(__name__)

__all__ = ["CCXTStore"]

_SECRET_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")

_TO_BROKER = "a broker parameter here: store.getbroker(currency=...) (docs/broker.md)"

#: Store keywords of the prior plugins (bt-ccxt-store, the cloudQuant fork, Ed Bartosh's fork)
#: that this store does not take, and what to write instead.
_PRIOR_STORE_PARAMS = {
    "currency": f"bt-ccxt-store's and the cloudQuant fork's broker currency; {_TO_BROKER}",
    "use_rate_limiter": (
        "cloudQuant fork; ccxt's own rate limiter is always on here "
        "(config={'enableRateLimit': False} turns it off)"
    ),
    "use_connection_manager": (
        "cloudQuant fork; reconnects and retries are built in (retries, retry_delay, "
        "retry_max_delay here; ws_reconnect_delay on the feed)"
    ),
    "broker_mapping": (
        "bt-ccxt-store's getbroker(broker_mapping=...); not needed: CCXTBroker maps order "
        "types and statuses itself (docs/broker.md)"
    ),
    "exchange_id": "write exchange='<ccxt id>'",
    "exchange_name": "write exchange='<ccxt id>'",
    "testnet": "write sandbox=True",
    "api_key": "credentials go in config={'apiKey': ..., 'secret': ...}",
    "api_secret": "credentials go in config={'apiKey': ..., 'secret': ...}",
}


@functools.cache
def _default_rate_limit(exchange_id: str) -> float:
    """ccxt's ``rateLimit`` (ms between requests of cost 1) for ``exchange_id``."""
    return float(getattr(ccxt, exchange_id)().rateLimit)


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
        running 60x fast passes 60, so waits are scaled: the broker's periods, and ccxt's
        ``rateLimit`` unless ``config`` sets one).
      - ``gc_freeze`` (bool, default True): once every live feed of the cerebro is LIVE,
        collect once and ``gc.freeze()`` what start-up left (ccxt, the markets, backtrader's
        objects), so the collector's full passes during the run walk only what it allocated
        since: 5-9 ms instead of 80-190 ms with 1,000 symbols. Undone when the run ends;
        skipped if the process froze objects itself (:mod:`~backtrader_ccxt.heap`).
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
        gc_freeze: bool = True,
        **unknown,
    ) -> None:
        if unknown:
            raise _unknown_store_keywords(unknown)
        _check_exchange(exchange)
        if config is not None and not isinstance(config, Mapping):
            hint = ""
            if isinstance(config, str):
                hint = (
                    " (bt-ccxt-store's CCXTStore(exchange, currency, config, retries) took the "
                    "currency second; here write CCXTStore(exchange, config={...}, retries=...) "
                    "and give the currency to store.getbroker(currency=...))"
                )
            raise ConfigurationError(
                f"config must be a dict of ccxt constructor options, got "
                f"{type(config).__name__} {config!r}{hint}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"retries must be an integer >= 0, got {retries!r}")
        if not (0 < retry_delay <= retry_max_delay):
            raise ConfigurationError(
                f"need 0 < retry_delay <= retry_max_delay, got {retry_delay!r}, {retry_max_delay!r}"
            )
        if not isinstance(gc_freeze, bool):
            raise ConfigurationError(
                f"gc_freeze must be True or False, got {type(gc_freeze).__name__} {gc_freeze!r}"
            )
        self.exchange_id = exchange
        self.gc_freeze = gc_freeze
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
        # ccxt logs request headers and signed URLs at DEBUG whatever our settings: mask them
        redaction.register(self)
        redaction.install()
        self._notes = NotificationQueue()
        self._lock = threading.RLock()
        self._exchange = None
        self._markets_loaded = False
        self._pro_has: dict | None = None  # ccxt.pro's `has`, read once
        self._manager = None
        self._users = 0
        #: the feeds started on this store (the broker marks positions with their closes)
        self.datas: list = []
        #: what the live machinery did: reconnects, stalls, REST fills/confirmations, ...
        self.stats: Counter = Counter()
        if self.debug:
            logging.getLogger("backtrader_ccxt").setLevel(logging.DEBUG)

    def __repr__(self) -> str:
        return f"CCXTStore(exchange={self.exchange_id!r}, sandbox={self.sandbox})"

    # -- secrets ---------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every credential of this store (and any signature, key or token
        parameter) replaced by ``***``."""
        return redaction.scrub(text, self._secrets)

    def secrets(self) -> tuple[str, ...]:
        """The credential values this store masks (for :mod:`.redaction`)."""
        return self._secrets

    # -- ccxt instances --------------------------------------------------------------------

    def _instance_config(self) -> dict:
        cfg = copy.deepcopy(self._config)
        cfg.setdefault("enableRateLimit", True)
        cfg.pop("verbose", None)
        rate = self.clock.rate
        if rate != 1.0 and "rateLimit" not in cfg:
            # a venue's request limits are per (exchange) minute: on a clock running `rate`
            # times real time, ccxt's spacing between requests shrinks with it, so the weight
            # used per exchange minute is what it is at real speed
            cfg["rateLimit"] = _default_rate_limit(self.exchange_id) / rate
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
                redaction.guard_exceptions(ex, self.redact)
                departures.stamp(ex)
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
        redaction.guard_exceptions(ex, self.redact)
        departures.stamp(ex)
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
        """Load markets and measure the clock once; called by each feed's ``start()``.

        A feed's cerebro gets this store added (``cerebro.addstore``) if it was not, so
        ``notify_store`` hears the store's notifications without more code.
        """
        with self._lock:
            if not self._markets_loaded:
                self._load_markets()
            if data is not None or broker is not None:
                self._users += 1  # only once started: a failed start holds nothing
            if data is not None and all(d is not data for d in self.datas):
                self.datas.append(data)
        env = getattr(data, "_env", None) if data is not None else None
        if env is not None and hasattr(env, "addstore"):
            env.addstore(self)  # a no-op when the user added it already

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
                notify=lambda kind, message: self.notify(kind, message),
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

    def getbroker(self, **kwargs):
        """A :class:`~backtrader_ccxt.broker.CCXTBroker` on this store's account (same params).

        Needs credentials given explicitly in ``config`` (``apiKey`` and ``secret``):
        :class:`~backtrader_ccxt.broker.MissingCredentialsError` otherwise.
        """
        from .broker import CCXTBroker, check_credentials

        check_credentials(self)
        return CCXTBroker(store=self, **kwargs)

    BrokerCls = None  # backtrader's convention; getbroker() builds the broker

    def notify(self, kind: str, message: str, symbols=()) -> StoreNotification:
        """Queue a notification for ``notify_store``. Safe from any thread.

        ``kind`` is one of :data:`~.notifications.KINDS` (``CONNECTION_LOST``,
        ``CONNECTION_RESTORED``, ``STALL``, ``RATE_LIMITED``, ``FATAL``,
        ``RECONNECT_BUDGET_SPENT``); ``symbols`` the feeds affected (empty: all of them).
        The message is redacted here.
        """
        note = notifications.make(kind, self.exchange_id, self.redact(str(message)), symbols)
        self._notes.put(note)
        self.stats[f"notify_{kind.lower()}"] += 1
        return note

    def get_notifications(self) -> list:
        """What happened since the last call, as backtrader's ``(msg, args, kwargs)``
        triples: ``msg`` is a :class:`~.notifications.StoreNotification`. Cerebro calls
        this once per loop and passes each ``msg`` to every strategy's ``notify_store``."""
        return [(note, (), {}) for note in self._notes.drain()]

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


def _check_exchange(exchange) -> None:
    """An :class:`UnknownExchangeError` unless ``exchange`` is a ccxt id."""
    if isinstance(exchange, str) and exchange in ccxt.exchanges:
        return
    if isinstance(exchange, ccxt.Exchange) or (
        isinstance(exchange, type) and issubclass(exchange, ccxt.Exchange)
    ):
        is_class = isinstance(exchange, type)
        ex_id = exchange.__name__ if is_class else (getattr(exchange, "id", None) or "<id>")
        raise UnknownExchangeError(
            f"exchange must be a ccxt id string, got the ccxt {ex_id} "
            f"{'class' if is_class else 'instance'}; pass its id: "
            f"CCXTStore(exchange={ex_id!r}, config={{...}}) with the instance's keys, options "
            "and urls in config (the store builds its own blocking and ccxt.pro instances)"
        )
    text = str(exchange)
    if text.lower() in ccxt.exchanges:
        close = [text.lower()]  # ids are lower case
    else:
        close = difflib.get_close_matches(text.lower(), ccxt.exchanges, n=5, cutoff=0.6)
        close += [e for e in ccxt.exchanges if text and text.lower() in e and e not in close][:3]
    shown = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    kind = "" if isinstance(exchange, str) else f" (a {type(exchange).__name__}, not a str)"
    popular = ("binance", "bybit", "coinbase", "kraken", "okx")
    examples = ", ".join(e for e in popular if e in ccxt.exchanges)
    raise UnknownExchangeError(
        f"unknown exchange {exchange!r}{kind}; {shown}valid choices: the "
        f"{len(ccxt.exchanges)} ids in ccxt.exchanges, e.g. {examples} "
        '(python -c "import ccxt; print(ccxt.exchanges)")'
    )


def _unknown_store_keywords(unknown: Mapping) -> ConfigurationError:
    from .feed import CCXTFeed

    prior = dict(_PRIOR_STORE_PARAMS)
    for name, _ in CCXTFeed.params._getitems():
        prior.setdefault(name, f"a feed parameter: store.getdata(..., {name}=...)")
    prior.setdefault(
        "fetch_ohlcv_params", "a feed parameter: store.getdata(..., fetch_ohlcv_params={...})"
    )
    for name in unknown:
        if name not in prior and _is_ccxt_option(name):
            prior[name] = f"a ccxt option: config={{{name!r}: ...}}"
    valid = [n for n in inspect.signature(CCXTStore).parameters if n != "unknown"]
    return unknown_keywords("CCXTStore", unknown, valid, prior)


def _is_ccxt_option(name: str) -> bool:
    # ccxt's constructor config sets instance attributes that the class declares
    sentinel = object()
    value = getattr(ccxt.Exchange, name, sentinel)
    return value is not sentinel and not callable(value) and not name.startswith("_")
