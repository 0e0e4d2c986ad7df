"""Every candle frame of a ccxt.pro instance, as it arrives: the transport's raw-frame hook.

ccxt.pro hands a ``watch_ohlcv`` caller the rows touched since its last call, only if its
future was waiting when the frame arrived, for one symbol per resolve, and from a cache that
keeps one row per timestamp (a re-sent old frame overwrites the final before it is read).
So the transport does not learn candles from watch results. Instead:

- each watched ``(symbol, timeframe)`` gets a :class:`TapCache` in ``exchange.ohlcvs``
  before the first frame: ccxt's own handler appends each parsed row to it, and the tap
  copies every append, at arrival, to ``on_row`` - whatever the venue, including one whose
  message hashes mix timeframes (Kraken), since the cache is per timeframe;
- where the venue adapter reads a closed flag, ``handle_ohlcv`` is wrapped to read the raw
  frame's flags first, so each append carries the venue's own word on finality.

Watch calls remain, to subscribe and to learn of errors and breaks. This module depends on
ccxt.pro's handler name and on its per-timeframe cache; the venue tests catch a change.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from ccxt.async_support.base.ws.cache import ArrayCache, ArrayCacheByTimestamp

from ..errors import ConfigurationError
from ..venues import VenueAdapter

log = logging.getLogger(__name__)

__all__ = ["TRADES", "FrameTap", "TapCache", "TradeTap", "TradeTapCache"]

#: the "timeframe" of a trade stream's key ``(symbol, TRADES)`` in the transport
TRADES = "trades"

#: ``on_row(symbol, timeframe, row, final)``, called on the loop thread as frames arrive
OnRow = Callable[[str, str, list, "bool | None"], None]

_SERIAL = "_backtrader_ccxt_connection"  # attribute the tap sets on each ccxt client it sees
_serials = itertools.count(1)


class TapCache(ArrayCacheByTimestamp):
    """ccxt's per-(symbol, timeframe) row cache, reporting every append."""

    def __init__(self, max_size: int, tap: FrameTap, symbol: str, timeframe: str) -> None:
        super().__init__(max_size)
        self._tap = tap
        self._symbol = symbol
        self._timeframe = timeframe

    def append(self, item: list) -> None:
        row = list(item)  # ccxt overwrites its rows in place later: copy now
        super().append(item)
        self._tap.appended(self._symbol, self._timeframe, row)


class FrameTap:
    """Installs the hook on one ccxt.pro instance; ``on_row`` receives every candle frame.

    With ``on_heard``, a frame whose rows the venue's flags all mark partial goes to
    ``on_heard(symbol, timeframe)`` instead, *without ccxt parsing it*: the stream core reads
    nothing from a flagged partial but that its stream talks (a candle with a flagged final
    closes only on that final, or from REST). At a close with 1,000 streams the successors'
    first updates arrive with the finals; ccxt's parse of them was a fifth of the loop
    thread's work there.
    """

    def __init__(
        self,
        exchange,
        adapter: VenueAdapter,
        on_row: OnRow,
        rows: int = 10,
        on_heard: Callable[[str, str], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.adapter = adapter
        self.on_row = on_row
        self.on_heard = on_heard
        self.partials_skipped = 0
        self.rows = rows
        self._flags: dict | None = None
        self._client = None  # the client whose candle frame is being handled
        #: which ccxt client carries each (symbol, timeframe), and when each client last
        #: carried a candle frame (monotonic): pings and acks do not count as talking
        self.client_of: dict[tuple[str, str], object] = {}
        self.client_heard: dict[int, float] = {}
        #: per connection serial: the venue's send time of the latest candle frame handled
        #: on it (venues whose adapter reads one), and who waits for it to reach a time
        self.read_until: dict[int, int] = {}
        self._until_waiters: dict[int, list[tuple[int, object]]] = {}
        self.unreadable = 0
        self._wrap()

    def _wrap(self) -> None:
        read = self.adapter.read_flags
        read_event = self.adapter.read_event_ms
        original = getattr(self.exchange, "handle_ohlcv", None)
        if original is None:
            return
        exchange = self.exchange

        def handle_ohlcv(client, message):
            self._client = client
            self.client_heard[id(client)] = time.monotonic()
            if read is not None:
                try:
                    self._flags = flags = read(exchange, client, message)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    self.unreadable += 1
                    log.debug("%s: unreadable candle frame: %s", exchange.id, exc)
                    self._flags = flags = None
                partials = flags and all(v is False for v in flags.values())
                if partials and self.on_heard is not None and self._heard(flags):
                    self._flags = None
                    if read_event is not None:
                        self._read_to(client, message, read_event)
                    self._client = None
                    return
            try:
                original(client, message)
            finally:
                self._flags = None
                if read_event is not None:
                    self._read_to(client, message, read_event)
                self._client = None

        exchange.handle_ohlcv = handle_ohlcv

    def _heard(self, flags: dict) -> bool:
        """A frame of partials only: tell ``on_heard`` of each tapped stream in it; False
        (let ccxt parse it) if one of its streams is not tapped here."""
        keys = {(symbol, timeframe) for symbol, timeframe, _ in flags}
        if not all(self.tapped(s, tf) for s, tf in keys):
            return False
        self.partials_skipped += 1
        for key in keys:
            self.client_of[key] = self._client
            self.on_heard(*key)
        return True

    def appended(self, symbol: str, timeframe: str, row: list) -> None:
        flags = self._flags
        final = flags.get((symbol, timeframe, row[0])) if flags else None
        if self._client is not None:
            self.client_of[(symbol, timeframe)] = self._client
        self.on_row(symbol, timeframe, row, final)

    def _read_to(self, client, message, read_event) -> None:
        """After a frame was handled: its send time is how far its connection has been read
        (a connection delivers in the order the venue sent)."""
        try:
            sent = read_event(message)
        except (KeyError, TypeError, ValueError, AttributeError):
            sent = None
        if sent is None:
            return
        serial = self.connection()
        if serial is None or sent <= self.read_until.get(serial, -1):
            return
        self.read_until[serial] = sent
        waiters = self._until_waiters.get(serial)
        if waiters:
            keep = []
            for until, fut in waiters:
                if until <= sent:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((until, fut))
            self._until_waiters[serial] = keep

    def behind(self, symbol: str, timeframe: str, until_ms: int) -> int | None:
        """The serial of the connection carrying ``(symbol, timeframe)`` if the frames its
        venue sent before ``until_ms`` may not all have been read yet (the last one handled
        was sent earlier); None if they have, or nobody can tell (no send times, no frame yet,
        or that connection was replaced)."""
        client = self.client_of.get((symbol, timeframe))
        serial = getattr(client, _SERIAL, None)
        if serial is None:
            return None
        clients = getattr(self.exchange, "clients", None) or {}
        if clients.get(getattr(client, "url", None)) is not client:
            return None  # closed: its frames are all read, whatever they were
        sent = self.read_until.get(serial)
        if sent is None or sent >= until_ms:
            return None
        return serial

    def when_read(self, serial: int, until_ms: int, fut) -> None:
        """Resolve ``fut`` once a frame sent at or after ``until_ms`` has been handled on the
        connection ``serial`` (the caller keeps its own timeout)."""
        waiters = self._until_waiters.setdefault(serial, [])
        waiters[:] = [(u, f) for u, f in waiters if not f.done()]
        waiters.append((until_ms, fut))

    def connection(self) -> int | None:
        """The serial number of the connection (ccxt client) carrying the frame being handled,
        or None outside a handled frame. ccxt.pro makes a new client for each connection, so
        frames still arriving on a socket that is being replaced keep their own connection's
        number, whenever they are read."""
        client = self._client
        if client is None:
            return None
        serial = getattr(client, _SERIAL, None)
        if serial is None:
            serial = next(_serials)
            try:
                setattr(client, _SERIAL, serial)
            except AttributeError:  # a client that takes no attributes: one number per read
                pass
        return serial

    def watch(self, symbol: str, timeframe: str) -> None:
        """Make sure frames of ``(symbol, timeframe)`` reach ``on_row`` (idempotent)."""
        if self.tapped(symbol, timeframe):
            return
        ohlcvs = self.exchange.ohlcvs
        if ohlcvs is None:
            self.exchange.ohlcvs = ohlcvs = {}
        by_tf = ohlcvs.get(symbol)
        if by_tf is None:
            by_tf = ohlcvs[symbol] = {}
        by_tf[timeframe] = TapCache(self.rows, self, symbol, timeframe)

    def tapped(self, symbol: str, timeframe: str) -> bool:
        by_tf = (self.exchange.ohlcvs or {}).get(symbol) or {}
        cache = by_tf.get(timeframe)
        return isinstance(cache, TapCache) and cache._tap is self

    # -- what the transport calls ------------------------------------------------------------

    multi_capability = "watchOHLCVForSymbols"

    async def watch_call(self, keys: list[tuple[str, str]], multi: bool) -> list:
        """One watch call for ``keys``: ``[(symbol, timeframe, rows), ...]`` it answered."""
        ex = self.exchange
        if multi:
            result = await ex.watch_ohlcv_for_symbols([[s, tf] for s, tf in keys])
            return [(s, tf, rows) for s, d in result.items() for tf, rows in d.items()]
        s, tf = keys[0]
        return [(s, tf, await ex.watch_ohlcv(s, tf))]


class TradeTapCache(ArrayCache):
    """ccxt.pro's per-symbol trade cache, bounded, reporting every append (a copy of the
    fields the package reads). ccxt's own default keeps ``tradesLimit`` (1,000) parsed
    trades per symbol with their raw ``info``; nothing here reads them back, so a handful is
    enough and memory stays flat on a long run."""

    def __init__(self, max_size: int, tap: TradeTap, symbol: str) -> None:
        super().__init__(max_size)
        self._tap = tap
        self._symbol = symbol

    def append(self, item: dict) -> None:
        trade = {k: item.get(k) for k in ("id", "timestamp", "price", "amount", "side")}
        super().append(item)
        self._tap.appended(self._symbol, trade)


class TradeTap:
    """Every public trade a ccxt.pro instance parses, as it arrives: ``on_trade(symbol,
    trade)`` for each, from a :class:`TradeTapCache` put in ``exchange.trades`` before the
    first message (ccxt's handlers of Binance, OKX and Bybit append to the cache they find).

    ``stream_name`` is the one trade stream this instance watches where a venue has two
    (Binance: ``'trade'`` or ``'aggTrade'``). ccxt.pro keys both on one message hash per
    symbol (``trade::BTC/USDT``), so one instance watching both would mix two id sequences
    in one cache: a second name is refused (:class:`~..errors.ConfigurationError`).
    """

    multi_capability = "watchTradesForSymbols"

    def __init__(self, exchange, on_trade, stream_name: str | None = None, rows: int = 10):
        self.exchange = exchange
        self.on_trade = on_trade
        self.rows = rows
        self.stream_name = stream_name
        owner = getattr(exchange, "_backtrader_ccxt_trade_name", stream_name)
        if owner != stream_name:
            raise ConfigurationError(
                f"this ccxt.pro instance already watches {owner!r} trade streams; it must not "
                f"watch {stream_name!r} too (ccxt.pro keys both on one message hash per "
                f"symbol); valid choices: {owner!r}"
            )
        exchange._backtrader_ccxt_trade_name = stream_name
        self.client_of: dict[tuple[str, str], object] = {}
        self.client_heard: dict[int, float] = {}
        self._client = None
        self._wrap()

    def _wrap(self) -> None:
        # learn which client carried each trade (for the transport's watchdog), as FrameTap
        # does for candles; the handler's name differs per venue
        ex = self.exchange
        for name in ("handle_trade", "handle_trades"):
            original = getattr(ex, name, None)
            if original is None:
                continue

            def handler(client, message, _original=original):
                self._client = client
                self.client_heard[id(client)] = time.monotonic()
                try:
                    return _original(client, message)
                finally:
                    self._client = None

            setattr(ex, name, handler)
        # ccxt dispatches through a method table built per call from bound methods
        # (handle_message looks them up by attribute), so the wrappers are what it calls

    def appended(self, symbol: str, trade: dict) -> None:
        if self._client is not None:
            self.client_of[(symbol, TRADES)] = self._client
        self.on_trade(symbol, trade)

    def watch(self, symbol: str, timeframe: str = TRADES) -> None:
        if self.tapped(symbol, timeframe):
            return
        trades = self.exchange.trades
        if trades is None or not isinstance(trades, dict):
            self.exchange.trades = trades = {}
        trades[symbol] = TradeTapCache(self.rows, self, symbol)

    def tapped(self, symbol: str, timeframe: str = TRADES) -> bool:
        cache = (self.exchange.trades or {}).get(symbol)
        return isinstance(cache, TradeTapCache) and cache._tap is self

    def _params(self) -> dict:
        return {} if self.stream_name is None else {"name": self.stream_name}

    async def watch_call(self, keys: list[tuple[str, str]], multi: bool) -> list:
        ex = self.exchange
        symbols = [s for s, _ in keys]
        if multi:
            await ex.watch_trades_for_symbols(symbols, None, None, self._params())
        else:
            await ex.watch_trades(symbols[0], None, None, self._params())
        return []  # trades come through the tap, not from the answer
