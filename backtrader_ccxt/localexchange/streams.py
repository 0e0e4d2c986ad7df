"""The WebSocket side shared by every protocol: connections, subscriptions, the emission
timer, stream faults, the keepalive pinger, the connection-age limit and the frame hook.

What a client message means and what a frame looks like is the protocol's business
(``<venue>_api.py``); when frames are due is ``timing.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from .data import Replay, Timeframe
from .faults import FaultState
from .protocol import CandleFrame, Protocol
from .stats import Stats
from .timing import FINAL, Event, Timing

__all__ = ["StreamHub"]

log = logging.getLogger(__name__)

StreamKey = tuple[str, str]  # (symbol, unified timeframe)


class _Conn:
    """One WebSocket client connection."""

    __slots__ = (
        "id",
        "request",
        "ws",
        "streams",
        "queue",
        "writer",
        "ping_sent_at",
        "closed",
        "opened_ms",
    )

    def __init__(self, cid: int, request: web.Request, ws: web.WebSocketResponse, now: int):
        self.id = cid
        self.request = request
        self.ws = ws
        self.streams: dict[StreamKey, str] = {}  # key -> the venue's stream name
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writer: asyncio.Task | None = None
        self.ping_sent_at: float | None = None  # loop time of the unanswered ping
        self.closed = False
        self.opened_ms = now


class _TfClock:
    """Emission position of one timeframe: period ``k`` and the events of it already sent."""

    __slots__ = ("tf", "k", "events", "i")

    def __init__(self, tf: Timeframe, k: int, events: list[Event], i: int):
        self.tf = tf
        self.k = k
        self.events = events
        self.i = i


class StreamHub:
    """Serves the protocol's WebSocket routes: one timer emits every subscribed stream.

    The protocol calls back :meth:`send`, :meth:`add_streams` and :meth:`remove_streams`.
    """

    def __init__(
        self,
        protocol: Protocol,
        replay: Replay,
        stats: Stats,
        faults: FaultState,
        now_ms: Callable[[], int],
        timing: Timing,
        *,
        exact_clock: bool,
        poll_interval: float,
        ping_interval: float,
        pong_timeout: float,
        max_catchup: int,
    ):
        self.protocol = protocol
        self.replay = replay
        self.stats = stats
        self.faults = faults
        self.now_ms = now_ms
        self.timing = timing
        self.exact_clock = exact_clock
        self.poll_interval = poll_interval
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_catchup = max_catchup
        self.frame_listeners: list[Callable[[CandleFrame], None]] = []
        self.conns: set[_Conn] = set()  # connections still served
        self.live: set[_Conn] = set()  # connections whose handler is running
        self._next_conn_id = 0
        # timeframe -> symbol -> connections subscribed to that stream
        self.subs: dict[str, dict[str, set[_Conn]]] = {}
        self.clocks: dict[str, _TfClock] = {}
        self._offsets: dict[str, list[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._age_wakeup: asyncio.Event | None = None
        self._stopping = False
        self._rotation = 0
        self._sending_final = False

    def start(self) -> None:
        self._age_wakeup = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._ping_loop(), name="localexchange-pinger"),
            asyncio.create_task(self._age_loop(), name="localexchange-max-age"),
        ]

    async def stop(self) -> None:
        """Stop emitting, close every connection (code 1001) and end the background tasks."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        for conn in list(self.conns):
            self._forget(conn)
        closers = [asyncio.ensure_future(self._close_ws(c)) for c in self.live if not c.ws.closed]
        pending = [*self._tasks, *self._background, *closers]
        if pending:
            await asyncio.wait(pending)

    async def _close_ws(self, conn: _Conn, message: bytes = b"server shutdown") -> None:
        try:
            await asyncio.wait_for(conn.ws.close(code=1001, message=message), 2.0)
        except Exception:  # noqa: BLE001 - a client that does not answer is cut off
            self._abort(conn)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=2.0)
        await ws.prepare(request)
        self._next_conn_id += 1
        conn = _Conn(self._next_conn_id, request, ws, self.now_ms())
        self.conns.add(conn)
        self.live.add(conn)
        self.stats.ws_connections += 1
        self.stats.ws_open += 1
        conn.writer = asyncio.create_task(self._writer(conn), name=f"localexchange-ws{conn.id}")
        if self._age_wakeup is not None:
            self._age_wakeup.set()
        try:
            self.protocol.on_open(self, conn, request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.stats.ws_messages_received += 1
                    self.protocol.on_text(self, conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    self.stats.ws_client_pings += 1
                    self._enqueue(conn, "pong", msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.ping_sent_at = None
                    self.stats.ws_pongs_received += 1
                elif msg.type == WSMsgType.BINARY:
                    self.protocol.on_binary(self, conn, msg.data)
        finally:
            self._forget(conn)
            self.live.discard(conn)
            self.stats.ws_open -= 1
            conn.writer.cancel()
            await asyncio.wait([conn.writer])
        return ws

    def _forget(self, conn: _Conn) -> None:
        """Stop sending to a connection and drop its subscriptions (idempotent)."""
        conn.closed = True
        if conn in self.conns:
            self.conns.discard(conn)
            self.remove_streams(conn, list(conn.streams))

    def _abort(self, conn: _Conn) -> None:
        transport = conn.request.transport
        if transport is not None:
            transport.abort()

    async def _writer(self, conn: _Conn) -> None:
        ws = conn.ws
        while True:
            kind, payload, meta = await conn.queue.get()
            try:
                if kind == "text":
                    await ws.send_str(payload)
                    self.stats.ws_messages_sent += 1
                    if meta is not None and self.frame_listeners:
                        self._notify(conn, meta)
                elif kind == "ping":
                    await ws.ping(payload)
                    self.stats.ws_pings_sent += 1
                else:
                    await ws.pong(payload)
            except (ConnectionError, RuntimeError):
                return  # closing; the handler cleans up

    def _notify(self, conn: _Conn, meta: tuple) -> None:
        frame = CandleFrame(self.protocol.name, *meta, sent_at=time.time(), connection=conn.id)
        for fn in list(self.frame_listeners):
            try:
                fn(frame)
            except Exception:
                log.exception("localexchange: frame listener %r failed", fn)

    def _enqueue(self, conn: _Conn, kind: str, payload, meta: tuple | None = None) -> bool:
        if conn.closed:
            return False
        if self.faults.stalled(self.now_ms()):
            self.stats.ws_messages_lost += 1
            return False
        conn.queue.put_nowait((kind, payload, meta))
        return True

    # -- called by the protocol -------------------------------------------------------------

    def send(self, conn: _Conn, text: str) -> None:
        """Queue a reply (subscribe answers, errors, pongs) to one connection."""
        self._enqueue(conn, "text", text)

    def add_streams(self, conn: _Conn, streams: dict[StreamKey, str]) -> bool:
        """Subscribe ``conn`` to ``{(symbol, timeframe): venue stream name}``; already held
        streams are kept. False (nothing added) if the connection's limit would be passed."""
        new = [key for key in streams if key not in conn.streams]
        if len(conn.streams) + len(new) > self.protocol.max_streams:
            return False
        for key in new:
            symbol, timeframe = key
            conn.streams[key] = streams[key]
            self.subs.setdefault(timeframe, {}).setdefault(symbol, set()).add(conn)
            self.stats.ws_streams_subscribed += 1
            self.stats.ws_streams_active += 1
            if timeframe not in self.clocks:
                self._start_clock(timeframe)
        return True

    def remove_streams(self, conn: _Conn, keys: list[StreamKey]) -> None:
        for key in keys:
            if conn.streams.pop(key, None) is None:
                continue
            symbol, timeframe = key
            self.stats.ws_streams_active -= 1
            by_symbol = self.subs.get(timeframe, {})
            members = by_symbol.get(symbol)
            if members is not None:
                members.discard(conn)
                if not members:
                    del by_symbol[symbol]
            if not by_symbol:
                self.subs.pop(timeframe, None)
                self.clocks.pop(timeframe, None)

    # -- emission ---------------------------------------------------------------------------

    def offsets(self, tf: Timeframe) -> list[int]:
        offs = self._offsets.get(tf.name)
        if offs is None:
            offs = self._offsets[tf.name] = self.replay.update_offsets(tf)
        return offs

    def _schedule(self, tf: Timeframe, k: int) -> list[Event]:
        return self.timing.schedule(tf, self.offsets(tf), k)

    def _start_clock(self, timeframe: str) -> None:
        tf = self.replay.timeframe(timeframe)
        now = self.now_ms()
        k = tf.index(now)
        events = self._schedule(tf, k)
        elapsed = now - tf.open_of(k)
        done = sum(1 for ev in events if ev.offset_ms <= elapsed)
        self.clocks[timeframe] = _TfClock(tf, k, events, done)
        self._arm()

    def _next_due(self, clock: _TfClock) -> int:
        tf = clock.tf
        if clock.i < len(clock.events):
            return tf.open_of(clock.k) + clock.events[clock.i].offset_ms
        return tf.open_of(clock.k + 1) + self._schedule(tf, clock.k + 1)[0].offset_ms

    def _arm(self) -> None:
        """(Re)schedule the single emission timer for the earliest due event."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.clocks or self._stopping:
            return
        due = min(self._next_due(c) for c in self.clocks.values())
        delay = max(due - self.now_ms(), 1) / 1000
        if not self.exact_clock:
            delay = min(delay, self.poll_interval)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            now = self.now_ms()
            for timeframe, clock in list(self.clocks.items()):
                self._advance(timeframe, clock, now)
        except Exception:
            log.exception("localexchange: emission failed")
        self._arm()

    def _advance(self, timeframe: str, clock: _TfClock, now: int) -> None:
        tf = clock.tf
        k = tf.index(now)
        if k < clock.k:
            return
        if k > clock.k:
            # Left period clock.k: a final still pending in it is sent now; of the periods
            # skipped entirely (clock jump, blocked loop) only their finals are sent, at most
            # max_catchup of them, as a lagging venue would.
            for ev in clock.events[clock.i :]:
                if ev.kind == FINAL:
                    self._emit_final(timeframe, tf, clock.k - 1, now)
            for kk in range(max(clock.k + 1, k - self.max_catchup), k):
                self._emit_final(timeframe, tf, kk - 1, now)
            clock.k, clock.events, clock.i = k, self._schedule(tf, k), 0
        elapsed = now - tf.open_of(k)
        end = clock.i
        while end < len(clock.events) and clock.events[end].offset_ms <= elapsed:
            end += 1
        due = clock.events[clock.i : end]
        # of several partial updates due at once, only the latest is worth sending
        last_partial = max((n for n, ev in enumerate(due) if ev.kind != FINAL), default=-1)
        for n, ev in enumerate(due):
            if ev.kind == FINAL:
                self._emit_final(timeframe, tf, k - 1, now)
            elif n == last_partial:
                self._emit_partial(timeframe, tf, k, ev.j, now)
        clock.i = end

    def _rotated(self, by_symbol: dict[str, set[_Conn]]) -> list[tuple[str, set[_Conn]]]:
        """Streams in a rotating order: simultaneous updates of many symbols do not always
        arrive in the same order (``watch_ohlcv_for_symbols`` resolves with the first one
        only, so a fixed order would starve the others)."""
        items = list(by_symbol.items())
        self._rotation += 1
        if len(items) > 1:
            cut = self._rotation % len(items)
            items = items[cut:] + items[:cut]
        return items

    def _emit_final(self, timeframe: str, tf: Timeframe, k: int, now: int) -> None:
        by_symbol = self.subs.get(timeframe)
        if not by_symbol:
            return
        st = self.faults
        applied: list = []
        for symbol, conns in self._rotated(by_symbol):
            if st.omit_empty and self.replay.is_empty(symbol, tf, k):
                st.counts["omitted"] += 1
                continue
            rule = st.skip_final_for(symbol, timeframe)
            if rule is not None:
                st.counts["skip_final"] += 1
                if not any(r is rule for r in applied):
                    applied.append(rule)
                continue
            candle = self.replay.candle(symbol, tf, k)
            text = self.protocol.candle_frame(symbol, timeframe, candle, True, now)
            self._sending_final = True
            for conn in list(conns):
                self._send_kline(conn, symbol, timeframe, tf, k, text, now)
        if applied:
            # one budget unit per candle close, however many symbols it silenced
            for rule in applied:
                rule.remaining -= 1
            st.skip_finals[:] = [r for r in st.skip_finals if r.remaining > 0]

    def _emit_partial(self, timeframe: str, tf: Timeframe, k: int, j: int, now: int) -> None:
        by_symbol = self.subs.get(timeframe)
        if not by_symbol:
            return
        omit = self.faults.omit_empty
        for symbol, conns in self._rotated(by_symbol):
            if omit and self.replay.is_empty(symbol, tf, k):
                continue
            candle = self.replay.partial(symbol, tf, k, j)
            text = self.protocol.candle_frame(symbol, timeframe, candle, False, now)
            self._sending_final = False
            for conn in list(conns):
                self._send_kline(conn, symbol, timeframe, tf, k, text, now)

    def _send_kline(
        self,
        conn: _Conn,
        symbol: str,
        timeframe: str,
        tf: Timeframe,
        k: int,
        text: str,
        now: int,
    ) -> None:
        # The final flag travels beside the signature, which bench/benchlib.py's Emissions
        # still wraps (until it moves to LocalExchange.add_frame_listener).
        final = self._sending_final
        st = self.faults
        if st.malformed and not conn.closed and not st.stalled(now):
            kind = st.malformed.pop(0)
            bad = self.protocol.malformed_frame(kind, symbol, timeframe, now)
            if self._enqueue(conn, "text", bad):
                st.counts["malformed"] += 1
        open_ms = tf.open_of(k)
        if not self._enqueue(
            conn, "text", text, (symbol, timeframe, open_ms, final, "update", now)
        ):
            return
        self.stats.ws_klines_sent += 1
        if st.duplicate > 0:
            st.duplicate -= 1
            st.counts["duplicate"] += 1
            meta = (symbol, timeframe, open_ms, final, "duplicate", now)
            self._enqueue(conn, "text", text, meta)
            self.stats.ws_klines_sent += 1
        if st.out_of_order > 0:
            # an older frame of this stream: the previous candle's last partial update
            st.out_of_order -= 1
            st.counts["out_of_order"] += 1
            prev = k - 1
            last_j = len(self.offsets(tf)) - 1
            event_ms = tf.open_of(prev) + self.offsets(tf)[last_j]
            older = self.replay.partial(symbol, tf, prev, last_j)
            frame = self.protocol.candle_frame(symbol, timeframe, older, False, event_ms)
            meta = (symbol, timeframe, tf.open_of(prev), False, "out_of_order", event_ms)
            self._enqueue(conn, "text", frame, meta)
            self.stats.ws_klines_sent += 1

    # -- faults -----------------------------------------------------------------------------

    def drop_connections(self, clean: bool) -> int:
        conns = [c for c in self.conns if not c.closed]
        for conn in conns:
            self._forget(conn)
            if clean:
                self._close_later(conn, b"server shutdown")
            else:
                self._abort(conn)
        self.faults.counts["drop"] += len(conns)
        return len(conns)

    def _close_later(self, conn: _Conn, message: bytes) -> None:
        task = asyncio.ensure_future(self._close_ws(conn, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def set_max_age(self, max_age_ms: int | None) -> None:
        self.faults.max_age_ms = max_age_ms
        if self._age_wakeup is not None:
            self._age_wakeup.set()

    async def _age_loop(self) -> None:
        """Close connections older than ``faults.max_age_ms`` on the exchange clock."""
        assert self._age_wakeup is not None
        while True:
            self._age_wakeup.clear()
            timeout = None
            max_age = self.faults.max_age_ms
            if max_age is not None:
                now = self.now_ms()
                for conn in [c for c in self.conns if now - c.opened_ms >= max_age]:
                    log.info("localexchange: connection %d reached its max age, closing", conn.id)
                    self._forget(conn)
                    self._close_later(conn, b"connection age limit")
                    self.faults.counts["max_age"] += 1
                if self.conns:
                    due = min(c.opened_ms for c in self.conns) + max_age
                    timeout = max(due - now, 1) / 1000
                    if not self.exact_clock:
                        timeout = min(timeout, self.poll_interval)
            try:
                await asyncio.wait_for(self._age_wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # -- keepalive --------------------------------------------------------------------------

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            now = loop.time()
            stalled = self.faults.stalled(self.now_ms())
            for conn in list(self.conns):
                if stalled:
                    conn.ping_sent_at = None  # a hang is not the client's missed pong
                    continue
                if conn.ping_sent_at is not None:
                    if now - conn.ping_sent_at > self.pong_timeout:
                        log.info("localexchange: connection %d missed its pong, closing", conn.id)
                        self._forget(conn)
                        self._abort(conn)
                    continue
                if self._enqueue(conn, "ping", str(self.now_ms()).encode()):
                    conn.ping_sent_at = now
