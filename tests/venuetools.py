"""A tap on the local exchange's REST side, for tests that need what it has no control for.

The local exchange has fault controls for 429, 5xx, timeouts and truncated bodies, but not for
a venue's own error body (Bybit's retCode 10016, Binance's -1001) nor a record of the query
strings it received. :class:`RestTap` wraps the running server's REST responder (from inside
the test, on the server's own object) to do both. The replies are per venue protocol in
:data:`TRY_AGAIN`, so the tests can be parametrised over the protocols the local exchange
speaks (Binance today; OKX and Bybit entries belong here when it speaks them).
"""

from __future__ import annotations

import json
import threading

from backtrader_ccxt.localexchange.protocol import Reply

#: protocol -> (klines path, HTTP status, body) of a documented "try again" reply
TRY_AGAIN = {
    "binance": (
        "/api/v3/klines",
        500,
        {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."},
    ),
    # "bybit": ("/v5/market/kline", 200, {"retCode": 10016, "retMsg": "System error. Please try
    #           again later.", "result": {}, "retExtInfo": {}, "time": 0}),
    # "okx": ("/api/v5/market/candles", 200, {"code": "50013", "msg": "Systems are busy. Please
    #         try again later.", "data": []}),
}

#: protocol -> (klines path, HTTP status, body) of an error ccxt has no class for
UNCLASSIFIED = {
    "binance": (
        "/api/v3/klines",
        400,
        {"code": -9999, "msg": "Something the venue never documented."},
    ),
}


class RestTap:
    """Records every REST request's path and query; answers ``pending`` requests for
    ``path`` with ``(status, body)`` instead of the real reply. Thread-safe."""

    def __init__(self, ex) -> None:
        protocol = ex._server.rest.protocol  # what answers a REST request, per venue
        self._original = protocol.rest
        self._lock = threading.Lock()
        self._reply: tuple[str, int, str] | None = None
        self.pending = 0
        self.served = 0
        self.requests: list[tuple[str, str]] = []  # (path, query string)
        protocol.rest = self._respond  # runs on the server thread

    def arm(self, path: str, status: int, body: dict, count: int) -> None:
        with self._lock:
            self._reply = (path, status, json.dumps(body))
            self.pending = count

    def _respond(self, request):
        with self._lock:
            self.requests.append((request.path, request.query_string))
            reply = self._reply
            if reply is not None and self.pending > 0 and request.path == reply[0]:
                self.pending -= 1
                self.served += 1
                return Reply(status=reply[1], body=reply[2])
        return self._original(request)

    def queries(self, path: str) -> list[str]:
        with self._lock:
            return [q for p, q in self.requests if p == path]
