"""Live counters of what the local exchange served."""

from __future__ import annotations

import threading
from collections import defaultdict, deque

__all__ = ["Stats"]

# Gauges describe the present and survive reset(); the other fields count events.
_GAUGES = ("ws_open", "ws_streams_active")
_COUNTERS = (
    "rest_calls",
    "ws_connections",
    "ws_subscribe_messages",
    "ws_unsubscribe_messages",
    "ws_streams_subscribed",
    "ws_messages_received",
    "ws_messages_sent",
    "ws_klines_sent",
    "ws_messages_lost",
    "ws_pings_sent",
    "ws_pongs_received",
    "ws_client_pings",
    "orders_accepted",
    "orders_rejected",
    "fills",
    "user_events_sent",
)


class Stats:
    """Counters, updated by the server thread and readable from any thread.

    Fields:
        rest_calls: REST requests received (any path, including failed ones).
        rest_by_path: dict path -> requests, e.g. ``rest_by_path['/api/v3/klines']``.
        rest_log: the last 10,000 requests as ``(exchange ms, path, fault kind or None)``, for
            tests of request spacing (rate limits, ``Retry-After``).
        ws_connections: WebSocket connections opened.
        ws_open: connections open right now (gauge).
        ws_subscribe_messages / ws_unsubscribe_messages: SUBSCRIBE / UNSUBSCRIBE requests.
        ws_streams_subscribed: streams added by SUBSCRIBE (or by a ``/ws/<stream>`` URL).
        ws_streams_active: streams subscribed on open connections right now (gauge).
        ws_messages_received: text frames received from clients.
        ws_messages_sent: text frames written to clients (klines, replies, injected faults).
        ws_klines_sent: kline events written (a subset of ws_messages_sent).
        ws_messages_lost: frames discarded because a stall fault was active.
        ws_pings_sent / ws_pongs_received: server keepalive pings and the client's pongs.
        ws_client_pings: the client's pings answered: protocol-level ping frames (what
            ccxt.pro sends Binance) and the venues' own text pings (OKX ``ping``, Bybit
            ``{"op": "ping"}``).
        orders_accepted / orders_rejected: new orders booked / refused (any reason, REST or
            WebSocket API); fills: executions booked (trading, Binance).
        user_events_sent: user-data pushes written (execution reports and balance updates,
            per connection, duplicates included).
    """

    def __init__(self):
        self._lock = threading.Lock()
        for name in _GAUGES + _COUNTERS:
            setattr(self, name, 0)
        self.rest_by_path: defaultdict[str, int] = defaultdict(int)
        #: the last 10,000 REST requests: (exchange time ms, path, fault kind or None)
        self.rest_log: deque[tuple[int, str, str | None]] = deque(maxlen=10_000)

    def count_rest(self, path: str, now_ms: int = 0, fault: str | None = None) -> None:
        with self._lock:
            self.rest_calls += 1
            self.rest_by_path[path] += 1
            self.rest_log.append((now_ms, path, fault))

    def snapshot(self) -> dict:
        """A consistent plain-dict copy of every field."""
        with self._lock:
            snap = {name: getattr(self, name) for name in _GAUGES + _COUNTERS}
            snap["rest_by_path"] = dict(self.rest_by_path)
            snap["rest_log"] = list(self.rest_log)
        return snap

    def reset(self) -> None:
        """Zero the counters (gauges keep describing the present)."""
        with self._lock:
            for name in _COUNTERS:
                setattr(self, name, 0)
            self.rest_by_path = defaultdict(int)
            self.rest_log.clear()

    def __repr__(self) -> str:
        return f"Stats({self.snapshot()!r})"
