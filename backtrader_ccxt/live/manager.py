"""The store's background manager: threaded REST polling and WebSocket streams on one loop.

The boundary: backtrader's thread calls :meth:`StreamManager.subscribe` and reads a
:class:`QueueSource` (a ``queue.Queue`` of immutable :class:`~..bars.Bar` /
:class:`~..bars.Status` items); everything else runs on the loop thread, which owns the
ccxt.pro instance. Nothing else crosses.

Per WebSocket subscription, one worker task serialises everything that can emit a bar
(backfill, stream closes, REST fills and confirmations), so bars leave in order; the watcher
tasks only copy rows and post events to the workers.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

import ccxt

from ..bars import Bar, Status, bar_from_row
from ..errors import ExchangeRequestError, FatalExchangeError, is_retryable
from ..paging import Page, Paginator
from ..rest import RestTarget, fetch_page_async, walk_async
from ..retry import Backoff
from ..spec import FeedSpec
from . import closeflags
from .assembler import CandleAssembler
from .loopthread import LoopThread
from .polling import PollingMachine

log = logging.getLogger(__name__)

__all__ = ["QueueSource", "StreamManager"]

_MAX_STREAMS_PER_CALL = 200  # Binance's advice per connection; ccxt does not split for us


# -- events from watchers to workers (loop thread only) -----------------------------------


@dataclass(frozen=True, slots=True)
class _Rows:
    rows: list
    recv_ms: int
    epoch: int


@dataclass(frozen=True, slots=True)
class _Broken:
    reason: str


@dataclass(frozen=True, slots=True)
class _Healthy:
    epoch: int


@dataclass(frozen=True, slots=True)
class _Final:
    """A frame the venue marked final (see :mod:`.closeflags`)."""

    row: list


@dataclass(frozen=True, slots=True)
class _Fatal:
    reason: str


class _Subscription:
    """One feed's subscription. ``out`` is the only object both threads touch."""

    def __init__(self, spec: FeedSpec, kind: str) -> None:
        self.spec = spec
        self.kind = kind
        self.key = (spec.symbol, spec.tf.ccxt)
        self.out: queue.Queue = queue.Queue()
        self.events: asyncio.Queue | None = None  # created on the loop
        self.last_open_ms: int | None = None
        self.task: asyncio.Task | None = None
        self.finished = False
        self.stream_broken = False
        self.rest_broken = False
        self.live = False

    def update_health(self, reason: str = "") -> None:
        """Emit CONNBROKEN / LIVE when the combined health of stream and REST changes."""
        healthy = not (self.stream_broken or self.rest_broken)
        if healthy and not self.live:
            self.live = True
            self.emit(Status("LIVE", reason))
        elif not healthy and self.live:
            self.live = False
            self.emit(Status("CONNBROKEN", reason))

    def emit(self, item: Bar | Status) -> bool:
        if isinstance(item, Bar):
            if self.last_open_ms is not None and item.open_ms <= self.last_open_ms:
                return False
            self.last_open_ms = item.open_ms
        self.out.put(item)
        return True

    def post(self, event) -> None:
        if self.events is not None and not self.finished:
            self.events.put_nowait(event)


class QueueSource:
    """The feed's end of a subscription on the manager."""

    def __init__(self, manager: StreamManager, sub: _Subscription) -> None:
        self._manager = manager
        self._sub = sub
        self.done = False

    def start(self) -> None:
        pass

    def pending(self) -> int:
        return self._sub.out.qsize()

    def get(self, timeout: float | None) -> Bar | Status | None:
        self._manager.activate()
        try:
            item = self._sub.out.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Status) and (item.code == "DISCONNECTED" or item.fatal):
            self.done = True
        return item

    def stop(self) -> None:
        self._manager.unsubscribe(self._sub)


class StreamManager:
    """Runs subscriptions on the store's loop thread. Created by ``store.manager``."""

    def __init__(self, store) -> None:
        self._store = store
        self._thread = LoopThread(f"backtrader-ccxt-{store.exchange_id}")
        self._lock = threading.Lock()
        self._pending: list[_Subscription] = []
        self._stopped = False
        # loop-thread state
        self._exchange = None
        self._routes: dict[tuple[str, str], list[_Subscription]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._flags = False
        self.stats = store.stats

    # -- backtrader thread -----------------------------------------------------------------

    def subscribe(self, spec: FeedSpec, kind: str) -> QueueSource:
        """Register a feed; it starts on the first ``get()`` of any feed (batching them)."""
        if kind not in ("stream", "poll"):
            raise ValueError(f"kind must be 'stream' or 'poll', got {kind!r}")
        with self._lock:
            if self._stopped:
                raise RuntimeError("the store's stream manager was stopped")
            sub = _Subscription(spec, kind)
            self._pending.append(sub)
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

    def stop(self, timeout: float = 2.0) -> bool:
        """Close every task and ccxt instance and join the thread (within ``timeout``)."""
        with self._lock:
            self._stopped = True
            self._pending = []
        return self._thread.stop(on_stop=self._shutdown, timeout=timeout)

    # -- loop thread -----------------------------------------------------------------------

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _activate(self, batch: list[_Subscription]) -> None:
        if self._exchange is None:
            self._exchange = self._store.new_async_exchange()
            self._flags = closeflags.install(self._exchange, self._on_final)
        new_keys: list[tuple[str, str]] = []
        watched: list[_Subscription] = []
        for sub in batch:
            sub.events = asyncio.Queue()
            if sub.kind == "poll":
                sub.task = self._spawn(self._guard(sub, self._poll_worker(sub)), sub.spec.label)
                continue
            if sub.key not in self._routes:
                self._routes[sub.key] = []
                new_keys.append(sub.key)
            self._routes[sub.key].append(sub)
            watched.append(sub)
            sub.task = self._spawn(self._guard(sub, self._stream_worker(sub)), sub.spec.label)
        if not new_keys:
            return
        first = watched[0].spec
        multi = bool(self._exchange.has.get("watchOHLCVForSymbols"))
        if multi:
            groups = [
                new_keys[i : i + _MAX_STREAMS_PER_CALL]
                for i in range(0, len(new_keys), _MAX_STREAMS_PER_CALL)
            ]
        else:
            groups = [[k] for k in new_keys]
        for keys in groups:
            self._spawn(self._guard_watch(keys, multi, first), f"watch {len(keys)} streams")

    def _drop(self, sub: _Subscription) -> None:
        sub.finished = True
        if sub.task is not None:
            sub.task.cancel()
        subs = self._routes.get(sub.key)
        if subs and sub in subs:
            subs.remove(sub)

    async def _shutdown(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._exchange is not None:
            ex, self._exchange = self._exchange, None
            await ex.close()

    def _target(self, spec: FeedSpec) -> RestTarget:
        store = self._store
        return RestTarget(
            symbol=spec.symbol,
            tf=spec.tf,
            retries=store.retries,
            backoff=Backoff(store.retry_delay, store.retry_max_delay),
            redact=store.redact,
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
            log.error("%s: worker failed: %s", sub.spec.label, reason)
            sub.emit(Status("DISCONNECTED", reason, True))
        finally:
            sub.finished = True

    # threaded polling ----------------------------------------------------------------------

    async def _poll_worker(self, sub: _Subscription) -> None:
        machine = PollingMachine(sub.spec)
        target = self._target(sub.spec)
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
            if isinstance(action, Page):
                self.stats["rest_calls"] += 1
                try:
                    rows = await fetch_page_async(
                        self._exchange, target, action.since_ms, action.limit
                    )
                except ExchangeRequestError as exc:
                    machine.on_failure(exc, clock.now_ms())
                    continue
                machine.on_rows(rows, now)  # closed-ness judged at request time
            else:
                await asyncio.sleep(clock.seconds_until(action + clock.margin_ms))

    # websocket -----------------------------------------------------------------------------

    async def _watch(self, keys: list[tuple[str, str]], multi: bool, spec: FeedSpec) -> None:
        """Watch some streams until cancelled: reconnect with backoff, detect stalls."""
        ex = self._exchange
        clock = self._store.clock
        pairs = [[s, tf] for s, tf in keys]
        backoff = Backoff(spec.reconnect_delay, spec.max_reconnect_delay)
        epoch = 0
        healthy = True
        while True:
            try:
                if multi:
                    res = await asyncio.wait_for(
                        ex.watch_ohlcv_for_symbols(pairs), spec.stall_timeout
                    )
                    items = [(s, tf, rows) for s, d in res.items() for tf, rows in d.items()]
                else:
                    s, tf = keys[0]
                    rows = await asyncio.wait_for(ex.watch_ohlcv(s, tf), spec.stall_timeout)
                    items = [(s, tf, rows)]
            except asyncio.TimeoutError:
                if self._socket_alive(spec.stall_timeout):
                    continue  # a quiet symbol on a socket that still talks: not a stall
                reason = f"no message for {spec.stall_timeout:.1f}s (stalled)"
                self.stats["stalls"] += 1
                self._kill_connections(reason)
            except ccxt.ExchangeClosedByUser:
                return
            except Exception as exc:  # noqa: BLE001 - ccxt passes raw socket errors through
                reason = self._store.redact(f"{type(exc).__name__}: {exc}")
                if not is_retryable(exc):
                    log.error("stream %s failed for good: %s", pairs, reason)
                    self._post(keys, _Fatal(reason))
                    return
            else:
                recv = clock.now_ms()
                backoff.reset()
                if not healthy:
                    healthy = True
                    self._post(keys, _Healthy(epoch))
                for s, tf, rows in items:
                    copied = [list(r) for r in rows]
                    for sub in self._routes.get((s, tf), []):
                        sub.post(_Rows(copied, recv, epoch))
                continue
            if healthy:
                healthy = False
                self.stats["disconnects"] += 1
                log.warning("stream %s lost: %s", [p[0] for p in pairs][:5], reason)
                self._post(keys, _Broken(reason))
            epoch += 1
            delay = backoff.next_delay()
            self.stats["reconnects"] += 1
            await asyncio.sleep(delay)

    async def _guard_watch(self, keys: list[tuple[str, str]], multi: bool, spec: FeedSpec) -> None:
        """A watcher that ends unexpectedly takes its feeds down loudly, never silently."""
        try:
            await self._watch(keys, multi, spec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the feeds
            reason = self._store.redact(f"stream watcher failed: {type(exc).__name__}: {exc}")
            log.error("%s", reason)
            self._post(keys, _Fatal(reason))

    def _post(self, keys: list[tuple[str, str]], event) -> None:
        for key in keys:
            for sub in self._routes.get(key, []):
                sub.post(event)

    def _socket_alive(self, window_s: float) -> bool:
        """Whether any socket of our instance received a frame within ``window_s``."""
        now = self._exchange.milliseconds()
        for client in list(getattr(self._exchange, "clients", {}).values()):
            last = getattr(client, "last_message_at", None)
            if last is not None and now - last < window_s * 1000 and not client.closed():
                return True
        return False

    def _on_final(self, symbol: str, timeframe: str, row: list) -> None:
        """Called by ccxt's frame handler (loop thread) for each frame marked final."""
        for sub in self._routes.get((symbol, timeframe), []):
            sub.post(_Final(row))

    def _kill_connections(self, reason: str) -> None:
        """Treat every socket of our instance as dead, as a network drop would."""
        for client in list(getattr(self._exchange, "clients", {}).values()):
            client.on_error(ccxt.NetworkError(reason))

    async def _stream_worker(self, sub: _Subscription) -> None:
        spec = sub.spec
        tf = spec.tf
        clock = self._store.clock
        target = self._target(spec)
        # With the venue's closed flag, only flagged frames are trusted; without, the
        # assembler's timing rules decide.
        asm = CandleAssembler(
            tf, tolerance_ms=min(50, tf.ms // 20), trust_successor=not self._flags
        )
        assert sub.events is not None
        # the backfill must complete before any streamed bar: retry it (CONNBROKEN meanwhile)
        retry = Backoff(spec.reconnect_delay, spec.max_reconnect_delay)
        await self._fill(sub, target, spec.since_ms, asm, "backfill")
        while sub.rest_broken:
            sub.emit(Status("CONNBROKEN", "backfill failed; retrying"))
            await asyncio.sleep(retry.next_delay())
            await self._fill(sub, target, None, asm, "backfill")
        if self._check_end(sub):
            return
        sub.update_health()
        confirm_backoff = Backoff(
            max(spec.grace_ms, 100) / 1000, max(1.0, tf.ms / 1000), jitter=False
        )
        next_confirm = 0
        while True:
            due = self._due(sub, asm)
            timeout = None
            if not sub.stream_broken and due is not None:
                timeout = clock.seconds_until(max(due, next_confirm))
            try:
                # what is queued comes first: wait_for(get(), 0) times out even when the
                # queue holds an event (Python <= 3.11), which turned every due final into
                # a REST confirmation under load (bench/scale.py, 200 feeds)
                if not sub.events.empty():
                    event = sub.events.get_nowait()
                else:
                    event = await asyncio.wait_for(sub.events.get(), timeout)
            except asyncio.TimeoutError:
                # close time + grace passed and the stream has not closed the candle: a quiet
                # market or a silent socket. Confirm over REST so the bar is on time.
                before = sub.last_open_ms
                await self._fill(sub, target, None, asm, "confirm")
                if sub.last_open_ms == before:
                    next_confirm = clock.now_ms() + int(confirm_backoff.next_delay() * 1000)
                else:
                    confirm_backoff.reset()
                    next_confirm = 0
                if self._check_end(sub):
                    return
                continue
            if isinstance(event, _Rows):
                for closed in asm.update(event.rows, event.recv_ms, event.epoch):
                    bar = closed.bar
                    last = sub.last_open_ms
                    if last is not None and bar.open_ms <= last:
                        continue
                    contiguous = last is None or tf.close_of(last) == bar.open_ms
                    if closed.trusted and contiguous:
                        self.stats["stream_bars"] += 1
                        sub.emit(bar)
                    else:
                        await self._fill(sub, target, None, asm, "fill")
                    if self._check_end(sub):
                        return
            elif isinstance(event, _Broken):
                sub.stream_broken = True
                sub.update_health(event.reason)
            elif isinstance(event, _Healthy):
                await self._fill(sub, target, None, asm, "fill")
                if self._check_end(sub):
                    return
                sub.stream_broken = False
                sub.update_health("stream restored and gap filled")
            elif isinstance(event, _Final):
                try:
                    bar = bar_from_row(event.row, tf)
                except ValueError:
                    continue
                last = sub.last_open_ms
                if last is not None and bar.open_ms <= last:
                    continue
                if last is None or tf.close_of(last) == bar.open_ms:
                    self.stats["stream_bars"] += 1
                    sub.emit(bar)
                    asm.forget_through(bar.open_ms)
                else:
                    await self._fill(sub, target, None, asm, "fill")
                if self._check_end(sub):
                    return
            elif isinstance(event, _Fatal):
                sub.emit(Status("DISCONNECTED", event.reason, fatal=True))
                return

    def _due(self, sub: _Subscription, asm: CandleAssembler) -> int | None:
        """When to confirm over REST if the stream has not closed the candle by then."""
        tf = sub.spec.tf
        if asm.forming is not None:
            return asm.forming.close_ms + sub.spec.grace_ms
        if sub.last_open_ms is not None:
            return tf.close_of(tf.close_of(sub.last_open_ms)) + sub.spec.grace_ms
        return None

    async def _fill(
        self, sub: _Subscription, target: RestTarget, since_ms: int | None, asm, why: str
    ) -> None:
        """Deliver every closed candle after the last delivered one, from REST."""
        spec = sub.spec
        if since_ms is None:
            last = sub.last_open_ms
            since_ms = spec.since_ms if last is None else spec.tf.close_of(last)
        pager = Paginator(spec.tf, since_ms, spec.page_limit, spec.until_ms, spec.drop_newest)
        try:
            bars = await walk_async(self._exchange, target, pager, self._store.clock.safe_now_ms)
        except FatalExchangeError:
            raise
        except ExchangeRequestError as exc:
            log.warning("%s: REST %s failed, will retry: %s", spec.label, why, exc)
            sub.rest_broken = True
            sub.update_health(str(exc))
            return
        # REST requests by purpose: backfill, fill (after a break, a gap or an untrusted
        # close) and confirm (close time + grace passed without a final)
        self.stats["rest_pages"] += pager.pages
        self.stats[f"rest_{why}"] += pager.pages
        for bar in bars:
            if sub.emit(bar):
                self.stats["rest_bars"] += 1
        if sub.last_open_ms is not None:
            asm.forget_through(sub.last_open_ms)
        if sub.rest_broken:
            sub.rest_broken = False
            sub.update_health("REST restored")

    def _check_end(self, sub: _Subscription) -> bool:
        until = sub.spec.until_ms
        if until is None or sub.last_open_ms is None:
            return False
        if sub.spec.tf.close_of(sub.last_open_ms) >= until:
            sub.emit(Status("DISCONNECTED", "todate reached"))
            return True
        return False
