"""The store's background manager: the thin driver of threaded polling and WebSocket feeds.

The boundary: backtrader's thread calls :meth:`StreamManager.subscribe` and reads a
:class:`QueueSource` (a queue of immutable :class:`~..bars.Bar` / :class:`~..bars.Status`
items, guarded by the :class:`Doorbell` the feeds of one cerebro share); everything else runs
on the loop thread, which owns the ccxt.pro instance(s). Nothing else crosses.

Here only I/O is driven; the rules live elsewhere. A threaded feed runs a
:class:`~.polling.PollingMachine`; a WebSocket feed runs a
:class:`~.streammachine.StreamMachine`, fed by the transport (:mod:`.transport`: watch
groups, reconnects, watchdog) through the frame tap (:mod:`.tap`) and by the REST pages it
asks for. Per feed, one worker task serialises everything that can emit a bar.

Tick feeds (``timeframe=bt.TimeFrame.Ticks``) are the same two kinds over trades: a threaded
one runs a :class:`~.tradepolling.TradePollingMachine`, a WebSocket one a
:class:`~.tradestream.TradeStreamMachine` fed by trade watch groups (the same
:class:`~.transport.WatchGroup` with a :class:`~.tap.TradeTap`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from ..bars import Bar, Status
from ..errors import ExchangeRequestError, FatalExchangeError
from ..paging import Page
from ..rest import RestTarget, call_with_retry_async, fetch_page_async
from ..retry import Backoff
from ..spec import FeedSpec
from ..sync import PerCerebro
from ..venues import VenueAdapter, adapter_for
from .events import StreamEvent
from .loopthread import LoopThread
from .polling import PollingMachine
from .streammachine import FOREVER, FinalLag, StreamMachine
from .tap import TRADES, FrameTap, TradeTap
from .tradepolling import TradePollingMachine, TradeRequest, TradeSpec, trade_context, trade_page
from .tradestream import TradeStreamMachine
from .transport import TransportSettings, WatchGroup

log = logging.getLogger(__name__)

__all__ = ["Doorbell", "QueueSource", "StreamManager", "doorbell_for"]

_YIELDS_BEFORE_REST = 3  # loop turns a clock-woken stream worker gives ccxt's readers first
_READ_WAIT_MS = 5000  # a connection read nothing for this (a quarter bar, at least 1 s): quiet
#: subscription kinds: candles by stream or poll, ticks by stream or poll
KINDS = ("stream", "poll", "tickstream", "tickpoll")


class Doorbell:
    """The thread boundary of the feeds of one cerebro: their queues and one condition.

    The loop thread rings it with every item it queues for any of them. Two rules use it, on
    backtrader's thread:

    * a feed that waits in ``_load`` for its own next bar stops waiting for it alone as soon
      as a sibling has one queued, and waits for the burst below instead: its own bar, if it
      is part of the burst, comes in the same turn, else in a later one (without it the first
      feed of a turn waits out its ``qcheck``, 0.5 s, while the bars of the others, already
      here, wait behind it);
    * while a burst of bars is arriving (the closes of several symbols, one frame after
      another) a turn waits for it to end: until every candle feed has an item, no bar came
      for a quiet time that grows with the feeds (5 ms for a few, 20 ms from 40), or
      ``limit`` (:attr:`LIMIT`) passed (:meth:`settle`). One turn then delivers
      the burst, instead of a turn per few bars, each a pass of backtrader over every feed,
      taking the interpreter from the loop thread that is still reading the rest.

    ``queued`` counts the items in the members' queues that their feeds have not taken,
    ``filled`` the candle feeds whose queue holds one; they and the queues are guarded by
    ``cond``'s lock. Tick feeds count in ``queued`` only: trades are a stream, not bursts.
    """

    QUIET = 0.02  # s without a new bar that ends a burst (at most; see QUIET_PER_FEED)
    #: the quiet that ends a burst grows with the feeds (parsing a frame takes ~0.1 ms, so a
    #: burst of N closes lasts ~0.1 N ms): 0.5 ms a candle feed, from QUIET_MIN to QUIET
    QUIET_PER_FEED = 0.0005
    QUIET_MIN = 0.005
    LIMIT = 0.25  # s: the longest a burst holds a turn back

    __slots__ = (
        "cond", "queued", "members", "filled", "rung_at", "quiet", "quiet_min", "limit",
        "_settling", "__weakref__",
    )  # fmt: skip

    def __init__(
        self, quiet: float = QUIET, limit: float = LIMIT, quiet_min: float = QUIET_MIN
    ) -> None:
        self.quiet, self.limit, self.quiet_min = quiet, limit, quiet_min
        self.cond = threading.Condition(threading.Lock())
        self.queued = 0
        self.members = 0  # candle feeds reading
        self.filled = 0
        self.rung_at = float("-inf")  # time.monotonic() the last candle item was queued
        self._settling = False

    def _rang(self, candle: bool, was_empty: bool) -> None:
        # under cond, loop thread: an item was queued
        self.queued += 1
        if candle:
            self.rung_at = time.monotonic()
            self.filled += was_empty
        if not self._settling or self.filled >= self.members:
            self.cond.notify_all()

    def settle(self) -> None:
        """Wait while a burst of bars is arriving (see the class); at once if none is."""
        with self.cond:
            self._settle()

    def _settle(self) -> None:
        # under cond (released while waiting)
        if self.members < 2:
            return
        quiet = min(self.quiet, max(self.quiet_min, self.QUIET_PER_FEED * self.members))
        deadline = time.monotonic() + self.limit
        self._settling = True
        try:
            while self.filled < self.members:
                now = time.monotonic()
                quiet_left = self.rung_at + quiet - now
                if quiet_left <= 0 or now >= deadline:
                    return
                self.cond.wait(min(quiet_left, deadline - now))
        finally:
            self._settling = False


#: the :class:`Doorbell` of a cerebro
doorbell_for = PerCerebro(Doorbell)


class _Subscription:
    """One feed's subscription. ``out`` (under ``bell.cond``) is the only object both threads
    touch."""

    def __init__(self, spec: FeedSpec | TradeSpec, kind: str, bell: Doorbell | None = None) -> None:
        self.spec = spec
        self.bell = bell if bell is not None else Doorbell()
        self.closed = False  # the feed stopped reading: nothing more is queued
        self.kind = kind
        self.ticks = kind.startswith("tick")
        self.streamed = kind in ("stream", "tickstream")
        self.key = (spec.symbol, TRADES if self.ticks else spec.tf.ccxt)
        self.out: deque = deque()
        self.machine: StreamMachine | TradeStreamMachine | None = None  # stream feeds
        self.waiter: asyncio.Future | None = None  # the stream worker's wait, if waiting
        self.last_open_ms: int | None = None
        self.task: asyncio.Task | None = None
        self.finished = False
        self.read_wait_for: int | None = None  # the due time the worker last waited to read

    def emit(self, item: Bar | Status) -> bool:
        if isinstance(item, Bar) and not self.ticks:  # ticks share ms: gated by trade id
            if self.last_open_ms is not None and item.open_ms <= self.last_open_ms:
                return False
            self.last_open_ms = item.open_ms
        bell = self.bell
        with bell.cond:
            if self.closed:
                return False
            out = self.out
            out.append(item)
            bell._rang(not self.ticks, len(out) == 1)
        return True

    def join(self) -> None:
        """The feed reads from now on (backtrader's thread)."""
        if not self.ticks:
            with self.bell.cond:
                self.bell.members += 1

    def take(self, into: deque) -> None:
        """Move everything queued to ``into``, in order (backtrader's thread, under
        ``bell.cond``)."""
        out = self.out
        if out:
            into.extend(out)
            bell = self.bell
            bell.queued -= len(out)
            bell.filled -= not self.ticks
            out.clear()

    def close(self) -> None:
        """The feed reads no more (backtrader's thread): drop what it left in the queue."""
        bell = self.bell
        with bell.cond:
            if self.closed:
                return
            self.closed = True
            self.take(deque())
            bell.members -= not self.ticks

    def apply(self, event: StreamEvent) -> None:
        """Hand a stream event to the feed's machine at once (loop thread, often inside
        ccxt's message handler: no task switch per frame), and wake the worker if the
        machine now wants REST."""
        m = self.machine
        if m is None or self.finished:
            return
        try:
            m.on_event(event)
        except Exception as exc:  # noqa: BLE001 - never into ccxt's handler; the feed ends
            log.error("%s: stream machine failed", self.spec.label, exc_info=True)
            self.finished = True
            self.emit(Status("DISCONNECTED", f"internal error: {type(exc).__name__}: {exc}", True))
            self.wake()
            return
        while m.outbox:
            self.emit(m.outbox.popleft())
        if m.wants_io or m.done:
            self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class QueueSource:
    """The feed's end of a subscription on the manager."""

    def __init__(self, manager: StreamManager, sub: _Subscription) -> None:
        self._manager = manager
        self._sub = sub
        self._ready: deque = deque()  # taken from the queue in one go, in order
        self.done = False

    def start(self) -> None:
        pass

    def pending(self) -> int:
        # no lock: cerebro asks this of every data on every turn, while the loop thread puts
        # a tick per trade (len of a deque is one atomic read)
        return len(self._ready) + len(self._sub.out)

    def idle(self) -> bool:
        """Nothing to read now, and nothing to start (a ``get(0)`` would return None)."""
        return not self._ready and not self._sub.out and not self._manager._pending

    def get(self, timeout: float | None) -> Bar | Status | None:
        """The next item; else wait for one at most ``timeout`` seconds (None: for ever), but
        with a timeout only while no sibling on the same :class:`Doorbell` has one queued."""
        ready = self._ready
        if not ready:
            self._manager.activate()
            bell = self._sub.bell
            sub = self._sub
            with bell.cond:
                sub.take(ready)
                if not ready and timeout != 0:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while not ready and (timeout is None or bell.queued == 0):
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        bell.cond.wait(left)
                        sub.take(ready)
                    if not ready and bell.queued:
                        # woken by a sibling's bar: let its burst arrive, for one turn to take
                        bell._settle()
                        sub.take(ready)
            if not ready:
                return None
        item = ready.popleft()
        if isinstance(item, Status) and (item.code == "DISCONNECTED" or item.fatal):
            self.done = True
        return item

    def stop(self) -> None:
        self._sub.close()
        self._manager.unsubscribe(self._sub)


class StreamManager:
    """Runs subscriptions on the store's loop thread. Created by ``store.manager``."""

    def __init__(self, store) -> None:
        self._store = store
        self._thread = LoopThread(f"backtrader-ccxt-{store.exchange_id}")
        self._lock = threading.Lock()
        self._pending: list[_Subscription] = []
        self._stopped = False
        self.adapter: VenueAdapter = adapter_for(store.exchange_id)
        # loop-thread state
        self._exchange = None  # REST and the first WebSocket lane
        self._lanes: list[tuple[object, FrameTap]] = []  # (ccxt.pro instance, its tap)
        self._trade_taps: dict[int, TradeTap] = {}  # lane -> its trade tap
        self._lane_keys: list[set[tuple[str, str]]] = []
        self._routes: dict[tuple[str, str], list[_Subscription]] = {}
        self._groups: dict[tuple[str, str], WatchGroup] = {}
        self._tasks: set[asyncio.Task] = set()
        self._final_lag = FinalLag()  # how late finals arrive lately, for all the store's feeds
        self._closers: list = []  # async callables run first at shutdown (the broker's driver)
        self.stats = store.stats

    # -- backtrader thread -----------------------------------------------------------------

    def subscribe(
        self, spec: FeedSpec | TradeSpec, kind: str, bell: Doorbell | None = None
    ) -> QueueSource:
        """Register a feed; it starts on the first ``get()`` of any feed (batching them).
        ``bell``: the :class:`Doorbell` it shares with the other feeds of its cerebro."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        with self._lock:
            if self._stopped:
                raise RuntimeError("the store's stream manager was stopped")
            sub = _Subscription(spec, kind, bell)
            self._pending.append(sub)
        sub.join()
        return QueueSource(self, sub)

    def activate(self) -> None:
        """Start every pending subscription in one batch (one subscribe message where the
        exchange can multiplex). Cheap when there is nothing pending."""
        if not self._pending:
            return
        with self._lock:
            batch, self._pending = self._pending, []
            if not batch or self._stopped:
                return
            self._thread.start()  # here, not at subscribe: a start() that fails leaks nothing
            fut = self._thread.submit(self._activate(batch))
        fut.result()

    def unsubscribe(self, sub: _Subscription) -> None:
        with self._lock:
            if sub in self._pending:
                self._pending.remove(sub)
                return
            if self._stopped or not self._thread.running:
                return
        self._thread.call_soon(self._drop, sub)

    def submit(self, coro):
        """Run ``coro`` on the store's loop thread (started if need be); a
        ``concurrent.futures.Future``. For the broker's order driver."""
        with self._lock:
            if self._stopped:
                coro.close()
                raise RuntimeError("the store's stream manager was stopped")
            self._thread.start()
            return self._thread.submit(coro)

    def add_closer(self, closer) -> None:
        """``await closer()`` runs on the loop at shutdown, before the feeds' tasks end."""
        self._closers.append(closer)

    def stop(self, timeout: float = 2.0) -> bool:
        """Close every task and ccxt instance and join the thread (within ``timeout``)."""
        with self._lock:
            self._stopped = True
            self._pending = []
        return self._thread.stop(on_stop=self._shutdown, timeout=timeout)

    # -- loop thread: lifecycle ------------------------------------------------------------

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _rest_exchange(self):
        if self._exchange is None:
            self._exchange = self._store.new_async_exchange()
        return self._exchange

    def _lane(self, index: int):
        """The ``index``-th ccxt.pro instance with its frame tap (0 is the REST instance)."""
        while len(self._lanes) <= index:
            ex = self._rest_exchange() if not self._lanes else self._store.new_async_exchange()
            if self.adapter.ws_timeframes:
                # e.g. OKX: its WebSocket days and months are Hong Kong time unless asked for
                # the UTC channels, while its REST candles (and ours) are UTC
                ex.timeframes = {**(ex.timeframes or {}), **self.adapter.ws_timeframes}
            tap = FrameTap(ex, self.adapter, self._on_row, on_heard=self._on_heard)
            self._lanes.append((ex, tap))
            self._lane_keys.append(set())
        return self._lanes[index]

    async def _activate(self, batch: list[_Subscription]) -> None:
        self._rest_exchange()
        new_keys: list[tuple[str, str]] = []
        clock = self._store.clock
        for sub in batch:
            if sub.kind == "tickstream":
                sub.machine = TradeStreamMachine(
                    sub.spec,
                    stream_first_ms=int(min(3.0, sub.spec.stall_timeout) * 1000),
                    stats=self.stats,
                )
            if sub.kind == "stream":
                sub.machine = StreamMachine(
                    sub.spec,
                    final_lag_ms=self.adapter.final_lag_ms,
                    margin_ms=clock.margin_ms,
                    stats=self.stats,
                    # backfill once the stream talks, so history meets its first candle
                    stream_first_ms=int(min(3.0, sub.spec.stall_timeout) * 1000),
                    final_lag=self._final_lag,
                )
            worker = {
                "poll": self._poll_worker,
                "stream": self._stream_worker,
                "tickpoll": self._tick_poll_worker,
                "tickstream": self._stream_worker,
            }[sub.kind](sub)
            if sub.streamed:
                if sub.key not in self._routes:
                    self._routes[sub.key] = []
                    new_keys.append(sub.key)
                self._routes[sub.key].append(sub)
            sub.task = self._spawn(self._guard(sub, worker), sub.spec.label)
        if new_keys:
            first_spec = {}
            for sub in batch:
                if sub.streamed:
                    first_spec.setdefault(sub.key, sub.spec)
            self._start_groups([(key, first_spec[key]) for key in new_keys])

    def _start_groups(self, keyed: list[tuple[tuple[str, str], FeedSpec | TradeSpec]]) -> None:
        """Split new streams over watch calls. One call carries streams of one lane (Kraken:
        one timeframe of a symbol per connection; Binance: at most ``streams_per_instance``
        on an instance, whose watch calls share one connection), one market kind (a venue's
        spot and swap streams live behind different URLs: ccxt refuses to mix them in one
        call) and one set of reconnect settings, at most ``streams_per_watch`` of them."""
        adapter = self.adapter
        markets = self._rest_exchange().markets or {}
        buckets: dict[tuple, list[tuple[str, str]]] = {}
        for key, spec in keyed:
            lane = 0
            cap = adapter.streams_per_instance
            while (
                adapter.one_timeframe_per_connection
                and any(k[0] == key[0] for k in self._lane_keys_of(lane))
            ) or (cap is not None and len(self._lane_keys_of(lane)) >= cap):
                lane += 1
            self._lane(lane)
            self._lane_keys[lane].add(key)
            m = markets.get(key[0]) or {}
            kind = (m.get("type"), m.get("linear"), m.get("inverse"), m.get("settle"))
            settings = TransportSettings(
                reconnect_delay=spec.reconnect_delay,
                max_reconnect_delay=spec.max_reconnect_delay,
                stall_timeout=spec.stall_timeout,
                max_age=spec.max_connection_age,
                reconnections=spec.reconnections,
            )
            trades = getattr(spec, "stream_name", "") if key[1] == TRADES else False
            buckets.setdefault((lane, kind, settings, trades), []).append(key)
        store = self._store
        paced: dict[int, int] = {}  # watch calls started per lane, for the subscribe pacing
        for (lane, _kind, settings, trades), bucket in buckets.items():
            ex, tap = self._lanes[lane]
            if trades is not False:
                tap = self._trade_tap(lane, trades)
            multi = bool(ex.has.get(tap.multi_capability))
            size = max(1, adapter.streams_per_watch) if multi else 1
            for i in range(0, len(bucket), size):
                group_keys = bucket[i : i + size]
                n = paced.get(lane, 0)
                paced[lane] = n + 1
                group = WatchGroup(
                    ex,
                    tap,
                    group_keys,
                    settings,
                    post=self._post,
                    now_ms=store.clock.now_ms,
                    notify=store.notify,
                    redact=store.redact,
                    stats=self.stats,
                    start_delay=n * adapter.subscribe_interval,
                )
                for key in group_keys:
                    self._groups[key] = group
                self._spawn(self._guard_group(group), f"watch {len(group_keys)} streams")

    def _trade_tap(self, lane: int, stream_name: str | None) -> TradeTap:
        tap = self._trade_taps.get(lane)
        if tap is None:
            ex, _ = self._lanes[lane]
            tap = self._trade_taps[lane] = TradeTap(ex, self._on_trade, stream_name)
        elif tap.stream_name != stream_name:
            TradeTap(tap.exchange, self._on_trade, stream_name)  # raises, naming both
        return tap

    def _lane_keys_of(self, lane: int) -> set[tuple[str, str]]:
        return self._lane_keys[lane] if lane < len(self._lane_keys) else set()

    def _drop(self, sub: _Subscription) -> None:
        sub.finished = True
        if isinstance(sub.machine, StreamMachine):
            sub.machine.stop()  # no longer one of the feeds sharing the final-lag estimate
        if sub.task is not None:
            sub.task.cancel()
        subs = self._routes.get(sub.key)
        if subs and sub in subs:
            subs.remove(sub)

    async def _shutdown(self) -> None:
        closers, self._closers = self._closers, []
        for closer in closers:
            try:
                await closer()
            except Exception:  # noqa: BLE001 - a failing close must not block the stop
                log.exception("error while closing the order driver")
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        instances = [ex for ex, _ in self._lanes] or (
            [self._exchange] if self._exchange is not None else []
        )
        self._lanes = []
        self._exchange = None
        for ex in instances:
            await ex.close()

    def _target(self, spec: FeedSpec) -> RestTarget:
        store = self._store
        return RestTarget(
            symbol=spec.symbol,
            tf=spec.tf,
            retries=store.retries,
            backoff=Backoff(store.retry_delay, store.retry_max_delay),
            redact=store.redact,
            params=dict(spec.ohlcv_params),
            notify=store.notify,
            stats=store.stats,
        )

    async def _guard(self, sub: _Subscription, coro) -> None:
        """Run a worker; whatever ends it becomes the feed's last status."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except FatalExchangeError as exc:
            sub.emit(Status("DISCONNECTED", str(exc), fatal=True))
        except Exception as exc:  # noqa: BLE001 - reported to the feed, never lost
            reason = self._store.redact(f"internal error: {type(exc).__name__}: {exc}")
            log.error("%s: worker failed: %s", sub.spec.label, reason, exc_info=True)
            sub.emit(Status("DISCONNECTED", reason, True))
        finally:
            sub.finished = True

    async def _guard_group(self, group: WatchGroup) -> None:
        """A watcher that ends unexpectedly takes its feeds down loudly, never silently."""
        from .events import Fatal

        keys = list(group.keys)
        try:
            await group.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the feeds
            reason = self._store.redact(f"stream watcher failed: {type(exc).__name__}: {exc}")
            log.error("%s", reason, exc_info=True)
            for key in group.keys:
                self._post(key, Fatal(reason))
        # the group ended (fatal, or its budget spent): its feeds ended with it; a feed that
        # subscribes to one of its streams later gets a new group
        for key in keys:
            if self._groups.get(key) is group:
                del self._groups[key]
                self._routes.pop(key, None)
                for lane_keys in self._lane_keys:
                    lane_keys.discard(key)

    # -- loop thread: routing --------------------------------------------------------------

    def _on_row(self, symbol: str, timeframe: str, row: list, final: bool | None) -> None:
        """The frame tap's callback (inside ccxt's message handler): hand to the group."""
        group = self._groups.get((symbol, timeframe))
        if group is not None:
            group.on_row((symbol, timeframe), row, final)

    def _on_heard(self, symbol: str, timeframe: str) -> None:
        """The frame tap's callback for a frame of partials (ccxt did not parse it)."""
        group = self._groups.get((symbol, timeframe))
        if group is not None:
            group.heard()

    def _on_trade(self, symbol: str, trade: dict) -> None:
        """The trade tap's callback (inside ccxt's message handler)."""
        key = (symbol, TRADES)
        group = self._groups.get(key)
        if group is not None:
            group.on_trade(key, trade)

    def _post(self, key: tuple[str, str], event: StreamEvent) -> None:
        for sub in self._routes.get(key, ()):
            sub.apply(event)

    # -- loop thread: workers --------------------------------------------------------------

    async def _poll_worker(self, sub: _Subscription) -> None:
        """The threaded candle feed: :class:`PollingMachine` on the loop."""
        machine = PollingMachine(sub.spec)
        target = self._target(sub.spec)
        clock = self._store.clock
        exchange = self._rest_exchange()

        async def fetch(page: Page, now: int) -> None:
            self.stats["rest_calls"] += 1
            await _fetch(exchange, target, page, machine, clock, now)

        await self._drive_poller(sub, machine, Page, fetch)

    async def _tick_poll_worker(self, sub: _Subscription) -> None:
        """The threaded tick feed: :class:`TradePollingMachine` on the loop."""
        machine = TradePollingMachine(sub.spec, self.stats)
        exchange = self._rest_exchange()

        async def fetch(request: TradeRequest, now: int) -> None:
            await self._fetch_trades(exchange, sub.spec, request, machine, now)

        await self._drive_poller(sub, machine, TradeRequest, fetch)

    async def _drive_poller(self, sub: _Subscription, machine, request_type, fetch) -> None:
        """Run a polling machine: do the requests it asks for, sleep until the times it
        names, post what it produces, until it is finished."""
        clock = self._store.clock
        while True:
            while machine.outbox:
                sub.emit(machine.outbox.popleft())
            now = clock.safe_now_ms()
            action = machine.next_action(now)
            if action is None:
                while machine.outbox:
                    sub.emit(machine.outbox.popleft())
                return
            if isinstance(action, request_type):
                await fetch(action, now)
            else:
                await asyncio.sleep(clock.seconds_until(action + clock.margin_ms))

    async def _fetch_trades(self, exchange, spec, req: TradeRequest, machine, asked_ms) -> None:
        store = self._store
        self.stats["rest_calls"] += 1

        async def call() -> list:
            return trade_page(
                await exchange.fetch_trades(spec.symbol, req.since_ms, req.limit, req.params())
            )

        def notify(kind: str, message: str) -> None:
            store.notify(kind, message, (spec.symbol,))

        try:
            rows = await call_with_retry_async(
                exchange,
                call,
                trade_context(req, spec.symbol),
                store.retries,
                Backoff(store.retry_delay, store.retry_max_delay),
                store.redact,
                notify,
            )
        except ExchangeRequestError as exc:
            machine.on_failure(exc, store.clock.now_ms())
            return
        machine.on_trades(rows, asked_ms)

    async def _stream_worker(self, sub: _Subscription) -> None:
        """Do the REST walks and timers the feed's machine asks for; events reach the
        machine directly (:meth:`_Subscription.apply`)."""
        clock = self._store.clock
        machine = sub.machine
        assert machine is not None
        target = None if sub.ticks else self._target(sub.spec)
        exchange = self._rest_exchange()
        loop = asyncio.get_running_loop()
        while not sub.finished:
            now = clock.safe_now_ms()
            action = machine.next_action(now)
            while machine.outbox:
                sub.emit(machine.outbox.popleft())
            if action is None:
                return
            if isinstance(action, Page):
                await _fetch(exchange, target, action, machine, clock, now)
                continue
            if isinstance(action, TradeRequest):
                await self._fetch_trades(exchange, sub.spec, action, machine, now)
                continue
            waiter = sub.waiter = loop.create_future()
            timer = None
            if action != FOREVER:
                delay = clock.seconds_until(action + clock.margin_ms)
                timer = loop.call_later(delay, sub.wake)
            try:
                await waiter
            finally:
                sub.waiter = None
                if timer is not None:
                    timer.cancel()
            if timer is not None and not machine.wants_io:
                # woken by the clock, not by an event: frames that arrived meanwhile may still
                # sit unread in the sockets when the loop is busy (1,000 finals land at once at
                # every close). Let the loop read them before asking REST for what the stream
                # may already have brought.
                await self._read_before_confirming(sub, machine, loop)
                for _ in range(_YIELDS_BEFORE_REST):
                    await asyncio.sleep(0)

    async def _read_before_confirming(self, sub: _Subscription, machine, loop) -> None:
        """Before a due-time confirmation: if the venue stamps its frames and the feed's
        connection has not yet been read up to the due time, wait until it has (or an
        event wakes the worker, or ``_READ_WAIT`` of a bar passes). A loop that reads a
        final late would read a REST answer just as late: the confirmation cannot win, and
        1,000 of them at every close are what kept a busy store behind."""
        if not hasattr(machine, "due_ms"):
            return  # a tick feed's machine: no due-time confirmations
        clock = self._store.clock
        due = machine.due_ms()
        if (
            machine.phase != "live"
            or machine.stream_broken
            or clock.safe_now_ms() < due
            or sub.read_wait_for == due
        ):
            return
        group = self._groups.get(sub.key)
        if group is None or group.broken:
            return
        serial = group.tap.behind(sub.key[0], sub.key[1], due)
        if serial is None:
            return
        sub.read_wait_for = due  # once per due time: then REST, whatever the socket holds
        self.stats["confirm_read_waits"] += 1
        tap = group.tap
        quiet_ms = max(1000, min(_READ_WAIT_MS, machine.tf.ms // 4))
        give_up = loop.time() + sub.spec.stall_timeout
        while True:
            read_before = tap.read_until.get(serial)
            waiter = sub.waiter = loop.create_future()
            tap.when_read(serial, due, waiter)
            timer = loop.call_later(clock.seconds_until(clock.now_ms() + quiet_ms), sub.wake)
            try:
                await waiter
            finally:
                sub.waiter = None
                timer.cancel()
            read = tap.read_until.get(serial)
            if read == read_before:
                # the timer may fire first after the loop was held up (a busy thread holding
                # the GIL): let ccxt handle what the sockets brought meanwhile, then judge
                for _ in range(_YIELDS_BEFORE_REST):
                    await asyncio.sleep(0)
                read = tap.read_until.get(serial)
            if read is not None and read >= due:
                why = "read"  # read up to the due time: what has not come is not coming
            elif read is None or read == read_before:
                why = "quiet"  # nothing read for a while: a quiet connection
            elif machine.wants_io or machine.phase != "live" or machine.stream_broken:
                why = "event"
            elif loop.time() >= give_up:
                why = "stall"
            else:
                continue  # still reading older frames (a backlog): wait while it drains
            self.stats[f"confirm_read_wait_{why}"] += 1
            return


async def _fetch(exchange, target: RestTarget, page: Page, machine, clock, asked_ms: int) -> None:
    """Fetch the page a machine asked for and hand it the answer (or the failure)."""
    departed: list = []
    try:
        rows = await fetch_page_async(exchange, target, page.since_ms, page.limit, departed)
    except ExchangeRequestError as exc:
        machine.on_failure(exc, clock.now_ms())
        return
    # closed-ness judged at the time the request left (after ccxt's rate limiter)
    machine.on_rows(rows, _asked_at(clock, asked_ms, departed))


def _asked_at(clock, asked_ms: int, departed: list) -> int:
    """When the page's last attempt left, on the exchange clock, minus the clock margin
    (never earlier than when it was asked for): what its rows are judged against."""
    if departed:
        left = clock.at_ms(departed[-1])
        if left is not None:
            return max(asked_ms, left - clock.margin_ms)
    return asked_ms
