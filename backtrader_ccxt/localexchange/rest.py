"""Binance SPOT REST endpoints (``/api/v3``) with injectable faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from . import binance_format as fmt
from .data import Replay
from .faults import FaultState, RestFault
from .stats import Stats

__all__ = ["RestApi"]

_WEIGHTS = {"/api/v3/exchangeInfo": 20, "/api/v3/klines": 2, "/api/v3/uiKlines": 2}


class RestApi:
    """Answers every HTTP request that is not a WebSocket upgrade; counts each one."""

    def __init__(
        self,
        replay: Replay,
        stats: Stats,
        faults: FaultState,
        now_ms: Callable[[], int],
        intervals: set[str],
        closing: asyncio.Event,
        rest_timeout_hold: float,
    ):
        self.replay = replay
        self.stats = stats
        self.faults = faults
        self.now_ms = now_ms
        self.intervals = intervals
        self.by_id = {fmt.market_id(s): s for s in replay.series}
        self._closing = closing
        self.rest_timeout_hold = rest_timeout_hold
        self._weight_minute = -1
        self._weight_used = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        fault = self.faults.take_rest(path)
        self.stats.count_rest(path, self.now_ms(), fault.kind if fault else None)
        if fault is None:
            return self._rest_response(request)
        return await self._rest_fault(fault, request)

    async def _rest_fault(self, fault: RestFault, request: web.Request) -> web.StreamResponse:
        counts = self.faults.counts
        if fault.kind == "429":
            counts["rest_429"] += 1
            code, msg = fmt.ERR_TOO_MANY_REQUESTS
            return self._json(
                fmt.error_body(code, msg), 429, {"Retry-After": f"{fault.retry_after:g}"}
            )
        if fault.kind == "5xx":
            counts["rest_5xx"] += 1
            reason = {
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                504: "Gateway Timeout",
            }[fault.status]
            return web.Response(status=fault.status, text=reason, content_type="text/plain")
        if fault.kind == "timeout":
            counts["rest_timeout"] += 1
            hold = self.rest_timeout_hold if fault.hold is None else fault.hold
            try:
                await asyncio.wait_for(self._closing.wait(), hold)
            except asyncio.TimeoutError:
                pass
            if self._closing.is_set():
                return web.Response(status=503, text="Service Unavailable")
            return self._rest_response(request)
        # truncated: the real answer with the second half of its body cut off
        counts["rest_truncated"] += 1
        full = self._rest_response(request)
        body = full.text or ""
        return web.Response(
            status=200, text=body[: len(body) // 2], content_type="application/json"
        )

    def _json(self, body: str, status: int = 200, headers: dict | None = None) -> web.Response:
        resp = web.Response(
            status=status, text=body, content_type="application/json", headers=headers
        )
        return resp

    def _rest_response(self, request: web.Request) -> web.Response:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            resp = self._json(fmt.error_body(-1, "Method not allowed."), 405)
        elif path == "/api/v3/ping":
            resp = self._json("{}")
        elif path == "/api/v3/time":
            resp = self._json(fmt.dumps({"serverTime": self.now_ms()}))
        elif path == "/api/v3/exchangeInfo":
            resp = self._exchange_info(request)
        elif path in ("/api/v3/klines", "/api/v3/uiKlines"):
            resp = self._klines(request)
        else:
            resp = web.Response(status=404, text="Not Found", content_type="text/plain")
        weight = self._add_weight(_WEIGHTS.get(path, 1))
        resp.headers["x-mbx-used-weight"] = str(weight)
        resp.headers["x-mbx-used-weight-1m"] = str(weight)
        return resp

    def _add_weight(self, weight: int) -> int:
        minute = self.now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weight_used = 0
        self._weight_used += weight
        return self._weight_used

    def _error(self, code: int, msg: str, status: int = 400) -> web.Response:
        return self._json(fmt.error_body(code, msg), status)

    def _exchange_info(self, request: web.Request) -> web.Response:
        series = list(self.replay.series.values())
        wanted = request.query.get("symbol")
        if wanted is not None:
            if wanted not in self.by_id:
                return self._error(*fmt.ERR_BAD_SYMBOL)
            series = [self.replay.series[self.by_id[wanted]]]
        return self._json(fmt.dumps(fmt.exchange_info(series, self.now_ms())))

    def _klines(self, request: web.Request) -> web.Response:
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
        interval = q["interval"]
        if interval not in self.intervals:
            return self._error(*fmt.ERR_BAD_INTERVAL)
        ints = {}
        for name in ("startTime", "endTime", "limit"):
            raw = q.get(name)
            if raw is None:
                continue
            if not raw.isdigit() or len(raw) > 20:
                return self._error(
                    fmt.ERR_ILLEGAL_CHARS,
                    f"Illegal characters found in parameter '{name}'; legal range is "
                    "'^[0-9]{1,20}$'.",
                )
            ints[name] = int(raw)
        limit = ints.get("limit", 500)
        if not 1 <= limit <= 1000:
            return self._error(fmt.ERR_BAD_PARAM, "Data sent for parameter 'limit' is not valid.")
        start, end = ints.get("startTime"), ints.get("endTime")
        if start is not None and end is not None and start > end:
            return self._error(*fmt.ERR_START_AFTER_END)
        tf = self.replay.timeframe(interval)
        rows, omitted = self.replay.klines(
            symbol, tf, start, end, limit, self.now_ms(), self.faults.omit_empty
        )
        self.faults.counts["omitted"] += omitted
        return self._json(fmt.dumps([fmt.kline_row(c) for c in rows]))
