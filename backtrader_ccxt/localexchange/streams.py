"""The raw kline WebSocket streams: connections, subscriptions, the emission timer, stream
faults and the keepalive pinger."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

from . import binance_format as fmt
from .data import Replay, Timeframe
from .faults import MALFORMED_KINDS, FaultState
from .stats import Stats

__all__ = ["StreamHub"]

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024  # Binance SPOT's limit


class _Conn:
    """One WebSocket client connection."""

    __slots__ = ("id", "request", "ws", "streams", "queue", "writer", "ping_sent_at", "closed")

    def __init__(self, cid: int, request: web.Request, ws: web.WebSocketResponse):
        self.id = cid
        self.request = request
        self.ws = ws
        self.streams: dict[str, tuple[str, str]] = {}  # name -> (symbol, timeframe)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writer: asyncio.Task | None = None
        self.ping_sent_at: float | None = None  # loop time of the unanswered ping
        self.closed = False


class _TfClock:
    """Emission position of one timeframe: the last partial update sent."""

    __slots__ = ("tf", "offsets", "k", "j")

    def __init__(self, tf: Timeframe, offsets: list[int], k: int, j: int):
        self.tf = tf
        self.offsets = offsets
        self.k = k
        self.j = j

    def next_due(self) -> int:
        if self.j + 1 < len(self.offsets):
            return self.tf.open_of(self.k) + self.offsets[self.j + 1]
        return self.tf.open_of(self.k + 1)


class StreamHub:
    """Serves ``/ws`` and ``/ws/<anything>``: one timer emits every subscribed stream."""

    def __init__(
        self,
        replay: Replay,
        stats: Stats,
        faults: FaultState,
        now_ms: Callable[[], int],
        intervals: set[str],
        *,
        exact_clock: bool,
        poll_interval: float,
        ping_interval: float,
        pong_timeout: float,
        max_catchup: int,
    ):
        self.replay = replay
        self.stats = stats
        self.faults = faults
        self.now_ms = now_ms
        self.intervals = intervals
        self.exact_clock = exact_clock
        self.poll_interval = poll_interval
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_catchup = max_catchup
        self.by_lower_id = {fmt.market_id(s).lower(): s for s in replay.series}
        self.conns: set[_Conn] = set()  # connections still served
        self.live: set[_Conn] = set()  # connections whose handler is running
        self._next_conn_id = 0
        # timeframe -> symbol -> connections subscribed to that stream
        self.subs: dict[str, dict[str, set[_Conn]]] = {}
        self.clocks: dict[str, _TfClock] = {}
        self._offsets: dict[str, list[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pinger: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._stopping = False
        self._rotation = 0

    def start(self) -> None:
        self._pinger = asyncio.create_task(self._ping_loop(), name="localexchange-pinger")

    async def stop(self) -> None:
        """Stop emitting, close every connection (code 1001) and end the background tasks."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pinger is not None:
            self._pinger.cancel()
        for conn in list(self.conns):
            self._forget(conn)
        closers = [asyncio.ensure_future(self._close_ws(c)) for c in self.live if not c.ws.closed]
        pending = [t for t in (self._pinger, *self._background, *closers) if t is not None]
        if pending:
            await asyncio.wait(pending)

    async def _close_ws(self, conn: _Conn) -> None:
        try:
            await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutdown"), 2.0)
        except Exception:  # noqa: BLE001 - a client that does not answer is cut off
            self._abort(conn)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=2.0)
        await ws.prepare(request)
        self._next_conn_id += 1
        conn = _Conn(self._next_conn_id, request, ws)
        self.conns.add(conn)
        self.live.add(conn)
        self.stats.ws_connections += 1
        self.stats.ws_open += 1
        conn.writer = asyncio.create_task(self._writer(conn), name=f"localexchange-ws{conn.id}")
        try:
            tail = request.match_info.get("tail", "")
            if "@" in tail:  # /ws/<streamName>, like Binance's raw stream URLs
                self._subscribe(conn, tail.split("/"), None, reply=False)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    self._enqueue(conn, "pong", msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.ping_sent_at = None
                    self.stats.ws_pongs_received += 1
                elif msg.type == WSMsgType.BINARY:
                    self._reply(conn, fmt.ws_error(3, "Invalid JSON: binary frame", None))
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
            for name in list(conn.streams):
                self._unsubscribe_one(conn, name)

    def _abort(self, conn: _Conn) -> None:
        transport = conn.request.transport
        if transport is not None:
            transport.abort()

    async def _writer(self, conn: _Conn) -> None:
        ws = conn.ws
        while True:
            kind, payload = await conn.queue.get()
            try:
                if kind == "text":
                    await ws.send_str(payload)
                    self.stats.ws_messages_sent += 1
                elif kind == "ping":
                    await ws.ping(payload)
                    self.stats.ws_pings_sent += 1
                else:
                    await ws.pong(payload)
            except (ConnectionError, RuntimeError):
                return  # closing; the handler cleans up

    def _enqueue(self, conn: _Conn, kind: str, payload) -> bool:
        if conn.closed:
            return False
        if self.faults.stalled(self.now_ms()):
            self.stats.ws_messages_lost += 1
            return False
        conn.queue.put_nowait((kind, payload))
        return True

    def _reply(self, conn: _Conn, text: str) -> None:
        self._enqueue(conn, "text", text)

    def _on_text(self, conn: _Conn, data: str) -> None:
        self.stats.ws_messages_received += 1
        try:
            req = json.loads(data)
        except ValueError as e:
            self._reply(conn, fmt.ws_error(3, f"Invalid JSON: {e}", None))
            return
        if not isinstance(req, dict):
            self._reply(conn, fmt.ws_error(2, "Invalid request: expected an object", None))
            return
        rid = req.get("id")
        if rid is not None and not isinstance(rid, (int, str)):
            self._reply(conn, fmt.ws_error(2, "Invalid request: invalid request ID", None))
            return
        method = req.get("method")
        params = req.get("params", [])
        if method == "SUBSCRIBE":
            self.stats.ws_subscribe_messages += 1
            self._subscribe(conn, params, rid)
        elif method == "UNSUBSCRIBE":
            self.stats.ws_unsubscribe_messages += 1
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                self._reply(conn, fmt.ws_error(2, "Invalid request: invalid params", rid))
                return
            for name in params:
                self._unsubscribe_one(conn, name)
            self._reply(conn, fmt.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(conn, fmt.dumps({"result": list(conn.streams), "id": rid}))
        elif method == "SET_PROPERTY":
            self._reply(conn, fmt.dumps({"result": None, "id": rid}))
        elif method == "GET_PROPERTY":
            self._reply(conn, fmt.dumps({"result": False, "id": rid}))
        else:
            self._reply(
                conn,
                fmt.ws_error(
                    2,
                    f"Invalid request: unknown variant {method!r}, expected one of SUBSCRIBE, "
                    "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY",
                    rid,
                ),
            )

    def _parse_stream(self, name) -> tuple[str, str] | None:
        if not isinstance(name, str) or "@kline_" not in name:
            return None
        mid, interval = name.split("@kline_", 1)
        symbol = self.by_lower_id.get(mid)
        if symbol is None or interval not in self.intervals:
            return None
        return symbol, interval

    def _subscribe(self, conn: _Conn, params, rid, reply: bool = True) -> None:
        if not isinstance(params, list):
            self._reply(conn, fmt.ws_error(2, "Invalid request: invalid params", rid))
            return
        parsed = []
        for name in params:
            key = self._parse_stream(name)
            if key is None:
                self._reply(conn, fmt.ws_error(2, "Invalid request: invalid stream", rid))
                return
            parsed.append((name, key))
        new = {name for name, _ in parsed if name not in conn.streams}
        if len(conn.streams) + len(new) > MAX_STREAMS_PER_CONNECTION:
            self._reply(conn, fmt.ws_error(2, "Invalid request: too many streams", rid))
            return
        for name, (symbol, interval) in parsed:
            if name in conn.streams:
                continue
            conn.streams[name] = (symbol, interval)
            self.subs.setdefault(interval, {}).setdefault(symbol, set()).add(conn)
            self.stats.ws_streams_subscribed += 1
            self.stats.ws_streams_active += 1
            if interval not in self.clocks:
                self._start_clock(interval)
        if reply:
            self._reply(conn, fmt.dumps({"result": None, "id": rid}))

    def _unsubscribe_one(self, conn: _Conn, name: str) -> None:
        key = conn.streams.pop(name, None)
        if key is None:
            return
        symbol, interval = key
        self.stats.ws_streams_active -= 1
        by_symbol = self.subs.get(interval, {})
        members = by_symbol.get(symbol)
        if members is not None:
            members.discard(conn)
            if not members:
                del by_symbol[symbol]
        if not by_symbol:
            self.subs.pop(interval, None)
            self.clocks.pop(interval, None)

    # -- emission ---------------------------------------------------------------------------

    def offsets(self, tf: Timeframe) -> list[int]:
        offs = self._offsets.get(tf.name)
        if offs is None:
            offs = self._offsets[tf.name] = self.replay.update_offsets(tf)
        return offs

    def _start_clock(self, interval: str) -> None:
        tf = self.replay.timeframe(interval)
        now = self.now_ms()
        k = tf.index(now)
        j = self.replay.update_index(tf, tf.open_of(k), now)
        self.clocks[interval] = _TfClock(tf, self.offsets(tf), k, j)
        self._arm()

    def _arm(self) -> None:
        """(Re)schedule the single emission timer for the earliest due update."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.clocks or self._stopping:
            return
        due = min(c.next_due() for c in self.clocks.values())
        delay = max(due - self.now_ms(), 1) / 1000
        if not self.exact_clock:
            delay = min(delay, self.poll_interval)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            now = self.now_ms()
            for interval, clock in list(self.clocks.items()):
                self._advance(interval, clock, now)
        except Exception:
            log.exception("localexchange: emission failed")
        self._arm()

    def _advance(self, interval: str, clock: _TfClock, now: int) -> None:
        tf = clock.tf
        k = tf.index(now)
        j = self.replay.update_index(tf, tf.open_of(k), now)
        if (k, j) <= (clock.k, clock.j):
            return
        if k > clock.k:
            for kk in range(max(clock.k, k - self.max_catchup), k):
                self._emit_final(interval, tf, kk, now)
        clock.k, clock.j = k, j
        self._emit_partial(interval, tf, k, j, now)

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

    def _emit_final(self, interval: str, tf: Timeframe, k: int, now: int) -> None:
        by_symbol = self.subs.get(interval)
        if not by_symbol:
            return
        st = self.faults
        applied: list = []
        for symbol, conns in self._rotated(by_symbol):
            if st.omit_empty and self.replay.is_empty(symbol, tf, k):
                st.counts["omitted"] += 1
                continue
            rule = st.skip_final_for(symbol, interval)
            if rule is not None:
                st.counts["skip_final"] += 1
                if not any(r is rule for r in applied):
                    applied.append(rule)
                continue
            candle = self.replay.candle(symbol, tf, k)
            text = fmt.dumps(fmt.kline_event(symbol, interval, candle, True, now))
            for conn in list(conns):
                self._send_kline(conn, symbol, interval, tf, k, text, now)
        if applied:
            # one budget unit per candle close, however many symbols it silenced
            for rule in applied:
                rule.remaining -= 1
            st.skip_finals[:] = [r for r in st.skip_finals if r.remaining > 0]

    def _emit_partial(self, interval: str, tf: Timeframe, k: int, j: int, now: int) -> None:
        by_symbol = self.subs.get(interval)
        if not by_symbol:
            return
        omit = self.faults.omit_empty
        for symbol, conns in self._rotated(by_symbol):
            if omit and self.replay.is_empty(symbol, tf, k):
                continue
            candle = self.replay.partial(symbol, tf, k, j)
            text = fmt.dumps(fmt.kline_event(symbol, interval, candle, False, now))
            for conn in list(conns):
                self._send_kline(conn, symbol, interval, tf, k, text, now)

    def _send_kline(
        self, conn: _Conn, symbol: str, interval: str, tf: Timeframe, k: int, text: str, now: int
    ) -> None:
        st = self.faults
        if st.malformed and not conn.closed and not st.stalled(now):
            kind = st.malformed.pop(0)
            bad = MALFORMED_KINDS[kind]
            if bad is None:
                mid = fmt.market_id(symbol)
                bad = fmt.dumps({"e": "kline", "E": now, "s": mid, "k": {"s": mid, "i": interval}})
            if self._enqueue(conn, "text", bad):
                st.counts["malformed"] += 1
        if not self._enqueue(conn, "text", text):
            return
        self.stats.ws_klines_sent += 1
        if st.duplicate > 0:
            st.duplicate -= 1
            st.counts["duplicate"] += 1
            self._enqueue(conn, "text", text)
            self.stats.ws_klines_sent += 1
        if st.out_of_order > 0:
            st.out_of_order -= 1
            st.counts["out_of_order"] += 1
            prev = k - 1
            last_j = len(self.offsets(tf)) - 1
            event_ms = tf.open_of(prev) + self.offsets(tf)[last_j]
            older = self.replay.partial(symbol, tf, prev, last_j)
            self._enqueue(
                conn, "text", fmt.dumps(fmt.kline_event(symbol, interval, older, False, event_ms))
            )
            self.stats.ws_klines_sent += 1

    # -- faults -----------------------------------------------------------------------------

    def drop_connections(self, clean: bool) -> int:
        conns = [c for c in self.conns if not c.closed]
        for conn in conns:
            self._forget(conn)
            if clean:
                task = asyncio.ensure_future(self._close_ws(conn))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                self._abort(conn)
        self.faults.counts["drop"] += len(conns)
        return len(conns)

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
