"""OKX v5: public REST (time, SPOT instruments, candles and history candles) and the
``/ws/v5/business`` candle channels."""

from __future__ import annotations

import json

from aiohttp import web

from . import okx_format as fmt
from . import okx_trades
from .data import Candle
from .protocol import Protocol, Reply, query_ints
from .timing import Timing

__all__ = ["OkxProtocol"]

#: ``market/candles`` serves only the newest 1,440 candles (OKX's documented window); ccxt
#: switches to ``market/history-candles`` for a ``since`` older than that.
RECENT_WINDOW = 1440
CANDLES_LIMIT = 300
HISTORY_LIMIT = 300  # ccxt 4.5.90: "regular candles (recent & historical) both have 300 max"
DEFAULT_LIMIT = 100
WS_ROOT = "/ws/v5"


class OkxProtocol(Protocol):
    """OKX v5 public REST under ``/api/v5`` and WebSocket under ``/ws/v5/{business,public}``.

    Candles are pushed only on ``/ws/v5/business`` (where current ccxt.pro subscribes them);
    ``/public`` answers a candle subscription with error 60018, as OKX does since the move.
    Timeframes of 6h and longer are OKX's UTC-aligned bars (``6Hutc``, ``1Dutc`` ...: what
    ccxt requests over REST); OKX's Hong Kong aligned ``6H``/``1D``/``1W`` are not served.
    """

    name = "okx"
    native_timeframes = {
        "1m": "1m",
        "3m": "3m",
        "5m": "5m",
        "15m": "15m",
        "30m": "30m",
        "1h": "1H",
        "2h": "2H",
        "4h": "4H",
        "6h": "6Hutc",
        "12h": "12Hutc",
        "1d": "1Dutc",
        "1w": "1Wutc",
    }
    ws_routes = (WS_ROOT, WS_ROOT + "/{tail:.*}")
    ws_path = WS_ROOT + "/business"
    # the final of every 3rd candle comes after its successor's first push
    default_timing = Timing(late_final_every=3)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_id = {fmt.inst_id(s): s for s in self.replay.series}

    # -- REST -------------------------------------------------------------------------------

    def _ok(self, data: list) -> Reply:
        return Reply(200, fmt.dumps(fmt.envelope(data)))

    def _error(self, code: str, msg: str, status: int = 200) -> Reply:
        return Reply(status, fmt.error_body(code, msg))

    def too_many_requests(self, retry_after: float) -> Reply:
        return Reply(429, fmt.error_body(*fmt.ERR_TOO_MANY), {"Retry-After": f"{retry_after:g}"})

    def busy(self) -> Reply:
        return self._error(*fmt.ERR_BUSY)

    def rest(self, request: web.Request) -> Reply:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return Reply(405, fmt.dumps({"msg": "Method Not Allowed", "code": "405"}))
        if path == "/api/v5/public/time":
            return self._ok([{"ts": str(self.now_ms())}])
        if path == "/api/v5/public/instruments":
            return self._instruments(request)
        if path == "/api/v5/market/candles":
            return self._candles(request, history=False)
        if path == "/api/v5/market/history-candles":
            return self._candles(request, history=True)
        if path in okx_trades.PATHS:
            return okx_trades.rest(self, request)
        return Reply(404, fmt.dumps({"msg": "Not Found", "code": "404"}))

    def _instruments(self, request: web.Request) -> Reply:
        q = request.query
        inst_type = q.get("instType")
        if not inst_type:
            return self._error(fmt.ERR_EMPTY, "Parameter instType can not be empty.", 400)
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            return self._error(fmt.ERR_PARAM, "Parameter instType error")
        if inst_type != "SPOT":
            return self._ok([])  # only spot markets are served
        series = list(self.replay.series.values())
        wanted = q.get("instId")
        if wanted:
            if wanted not in self.by_id:
                return self._error(*fmt.ERR_BAD_INST)
            series = [self.replay.series[self.by_id[wanted]]]
        listed = self.replay.first_open(self.replay.timeframe("1m"))
        return self._ok([fmt.instrument(s, listed) for s in series])

    def _candles(self, request: web.Request, history: bool) -> Reply:
        q = request.query
        inst = q.get("instId")
        if not inst:
            return self._error(fmt.ERR_EMPTY, "Parameter instId can not be empty.", 400)
        symbol = self.by_id.get(inst)
        if symbol is None:
            return self._error(*fmt.ERR_BAD_INST)
        timeframe = self.wire_timeframes.get(q.get("bar", "1m"))
        if timeframe is None:
            return self._error(fmt.ERR_PARAM, "Parameter bar error")
        ints, bad = query_ints(q, ("after", "before", "limit"))
        if bad is not None:
            return self._error(fmt.ERR_PARAM, f"Parameter {bad} error")
        limit = ints.get("limit", DEFAULT_LIMIT)
        if limit < 1:
            return self._error(fmt.ERR_PARAM, "Parameter limit error")
        limit = min(limit, HISTORY_LIMIT if history else CANDLES_LIMIT)
        tf = self.replay.timeframe(timeframe)
        now = self.now_ms()
        # after/before are exclusive bounds on the candle's open time
        start = ints["before"] + 1 if "before" in ints else None
        end = ints["after"] - 1 if "after" in ints else None
        if not history:
            window_start = tf.open_of(tf.index(now) - (RECENT_WINDOW - 1))
            start = window_start if start is None else max(start, window_start)
        rows, omitted = self.replay.rows(
            symbol, tf, start, end, limit, now, self.faults.omit_empty, newest=True,
            closed_only=history,
        )  # fmt: skip
        self.count_omitted(omitted)
        forming_open = tf.floor(now)
        data = [fmt.candle_row(c, c.open_ms < forming_open) for c in reversed(rows)]
        return self._ok(data)

    # -- WebSocket --------------------------------------------------------------------------

    @staticmethod
    def _conn_id(conn) -> str:
        return f"{conn.id:08x}"

    def _channel(self, timeframe: str) -> str:
        return "candle" + self.wire_id(timeframe)

    def _parse_arg(self, conn, arg) -> tuple[str, str] | None:
        if not isinstance(arg, dict) or not conn.request.path.endswith("/business"):
            return None
        channel, inst = arg.get("channel"), arg.get("instId")
        if not isinstance(channel, str) or not channel.startswith("candle"):
            return None
        symbol = self.by_id.get(inst) if isinstance(inst, str) else None
        timeframe = self.wire_timeframes.get(channel[len("candle") :])
        if symbol is None or timeframe is None:
            return None
        return symbol, timeframe

    def _no_channel(self, arg) -> str:
        if isinstance(arg, dict):
            what = f"channel:{arg.get('channel')},instId:{arg.get('instId')}"
        else:
            what = f"args:{arg}"
        return (
            f"Wrong URL or {what} doesn't exist. Please use the correct URL, channel and "
            "parameters referring to API document."
        )

    def on_text(self, hub, conn, data: str) -> None:
        cid = self._conn_id(conn)
        if data == "ping":  # OKX's text keepalive
            hub.stats.ws_client_pings += 1
            hub.send(conn, "pong")
            return
        try:
            req = json.loads(data)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            hub.send(conn, fmt.ws_error(fmt.WS_BAD_JSON, f"Illegal request: {data}", cid))
            return
        op, args = req.get("op"), req.get("args")
        if op not in ("subscribe", "unsubscribe"):
            hub.send(conn, fmt.ws_error(fmt.WS_BAD_OP, f"Invalid op: {op}", cid))
            return
        if not isinstance(args, list) or not args:
            hub.send(conn, fmt.ws_error(fmt.WS_BAD_JSON, f"Illegal request: {data}", cid))
            return
        if op == "subscribe":
            hub.stats.ws_subscribe_messages += 1
        else:
            hub.stats.ws_unsubscribe_messages += 1
        extra = {"id": req["id"]} if "id" in req else {}
        for arg in args:  # OKX answers every argument on its own
            if okx_trades.is_trades_arg(arg):  # public trades: okx_trades.py
                okx_trades.on_arg(self, hub, conn, op, arg, extra, cid)
                continue
            key = self._parse_arg(conn, arg)
            if key is None:
                hub.send(conn, fmt.ws_error(fmt.WS_NO_CHANNEL, self._no_channel(arg), cid))
                continue
            reply_arg = {"channel": arg["channel"], "instId": arg["instId"]}
            if op == "subscribe":
                if not hub.add_streams(conn, {key: f"{arg['channel']}:{arg['instId']}"}):
                    hub.send(conn, fmt.ws_error("60026", "Subscription limit exceeded", cid))
                    continue
            else:
                hub.remove_streams(conn, [key])
            hub.send(conn, fmt.dumps({**extra, **fmt.event(op, reply_arg, cid)}))

    def on_binary(self, hub, conn, data: bytes) -> None:
        hub.send(
            conn,
            fmt.ws_error(fmt.WS_BAD_JSON, "Illegal request: binary frame", self._conn_id(conn)),
        )

    def candle_frame(
        self, symbol: str, timeframe: str, candle: Candle, final: bool, event_ms: int
    ) -> str:
        return fmt.dumps(
            fmt.candle_push(self._channel(timeframe), fmt.inst_id(symbol), candle, final)
        )

    def malformed_frame(self, kind: str, symbol: str, timeframe: str, event_ms: int) -> str:
        if kind == "json":
            return '{"arg":{"channel":"' + self._channel(timeframe) + '","instId":'
        if kind == "text":
            return "malformed frame"
        arg = {"channel": self._channel(timeframe), "instId": fmt.inst_id(symbol)}
        return fmt.dumps({"arg": arg, "data": [[]]})

    # -- ccxt -------------------------------------------------------------------------------

    def ccxt_config(self, host: str, port: int) -> dict:
        urls = {"rest": f"http://{host}:{port}", "ws": f"ws://{host}:{port}{WS_ROOT}"}
        config: dict = {
            "urls": {"api": dict(urls), "test": dict(urls)},
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "defaultType": "spot",
                "adjustForTimeDifference": False,
            },
        }
        if self.extra_timeframes:
            config["timeframes"] = self.extra_timeframes_config()
        return config
