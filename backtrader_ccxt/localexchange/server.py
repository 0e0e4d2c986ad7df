"""The aiohttp application on the exchange's own event loop: REST, WebSocket streams, and
their lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from .data import Replay
from .faults import FaultState
from .protocol import Protocol
from .rest import RestApi
from .stats import Stats
from .streams import StreamHub
from .timing import Timing

__all__ = ["ExchangeServer"]


class ExchangeServer:
    """Serves one :class:`Replay` in one protocol. Create, ``await start()`` and
    ``await stop()`` on one loop."""

    def __init__(
        self,
        protocol: Protocol,
        replay: Replay,
        stats: Stats,
        faults: FaultState,
        now_ms: Callable[[], int],
        timing: Timing,
        *,
        host: str,
        port: int,
        exact_clock: bool,
        poll_interval: float,
        ping_interval: float,
        pong_timeout: float,
        rest_timeout_hold: float,
        max_catchup: int,
    ):
        self.host = host
        self.port = port
        self.protocol = protocol
        self._closing = asyncio.Event()
        self.rest = RestApi(protocol, stats, faults, now_ms, self._closing, rest_timeout_hold)
        self.streams = StreamHub(
            protocol,
            replay,
            stats,
            faults,
            now_ms,
            timing,
            exact_clock=exact_clock,
            poll_interval=poll_interval,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            max_catchup=max_catchup,
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = web.Application()
        for route in self.protocol.ws_routes:
            app.router.add_get(route, self.streams.handle)
        app.router.add_route("*", "/{path:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.streams.start()
        return self.port

    async def stop(self) -> None:
        """Close every connection, end held requests and background tasks, unbind."""
        self._closing.set()  # releases held ("timeout") REST requests
        await self.streams.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def drop_connections(self, clean: bool) -> int:
        return self.streams.drop_connections(clean)
