"""The WebSocket transport: subscribe, watch, reconnect, watchdog. It only emits events.

One :class:`WatchGroup` is one ``watch_ohlcv_for_symbols`` (or ``watch_ohlcv``) call's
worth of streams on one ccxt.pro instance, or, with a :class:`~.tap.TradeTap`, one
``watch_trades_for_symbols`` (``watch_trades``) call's worth of trade streams: the tap makes
the call and brings what arrives; everything below is the same for both. It

- keeps one watch call pending at all times and awaits it directly (no ``wait_for``
  wrapper, which registers ccxt's future a loop turn late: ccxt resolves only a future
  already waiting). Candles do not come from the watch results anyway but from the frame
  tap (:mod:`.tap`), as they arrive; the watch call is what subscribes, and what fails
  when the connection does;
- on a break (``NetworkError``, a raw socket error ccxt passes through, or the watchdog),
  posts :class:`~.events.Broken`, waits a capped exponential backoff with jitter (reset
  once the stream talks again) and watches again, which makes ccxt reconnect and
  resubscribe; the first frame or answer afterwards posts :class:`~.events.Healthy`;
- runs a watchdog beside the watch: a group that heard nothing for ``stall_timeout`` while
  its sockets are silent too is declared dead (a quiet symbol on a socket that still talks
  is not a stall); a connection older than ``max_age`` is refreshed the same way;
- ends with :class:`~.events.Fatal` on an error that retrying cannot fix, or when the
  optional reconnect budget is spent.

Nothing here decides what a candle means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import ccxt

from .. import notifications as kinds
from ..errors import BOUNDED_RETRIES, Verdict, classify
from ..retry import Backoff
from .events import Broken, Fatal, Frame, Healthy, StreamEvent, Trades
from .tap import FrameTap, TradeTap

log = logging.getLogger(__name__)

__all__ = ["TransportSettings", "WatchGroup"]

Key = tuple[str, str]


@dataclass(frozen=True)
class TransportSettings:
    """How a group reconnects and when it gives a connection up (seconds)."""

    reconnect_delay: float = 1.0
    max_reconnect_delay: float = 30.0
    stall_timeout: float = 30.0
    max_age: float | None = None
    reconnections: int | None = None  # consecutive failed attempts allowed; None: forever


class WatchGroup:
    """Watches ``keys`` on ``exchange`` until cancelled; posts events with ``post``.

    ``post(key, event)`` and ``notify(kind, message, symbols)`` run on the loop thread.
    ``now_ms`` is the exchange clock (frames are stamped with it at arrival).
    """

    def __init__(
        self,
        exchange,
        tap: FrameTap | TradeTap,
        keys: list[Key],
        settings: TransportSettings,
        *,
        post: Callable[[Key, StreamEvent], None],
        now_ms: Callable[[], int],
        notify: Callable[[str, str, tuple[str, ...]], None] | None = None,
        redact: Callable[[str], str] = str,
        stats=None,
        start_delay: float = 0.0,
    ) -> None:
        self.exchange = exchange
        self.tap = tap
        self.keys = list(keys)
        self.settings = settings
        self._post = post
        self._now_ms = now_ms
        self._notify = notify or (lambda kind, message, symbols: None)
        self._redact = redact
        self.stats = stats if stats is not None else Counter()
        multi_name = tap.multi_capability  # watchOHLCVForSymbols, watchTradesForSymbols
        self.multi = len(keys) > 1 or bool(exchange.has.get(multi_name))
        if len(keys) > 1 and not exchange.has.get(multi_name):
            raise ValueError(f"several keys in one group need {multi_name}")
        self.epoch = 0
        self.broken = False
        self.up = False  # the first connection has talked
        self.last_heard = time.monotonic()
        self.connected_at = time.monotonic()
        self._kill_reason: str | None = None
        self._backoff = Backoff(settings.reconnect_delay, settings.max_reconnect_delay)
        self._attempts = 0
        self._bounded = 0  # consecutive unclassified venue errors (a bounded budget)
        self.symbols = tuple(dict.fromkeys(s for s, _ in keys))
        self.start_delay = start_delay  # paces the first subscribe messages of many groups

    # -- frames (called by the tap's router, loop thread) ----------------------------------

    def heard(self) -> None:
        """A frame of the group's streams arrived (a flagged partial carries nothing more)."""
        self.last_heard = time.monotonic()
        if self.broken or not self.up:
            self._healthy()

    def on_row(self, key: Key, row: list, final: bool | None) -> None:
        self.heard()
        if final is False:
            # the venue says "partial": nothing the rules use (a flagged candle closes only on
            # its flagged final or from REST); most frames are these, so skip them early
            return
        self._post(key, Frame(row, final, self._now_ms(), self._frame_epoch()))

    def _frame_epoch(self) -> int:
        """The connection a frame came over: the serial of the ccxt client that carried it
        (so a frame read late off a socket being replaced is not taken for the new one's),
        or, for rows the tap did not see, this group's break count, negated so that the two
        never match."""
        serial = self.tap.connection()
        return serial if serial is not None else -1 - self.epoch

    def on_trade(self, key: Key, trade: dict) -> None:
        """One public trade of a trade stream (a :class:`~.tap.TradeTap` key), as it came."""
        self.last_heard = time.monotonic()
        if self.broken or not self.up:
            self._healthy()
        self._post(key, Trades((trade,), self._now_ms(), self.epoch))

    def _healthy(self) -> None:
        if self.up:
            self._notify(kinds.CONNECTION_RESTORED, "stream talks again", self.symbols)
        self.up = True
        self.broken = False
        self._backoff.reset()
        self._attempts = 0
        self._bounded = 0
        self.connected_at = time.monotonic()
        for key in self.keys:
            self._post(key, Healthy(self.epoch))

    # -- the watch loop --------------------------------------------------------------------

    async def run(self) -> None:
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(), name="watchdog")
        try:
            await self._watch_loop()
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _watch_loop(self) -> None:
        for s, tf in self.keys:
            self.tap.watch(s, tf)
        if self.start_delay > 0:
            await asyncio.sleep(self.start_delay)
        while self.keys:
            try:
                await self._watch_once()
                # subscribed and talking: the tap brings every frame, so there is no need to
                # re-arm the watch on each one (it costs a pass over all the group's streams
                # per frame). Wait until the group's own connection fails instead.
                if self._tapped_all():
                    await self._until_connection_fails()
            except ccxt.ExchangeClosedByUser:
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - ccxt passes raw socket errors through
                killed, self._kill_reason = self._kill_reason, None
                reason = killed or self._redact(f"{type(exc).__name__}: {exc}")
                if killed is None and self._fatal(exc, reason):
                    log.error("stream %s failed for good: %s", self._label(), reason)
                    self._notify(kinds.FATAL, reason, self.symbols)
                    self._post_all(Fatal(reason))
                    return
                if not await self._broke(reason):
                    return

    async def _watch_once(self) -> None:
        """One watch call (subscribes, or reconnects and resubscribes after a break)."""
        for s, tf in self.keys:
            self.tap.watch(s, tf)  # (again) before any frame of a new connection
        items = await self.tap.watch_call(self.keys, self.multi)
        self.last_heard = time.monotonic()
        if self.broken or not self.up:
            self._healthy()
        self._fallback(items)

    def _current_clients(self) -> dict[int, object]:
        """The live ccxt clients that carried a frame of this group (a client that failed
        is gone from ``exchange.clients``; ccxt opens a new one on the next watch)."""
        live = {id(c) for c in (getattr(self.exchange, "clients", None) or {}).values()}
        out = {}
        for key in self.keys:
            client = self.tap.client_of.get(key)
            if client is not None and id(client) in live and not client.closed():
                out[id(client)] = client
        return out

    def _tapped_all(self) -> bool:
        tapped = all(self.tap.tapped(s, tf) for s, tf in self.keys)
        return tapped and bool(self._current_clients())

    async def _until_connection_fails(self) -> None:
        """Wait on a future of our own in each client carrying the group's streams: ccxt
        rejects every pending future of a client when its connection fails or closes."""
        clients = self._current_clients()
        loop = asyncio.get_running_loop()
        failed: asyncio.Future = loop.create_future()

        def relay(fut) -> None:
            if failed.done():
                return
            if fut.cancelled():
                failed.set_exception(ccxt.NetworkError("connection closed"))
            elif fut.exception() is not None:
                failed.set_exception(fut.exception())
            else:
                failed.set_exception(ccxt.NetworkError("connection ended"))

        watched = []
        for client in clients.values():
            if client.closed():
                raise ccxt.NetworkError("connection closed")
            fut = client.future(f"backtrader-ccxt:{id(self)}")
            fut.add_done_callback(relay)
            watched.append(fut)
        try:
            await failed
        finally:
            for fut in watched:
                fut.remove_done_callback(relay)

    def _fatal(self, exc: BaseException, reason: str) -> bool:
        """Whether retrying cannot help (errors.classify decides; an unclassified venue
        error gets a bounded number of attempts). A fatal error that names some of the
        group's markets ends those streams only; one that names none of them may belong to
        another watch call on the same connection (ccxt rejects every future of a client on
        an error without an id), so it gets the bounded attempts."""
        verdict = classify(exc, self.exchange.id)
        if verdict is Verdict.FATAL and len(self.keys) > 1:
            named = [k for k in self.keys if self._market_id(k[0]) in reason]
            if named and len(named) < len(self.keys):
                for key in named:
                    self._post(key, Fatal(reason))
                    self.keys.remove(key)
                self._notify(kinds.FATAL, reason, tuple(dict.fromkeys(s for s, _ in named)))
                return False
            if not named:
                verdict = Verdict.RETRY_BOUNDED
        if verdict is Verdict.RETRY_BOUNDED:
            self._bounded += 1
            return self._bounded > BOUNDED_RETRIES
        return verdict is Verdict.FATAL

    def _market_id(self, symbol: str) -> str:
        market = (self.exchange.markets or {}).get(symbol) or {}
        return str(market.get("id") or symbol)

    def _fallback(self, items) -> None:
        """Rows from a watch answer for a stream the tap does not see (ccxt replaced its
        cache): re-tap it, and pass the rows on, timed now."""
        for s, tf, rows in items:
            key = (s, tf)
            if key not in self.keys or self.tap.tapped(s, tf):
                continue
            self.stats["stream_untapped"] += 1
            self.tap.watch(s, tf)
            now = self._now_ms()
            for row in rows:
                self._post(key, Frame(list(row), None, now, -1 - self.epoch))

    async def _broke(self, reason: str) -> bool:
        """Report a break, then wait before the next attempt. False: give up."""
        if not self.broken:
            self.broken = True
            self.stats["disconnects"] += 1
            log.warning("stream %s lost: %s", self._label(), reason)
            self._notify(kinds.CONNECTION_LOST, reason, self.symbols)
            self._post_all(Broken(reason))
        self.epoch += 1
        self._attempts += 1
        budget = self.settings.reconnections
        if budget is not None and self._attempts > budget:
            why = f"reconnect budget spent ({budget} attempts): {reason}"
            log.error("stream %s: %s", self._label(), why)
            self._notify(kinds.RECONNECT_BUDGET_SPENT, why, self.symbols)
            self._post_all(Fatal(why))
            return False
        self.stats["reconnects"] += 1
        await asyncio.sleep(self._backoff.next_delay())
        return True

    # -- the watchdog ----------------------------------------------------------------------

    async def _watchdog(self) -> None:
        s = self.settings
        period = max(0.05, min(1.0, s.stall_timeout / 4))
        while True:
            await asyncio.sleep(period)
            if self.broken:
                continue
            now = time.monotonic()
            if now - self.last_heard > s.stall_timeout and not self._clients_talk(now):
                self.stats["stalls"] += 1
                reason = f"no message for {s.stall_timeout:.1f}s (stalled)"
                self._notify(kinds.STALL, reason, self.symbols)
                self._kill(reason)
            elif s.max_age is not None and now - self.connected_at > s.max_age:
                self.stats["connection_refreshes"] += 1
                self._kill(f"connection older than {s.max_age:.0f}s: refreshed")

    def _clients_talk(self, now: float) -> bool:
        """Whether a connection carrying this group still brings candle frames (of other
        streams: a quiet symbol is not a stall). Pings, pongs and acks do not count: a
        socket that only answers pings while its subscriptions went silent is stalled."""
        window = self.settings.stall_timeout
        for key in self.keys:
            client = self.tap.client_of.get(key)
            if client is None or client.closed():
                continue
            heard = self.tap.client_heard.get(id(client))
            if heard is not None and now - heard < window:
                return True
        return False

    def _kill(self, reason: str) -> None:
        """Treat the instance's sockets as dead, as a network drop would: the pending watch
        fails and the loop reconnects."""
        self._kill_reason = reason
        self.connected_at = time.monotonic()
        for client in list(getattr(self.exchange, "clients", {}).values()):
            client.on_error(ccxt.NetworkError(reason))

    # -- helpers ---------------------------------------------------------------------------

    def _post_all(self, event: StreamEvent) -> None:
        for key in self.keys:
            self._post(key, event)

    def _label(self) -> str:
        shown = ", ".join(self.symbols[:5])
        more = f" and {len(self.symbols) - 5} more" if len(self.symbols) > 5 else ""
        return f"{self.exchange.id} [{shown}{more}]"
