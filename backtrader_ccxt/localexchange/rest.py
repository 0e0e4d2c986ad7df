"""The REST side shared by every protocol: counting, injected faults, held requests. What a
request means is the protocol's business (``<venue>_api.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from .faults import FaultState, RestFault
from .protocol import REQUEST_BODY, Protocol, Reply
from .stats import Stats

__all__ = ["RestApi"]

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class RestApi:
    """Answers every HTTP request that is not a WebSocket upgrade; counts each one."""

    def __init__(
        self,
        protocol: Protocol,
        stats: Stats,
        faults: FaultState,
        now_ms: Callable[[], int],
        closing: asyncio.Event,
        rest_timeout_hold: float,
    ):
        self.protocol = protocol
        self.stats = stats
        self.faults = faults
        self.now_ms = now_ms
        self._closing = closing
        self.rest_timeout_hold = rest_timeout_hold

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.body_exists:  # signed bodies (Binance's POST parameters), read once here
            request[REQUEST_BODY] = await request.text()
        fault = self.faults.take_rest(path)
        self.stats.count_rest(path, self.now_ms(), fault.kind if fault else None)
        if fault is None:
            reply = self.protocol.rest(request)
            if reply.lose:
                return await self._lose(request)
            return self._response(reply)
        return await self._rest_fault(fault, request)

    async def _lose(self, request: web.Request) -> web.StreamResponse:
        """Hold a request whose answer is lost, then cut its connection unanswered."""
        try:
            await asyncio.wait_for(self._closing.wait(), self.rest_timeout_hold)
        except asyncio.TimeoutError:
            pass
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503, text="Service Unavailable")

    @staticmethod
    def _response(reply: Reply) -> web.Response:
        return web.Response(
            status=reply.status,
            text=reply.body,
            content_type=reply.content_type,
            headers=reply.headers or None,
        )

    async def _rest_fault(self, fault: RestFault, request: web.Request) -> web.StreamResponse:
        counts = self.faults.counts
        if fault.kind == "429":
            counts["rest_429"] += 1
            return self._response(self.protocol.too_many_requests(fault.retry_after))
        if fault.kind == "busy":
            counts["rest_busy"] += 1
            return self._response(self.protocol.busy())
        if fault.kind == "5xx":
            counts["rest_5xx"] += 1
            text = _REASONS[fault.status]
            return web.Response(status=fault.status, text=text, content_type="text/plain")
        if fault.kind == "timeout":
            counts["rest_timeout"] += 1
            hold = self.rest_timeout_hold if fault.hold is None else fault.hold
            try:
                await asyncio.wait_for(self._closing.wait(), hold)
            except asyncio.TimeoutError:
                pass
            if self._closing.is_set():
                return web.Response(status=503, text="Service Unavailable")
            return self._response(self.protocol.rest(request))
        # truncated: the real answer with the second half of its body cut off
        counts["rest_truncated"] += 1
        body = self.protocol.rest(request).body
        return web.Response(
            status=200, text=body[: len(body) // 2], content_type="application/json"
        )
