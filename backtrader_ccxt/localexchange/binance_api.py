"""Binance SPOT: the ``/api/v3`` REST endpoints and the raw ``/ws`` kline streams."""

from __future__ import annotations

import json

from aiohttp import web

from . import binance_format as fmt
from . import binance_private, binance_trades
from .data import BINANCE_INTERVALS, Candle
from .protocol import Protocol, Reply, query_ints
from .timing import Timing

__all__ = ["BinanceProtocol"]

_WEIGHTS = {
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    **binance_trades.WEIGHTS,
}

# Every REST base URL ccxt's binance knows (urls.api), with its path on the real host. All are
# pointed at the local server so that no request can leave the machine; only /api/v3 answers.
_REST_API_PATHS = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}
_WS_KEYS = (
    "spot",
    "margin",
    "linear",
    "inverse",
    "stock",
    "option",
    "optionMarket",
    "optionPrivate",
    "papi",
)


class BinanceProtocol(Protocol):
    """Binance SPOT REST (``/api/v3``) and raw kline and trade streams (``/ws``,
    ``/ws/<stream>``); the trade endpoints and streams are in ``binance_trades.py``."""

    name = "binance"
    native_timeframes = {t: t for t in BINANCE_INTERVALS}
    ws_routes = ("/ws", "/ws/{tail:.*}", binance_private.WS_API_PATH)
    ws_path = "/ws"
    default_timing = Timing()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_id = {fmt.market_id(s): s for s in self.replay.series}
        self.by_lower_id = {mid.lower(): s for mid, s in self.by_id.items()}
        self._weight_minute = -1
        self._weight_used = 0
        self._trade_streams: binance_trades.TradeStreams | None = None
        #: the private API (``binance_private.py``), set by ``LocalExchange.start``
        self.private: binance_private.BinancePrivate | None = None

    # -- REST -------------------------------------------------------------------------------

    def _json(self, body: str, status: int = 200) -> Reply:
        return Reply(status, body)

    def _error(self, code: int, msg: str, status: int = 400) -> Reply:
        return Reply(status, fmt.error_body(code, msg))

    def illegal_chars(self, name: str) -> Reply:
        """Binance's answer to a numeric parameter that is not 1 to 20 digits."""
        return self._error(
            fmt.ERR_ILLEGAL_CHARS,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )

    def too_many_requests(self, retry_after: float) -> Reply:
        code, msg = fmt.ERR_TOO_MANY_REQUESTS
        return Reply(429, fmt.error_body(code, msg), {"Retry-After": f"{retry_after:g}"})

    def busy(self) -> Reply:
        # Binance answers -1001 (DISCONNECTED) with an HTTP 5xx, never with 200
        return Reply(503, fmt.error_body(*fmt.ERR_INTERNAL))

    def rest(self, request: web.Request) -> Reply:
        path = request.path
        if path in binance_private.PATHS and self.private is not None:
            reply = self.private.rest(request)
        elif request.method not in ("GET", "HEAD"):
            reply = self._error(-1, "Method not allowed.", 405)
        elif path == "/api/v3/ping":
            reply = self._json("{}")
        elif path == "/api/v3/time":
            now = self.now_ms() if self.private is None else self.private.desk.server_ms()
            reply = self._json(fmt.dumps({"serverTime": now}))
        elif path == "/api/v3/exchangeInfo":
            reply = self._exchange_info(request)
        elif path in ("/api/v3/klines", "/api/v3/uiKlines"):
            reply = self._klines(request)
        elif path in binance_trades.PATHS:
            reply = binance_trades.rest(self, request)
        else:
            reply = Reply(404, "Not Found", content_type="text/plain")
        weight = self._add_weight(_WEIGHTS.get(path, 1))
        reply.headers["x-mbx-used-weight"] = str(weight)
        reply.headers["x-mbx-used-weight-1m"] = str(weight)
        return reply

    def _add_weight(self, weight: int) -> int:
        minute = self.now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weight_used = 0
        self._weight_used += weight
        return self._weight_used

    def _exchange_info(self, request: web.Request) -> Reply:
        series = list(self.replay.series.values())
        wanted = request.query.get("symbol")
        if wanted is not None:
            if wanted not in self.by_id:
                return self._error(*fmt.ERR_BAD_SYMBOL)
            series = [self.replay.series[self.by_id[wanted]]]
        return self._json(fmt.dumps(fmt.exchange_info(series, self.now_ms())))

    def _klines(self, request: web.Request) -> Reply:
        q = request.query
        for name in ("symbol", "interval"):
            if not q.get(name):
                return self._error(
                    fmt.ERR_MANDATORY,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        symbol = self.by_id.get(q["symbol"])
        if symbol is None:
            return self._error(*fmt.ERR_BAD_SYMBOL)
        timeframe = self.wire_timeframes.get(q["interval"])
        if timeframe is None:
            return self._error(*fmt.ERR_BAD_INTERVAL)
        ints, bad = query_ints(q, ("startTime", "endTime", "limit"))
        if bad is not None:
            return self.illegal_chars(bad)
        limit = ints.get("limit", 500)
        if not 1 <= limit <= 1000:
            return self._error(fmt.ERR_BAD_PARAM, "Data sent for parameter 'limit' is not valid.")
        start, end = ints.get("startTime"), ints.get("endTime")
        if start is not None and end is not None and start > end:
            return self._error(*fmt.ERR_START_AFTER_END)
        tf = self.replay.timeframe(timeframe)
        rows, omitted = self.replay.klines(
            symbol, tf, start, end, limit, self.now_ms(), self.faults.omit_empty
        )
        self.count_omitted(omitted)
        return self._json(fmt.dumps([fmt.kline_row(c) for c in rows]))

    # -- WebSocket --------------------------------------------------------------------------

    def on_open(self, hub, conn, request: web.Request) -> None:
        if request.path == binance_private.WS_API_PATH:
            if self.private is not None:
                self.private.ws_open(hub, conn)
            return
        tail = request.match_info.get("tail", "")
        if "@" in tail:  # /ws/<streamName>, like Binance's raw stream URLs
            self._subscribe(hub, conn, tail.split("/"), None, reply=False)
        elif tail and self.private is not None:  # /ws/<listenKey>: a user-data stream
            self.private.open_listen_key(hub, conn, tail)

    def on_binary(self, hub, conn, data: bytes) -> None:
        hub.send(conn, fmt.ws_error(3, "Invalid JSON: binary frame", None))

    def on_text(self, hub, conn, data: str) -> None:
        if conn.request.path == binance_private.WS_API_PATH and self.private is not None:
            self.private.ws_text(hub, conn, data)
            return
        try:
            req = json.loads(data)
        except ValueError as e:
            hub.send(conn, fmt.ws_error(3, f"Invalid JSON: {e}", None))
            return
        if not isinstance(req, dict):
            hub.send(conn, fmt.ws_error(2, "Invalid request: expected an object", None))
            return
        rid = req.get("id")
        if rid is not None and not isinstance(rid, (int, str)):
            hub.send(conn, fmt.ws_error(2, "Invalid request: invalid request ID", None))
            return
        method = req.get("method")
        params = req.get("params", [])
        if method == "SUBSCRIBE":
            hub.stats.ws_subscribe_messages += 1
            self._subscribe(hub, conn, params, rid)
        elif method == "UNSUBSCRIBE":
            hub.stats.ws_unsubscribe_messages += 1
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                hub.send(conn, fmt.ws_error(2, "Invalid request: invalid params", rid))
                return
            keys = [k for k in map(self._parse_stream, params) if k is not None]
            hub.remove_streams(conn, keys)
            if self._trade_streams is not None:
                trades = [binance_trades.parse_trade_stream(p, self.by_lower_id) for p in params]
                self._trade_streams.remove(conn, [k for k in trades if k is not None])
            hub.send(conn, fmt.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            held = list(conn.streams.values())
            if self._trade_streams is not None:
                held += self._trade_streams.held(conn)
            hub.send(conn, fmt.dumps({"result": held, "id": rid}))
        elif method == "SET_PROPERTY":
            hub.send(conn, fmt.dumps({"result": None, "id": rid}))
        elif method == "GET_PROPERTY":
            hub.send(conn, fmt.dumps({"result": False, "id": rid}))
        else:
            hub.send(
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
        timeframe = self.wire_timeframes.get(interval)
        if symbol is None or timeframe is None:
            return None
        return symbol, timeframe

    def _subscribe(self, hub, conn, params, rid, reply: bool = True) -> None:
        if not isinstance(params, list):
            hub.send(conn, fmt.ws_error(2, "Invalid request: invalid params", rid))
            return
        streams = {}
        trades = []
        for name in params:
            trade_key = binance_trades.parse_trade_stream(name, self.by_lower_id)
            if trade_key is not None and self.ledger is not None:
                trades.append(trade_key)
                continue
            key = self._parse_stream(name)
            if key is None:
                hub.send(conn, fmt.ws_error(2, "Invalid request: invalid stream", rid))
                return
            streams[key] = name
        if not hub.add_streams(conn, streams):
            hub.send(conn, fmt.ws_error(2, "Invalid request: too many streams", rid))
            return
        if trades:
            if self._trade_streams is None:
                self._trade_streams = binance_trades.TradeStreams(hub, self.ledger)
            self._trade_streams.add(conn, trades)
        if reply:
            hub.send(conn, fmt.dumps({"result": None, "id": rid}))

    def candle_frame(
        self, symbol: str, timeframe: str, candle: Candle, final: bool, event_ms: int
    ) -> str:
        return fmt.dumps(fmt.kline_event(symbol, self.wire_id(timeframe), candle, final, event_ms))

    def malformed_frame(self, kind: str, symbol: str, timeframe: str, event_ms: int) -> str:
        if kind == "json":
            return '{"e":"kline","E":'
        if kind == "text":
            return "malformed frame"
        mid = fmt.market_id(symbol)
        return fmt.dumps(
            {"e": "kline", "E": event_ms, "s": mid, "k": {"s": mid, "i": self.wire_id(timeframe)}}
        )

    # -- ccxt -------------------------------------------------------------------------------

    def ccxt_config(self, host: str, port: int) -> dict:
        rest, ws = f"http://{host}:{port}", f"ws://{host}:{port}/ws"
        api: dict = {key: rest + path for key, path in _REST_API_PATHS.items()}
        api["ws"] = dict.fromkeys(_WS_KEYS, ws)
        api["ws"]["ws-api"] = {
            "spot": f"ws://{host}:{port}/ws-api/v3",
            "linear": f"ws://{host}:{port}/ws-fapi/v1",
            "inverse": f"ws://{host}:{port}/ws-dapi/v1",
        }
        config: dict = {
            "urls": {"api": api},
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "defaultType": "spot",
                "adjustForTimeDifference": False,
            },
        }
        if self.extra_timeframes:
            config["timeframes"] = self.extra_timeframes_config()
        return config
