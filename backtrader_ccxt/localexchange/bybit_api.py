"""Bybit v5: public REST (time, spot instruments, klines) and the public spot WebSocket
``kline.<interval>.<symbol>`` topics."""

from __future__ import annotations

import json

from aiohttp import web

from . import bybit_format as fmt
from . import bybit_trades
from .data import Candle
from .protocol import Protocol, Reply, query_ints
from .timing import Timing

__all__ = ["BybitProtocol"]

KLINE_LIMIT = 1000
DEFAULT_LIMIT = 200
SPOT_WS = "/v5/public/spot"


def _settled(k: int) -> bool:
    # 5 of the 6 recorded Bybit finals repeat their last partial's values
    return k % 6 != 0


class BybitProtocol(Protocol):
    """Bybit v5 public REST under ``/v5/market`` and WebSocket at ``/v5/public/spot``.

    The final (``confirm: true``) of a candle comes ``final_delay`` after its ``end`` (real
    v5 frames: about 0.45 s on 1m candles; here at most 5% of the candle), right before the
    successor's first update, and on 5 candles of 6 it carries the same values as the last
    partial update, as recorded.
    """

    name = "bybit"
    native_timeframes = {
        "1m": "1",
        "3m": "3",
        "5m": "5",
        "15m": "15",
        "30m": "30",
        "1h": "60",
        "2h": "120",
        "4h": "240",
        "6h": "360",
        "12h": "720",
        "1d": "D",
        "1w": "W",
    }
    ws_routes = ("/v5/public/{tail:.*}", "/v5/private", "/v5/trade", "/spot/private/v3")
    ws_path = SPOT_WS
    default_timing = Timing(final_delay_ms=450)
    settled_last_update = staticmethod(_settled)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_id = {fmt.market_id(s): s for s in self.replay.series}

    # -- REST -------------------------------------------------------------------------------

    def _ok(self, result: dict) -> Reply:
        return Reply(200, fmt.dumps(fmt.envelope(result, self.now_ms())))

    def _error(self, code: int, msg: str, status: int = 200) -> Reply:
        # Bybit answers request errors with HTTP 200 and a non-zero retCode
        return Reply(status, fmt.dumps(fmt.envelope({}, self.now_ms(), code, msg)))

    def too_many_requests(self, retry_after: float) -> Reply:
        reset = self.now_ms() + int(retry_after * 1000)
        headers = {
            "Retry-After": f"{retry_after:g}",
            "X-Bapi-Limit-Status": "0",
            "X-Bapi-Limit-Reset-Timestamp": str(reset),
        }
        return Reply(429, self._error(*fmt.ERR_TOO_MANY).body, headers)

    def busy(self) -> Reply:
        return self._error(*fmt.ERR_BUSY)

    def rest(self, request: web.Request) -> Reply:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return self._error(10017, "Request path not found or request method is invalid")
        if path == "/v5/market/time":
            now = self.now_ms()
            return self._ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})
        if path == "/v5/market/instruments-info":
            return self._instruments(request)
        if path == "/v5/market/kline":
            return self._kline(request)
        if path == bybit_trades.PATH:
            return bybit_trades.rest(self, request)
        return Reply(404, "Not Found", content_type="text/plain")

    def _instruments(self, request: web.Request) -> Reply:
        q = request.query
        category = q.get("category")
        if category not in ("spot", "linear", "inverse", "option"):
            return self._error(fmt.ERR_PARAM, "Illegal category")
        series = list(self.replay.series.values()) if category == "spot" else []
        wanted = q.get("symbol")
        if wanted:
            series = [s for s in series if fmt.market_id(s.symbol) == wanted]
        items = [fmt.instrument(s) for s in series]
        return self._ok({"category": category, "list": items, "nextPageCursor": ""})

    def _kline(self, request: web.Request) -> Reply:
        q = request.query
        category = q.get("category", "linear")
        if category != "spot":
            # only spot markets are served
            return self._error(*fmt.ERR_BAD_SYMBOL)
        symbol = self.by_id.get(q.get("symbol", ""))
        if symbol is None:
            return self._error(*fmt.ERR_BAD_SYMBOL)
        timeframe = self.wire_timeframes.get(q.get("interval", ""))
        if timeframe is None:
            return self._error(fmt.ERR_PARAM, "Invalid interval.")
        ints, bad = query_ints(q, ("start", "end", "limit"))
        if bad is not None:
            return self._error(fmt.ERR_PARAM, f"params error: {bad} invalid")
        limit = ints.get("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= KLINE_LIMIT:
            return self._error(fmt.ERR_PARAM, "params error: limit invalid")
        start, end = ints.get("start"), ints.get("end")
        if start is not None and end is not None and start > end:
            return self._error(fmt.ERR_PARAM, "params error: start > end")
        tf = self.replay.timeframe(timeframe)
        if start is not None:
            start = tf.floor(start)  # the candle containing start is included
        rows, omitted = self.replay.rows(
            symbol, tf, start, end, limit, self.now_ms(), self.faults.omit_empty,
            newest=start is None,
        )  # fmt: skip
        self.count_omitted(omitted)
        result = {
            "symbol": fmt.market_id(symbol),
            "category": "spot",
            "list": [fmt.kline_row(c) for c in reversed(rows)],  # newest first
        }
        return self._ok(result)

    # -- WebSocket --------------------------------------------------------------------------

    @staticmethod
    def _conn_id(conn) -> str:
        return f"localexchange{conn.id:06d}-{conn.id}"

    def _topic(self, symbol: str, timeframe: str) -> str:
        return f"kline.{self.wire_id(timeframe)}.{fmt.market_id(symbol)}"

    def _parse_topic(self, conn, topic) -> tuple[str, str] | None:
        if not isinstance(topic, str) or conn.request.path != SPOT_WS:
            return None
        parts = topic.split(".")
        if len(parts) != 3 or parts[0] != "kline":
            return None
        symbol = self.by_id.get(parts[2])
        timeframe = self.wire_timeframes.get(parts[1])
        if symbol is None or timeframe is None:
            return None
        return symbol, timeframe

    def on_text(self, hub, conn, data: str) -> None:
        cid = self._conn_id(conn)
        try:
            req = json.loads(data)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            hub.send(conn, fmt.op_reply("", cid, None, False, "error:invalid op"))
            return
        op, rid, args = req.get("op"), req.get("req_id"), req.get("args")
        if op == "ping":
            hub.stats.ws_client_pings += 1
            hub.send(conn, fmt.op_reply("ping", cid, rid, True, "pong"))
            return
        if op not in ("subscribe", "unsubscribe"):
            hub.send(conn, fmt.op_reply(str(op), cid, rid, False, "error:invalid op"))
            return
        if not isinstance(args, list) or not args:
            hub.send(conn, fmt.op_reply(op, cid, rid, False, "error:args empty"))
            return
        if op == "subscribe":
            hub.stats.ws_subscribe_messages += 1
        else:
            hub.stats.ws_unsubscribe_messages += 1
        streams = {}
        trades = []  # public trades: bybit_trades.py
        for topic in args:
            traded = bybit_trades.parse_topic(self, conn, topic)
            if traded is not None:
                trades.append(traded)
                continue
            key = self._parse_topic(conn, topic)
            if key is None:
                msg = f"error:handler not found,topic:{topic}"
                hub.send(conn, fmt.op_reply(op, cid, rid, False, msg))
                return
            if op == "subscribe" and key in conn.streams:
                msg = f"error:already subscribed,topic:{topic}"
                hub.send(conn, fmt.op_reply(op, cid, rid, False, msg))
                return
            streams[key] = topic
        if op == "subscribe":
            if not hub.add_streams(conn, streams):
                msg = "error:topics exceed the limit of this connection"
                hub.send(conn, fmt.op_reply(op, cid, rid, False, msg))
                return
        else:
            hub.remove_streams(conn, list(streams))
        if trades:
            bybit_trades.subscribe(self, hub, conn, op, trades)
        hub.send(conn, fmt.op_reply(op, cid, rid))

    def on_binary(self, hub, conn, data: bytes) -> None:
        hub.send(conn, fmt.op_reply("", self._conn_id(conn), None, False, "error:invalid op"))

    def candle_frame(
        self, symbol: str, timeframe: str, candle: Candle, final: bool, event_ms: int
    ) -> str:
        return fmt.dumps(
            fmt.kline_push(
                self._topic(symbol, timeframe), self.wire_id(timeframe), candle, final, event_ms
            )
        )

    def malformed_frame(self, kind: str, symbol: str, timeframe: str, event_ms: int) -> str:
        if kind == "json":
            return '{"topic":"' + self._topic(symbol, timeframe) + '","data":[{'
        if kind == "text":
            return "malformed frame"
        topic = self._topic(symbol, timeframe)
        return fmt.dumps({"topic": topic, "data": [{}], "ts": event_ms, "type": "snapshot"})

    # -- ccxt -------------------------------------------------------------------------------

    def ccxt_config(self, host: str, port: int) -> dict:
        rest, ws = f"http://{host}:{port}", f"ws://{host}:{port}"
        hosts = dict.fromkeys(("spot", "futures", "v2", "public", "private"), rest)
        sockets = {
            "public": {
                "spot": ws + SPOT_WS,
                "inverse": ws + "/v5/public/inverse",
                "option": ws + "/v5/public/option",
                "linear": ws + "/v5/public/linear",
            },
            "private": {
                "spot": {"unified": ws + "/v5/private", "nonUnified": ws + "/spot/private/v3"},
                "contract": ws + "/v5/private",
                "usdc": ws + "/v5/private",
                "trade": ws + "/v5/trade",
            },
        }
        urls = {
            key: {**hosts, "ws": json.loads(json.dumps(sockets))}
            for key in ("api", "test", "demotrading")
        }
        config: dict = {
            "urls": urls,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "defaultType": "spot",
                "adjustForTimeDifference": False,
            },
        }
        if self.extra_timeframes:
            config["timeframes"] = self.extra_timeframes_config()
        return config
