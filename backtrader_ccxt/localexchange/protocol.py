"""The venue protocol interface: what differs between Binance, OKX and Bybit.

The shared server (``rest.py``, ``streams.py``) owns the replay, the emission timer, the
connections, the faults and the counters. A :class:`Protocol` only translates: REST requests
into :class:`Reply` objects, client WebSocket messages into hub calls, candles into the venue's
frames, and gives the ccxt constructor config that points that venue's client at the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from .data import Candle, Replay, parse_timeframe
from .timing import Timing

if TYPE_CHECKING:
    from aiohttp import web

    from .faults import FaultState
    from .trades import TradeLedger

__all__ = [
    "PROTOCOLS",
    "REQUEST_BODY",
    "CandleFrame",
    "Protocol",
    "Reply",
    "protocol_class",
    "query_ints",
]

#: Valid values of ``LocalExchange(protocol=...)``.
PROTOCOLS = ("binance", "okx", "bybit")


def _request_key(name: str):
    from aiohttp import web

    key = getattr(web, "RequestKey", None)  # aiohttp >= 3.12; a plain str before
    return key(name, str) if key is not None else name


#: ``request[REQUEST_BODY]``: the request body as text, read by ``rest.py`` before the
#: (synchronous) protocol answers; absent when the request has no body.
REQUEST_BODY = _request_key("localexchange_body")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer. ``lose``: the request took effect but the answer is never sent (the
    connection is held, then cut: the ``lose_order_reply`` fault)."""

    status: int
    body: str
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"
    lose: bool = False


@dataclass(frozen=True)
class CandleFrame:
    """One candle frame written to one WebSocket connection (see
    :meth:`LocalExchange.add_frame_listener`).

    Fields:
        protocol: ``"binance"``, ``"okx"`` or ``"bybit"``.
        symbol: unified symbol (``"BTC/USDT"``); timeframe: unified name (``"1m"``).
        open_ms: the candle's open time; final: the venue's closed flag as sent.
        kind: ``"update"`` (the normal stream), ``"duplicate"`` or ``"out_of_order"`` (faults).
        event_ms: the exchange clock when the frame was built.
        sent_at: ``time.time()`` right after the frame was written to the socket.
        connection: the server's id of the connection.
    """

    protocol: str
    symbol: str
    timeframe: str
    open_ms: int
    final: bool
    kind: str
    event_ms: int
    sent_at: float
    connection: int


class Protocol:
    """Base of one venue's protocol. Subclasses set the class attributes and implement the
    methods that raise ``NotImplementedError``.

    Params:
        replay: the shared candles. faults: the shared fault state (read for ``omit_empty``
        and to count omitted rows). now_ms: the exchange clock.
        extra_timeframes: unified timeframe names the venue lacks but must serve (e.g.
        ``"1s"`` on OKX); their wire id is the name itself.
    """

    name = ""
    #: unified timeframe -> the venue's interval id, for the intervals the venue has
    native_timeframes: dict[str, str] = {}
    #: aiohttp route patterns that upgrade to WebSocket
    ws_routes: tuple[str, ...] = ()
    #: the path of the candle WebSocket (``LocalExchange.ws_url``)
    ws_path = "/"
    #: the venue's default frame timing (``late_final_every`` may be overridden)
    default_timing = Timing()
    #: rule for ``Replay(settled_last_update=...)``, or None
    settled_last_update: Callable[[int], bool] | None = None
    #: most streams one connection may hold
    max_streams = 1024
    #: the trade ledger (``trades.py``), set by ``LocalExchange.start``; None: no trades
    ledger: TradeLedger | None = None

    def __init__(
        self,
        replay: Replay,
        faults: FaultState,
        now_ms: Callable[[], int],
        extra_timeframes: tuple[str, ...] = (),
    ):
        self.replay = replay
        self.faults = faults
        self.now_ms = now_ms
        self.extra_timeframes = tuple(
            t for t in extra_timeframes if t not in self.native_timeframes
        )
        #: wire interval id -> unified timeframe name, for everything served
        self.wire_timeframes = {v: k for k, v in self.native_timeframes.items()}
        for t in self.extra_timeframes:
            parse_timeframe(t)
            self.wire_timeframes[t] = t

    def wire_id(self, timeframe: str) -> str:
        """Unified timeframe name -> the venue's interval id."""
        return self.native_timeframes.get(timeframe, timeframe)

    # -- REST -------------------------------------------------------------------------------

    def rest(self, request: web.Request) -> Reply:
        """The answer to a request that carries no fault."""
        raise NotImplementedError

    def too_many_requests(self, retry_after: float) -> Reply:
        """An HTTP 429 in the venue's format, with ``Retry-After``."""
        raise NotImplementedError

    def busy(self) -> Reply:
        """The venue's "system busy, try again later" answer."""
        raise NotImplementedError

    def count_omitted(self, n: int) -> None:
        self.faults.counts["omitted"] += n

    # -- WebSocket --------------------------------------------------------------------------

    def on_open(self, hub, conn, request: web.Request) -> None:
        """A connection was accepted (Binance subscribes streams named in the URL)."""

    def on_text(self, hub, conn, data: str) -> None:
        """A text frame from the client: subscribe, unsubscribe, keepalive, errors."""
        raise NotImplementedError

    def on_binary(self, hub, conn, data: bytes) -> None:
        """A binary frame from the client (no venue expects one)."""

    def candle_frame(
        self, symbol: str, timeframe: str, candle: Candle, final: bool, event_ms: int
    ) -> str:
        """The push of one candle state."""
        raise NotImplementedError

    def malformed_frame(self, kind: str, symbol: str, timeframe: str, event_ms: int) -> str:
        """A bad frame for ``faults.send_malformed``: ``"text"`` (not JSON), ``"json"``
        (truncated JSON), ``"kline"`` (a candle push without candle fields)."""
        raise NotImplementedError

    # -- ccxt -------------------------------------------------------------------------------

    def ccxt_config(self, host: str, port: int) -> dict:
        """The ccxt constructor config for this venue's class pointing at ``host:port``."""
        raise NotImplementedError

    def extra_timeframes_config(self) -> dict:
        return {t: t for t in self.extra_timeframes}


def query_ints(query, names) -> tuple[dict[str, int], str | None]:
    """The integer query parameters among ``names`` (absent or empty ones left out), and the
    first that is not 1 to 20 digits (None when all are): each venue words its own error."""
    ints: dict[str, int] = {}
    for name in names:
        raw = query.get(name)
        if raw is None or raw == "":
            continue
        if not raw.isdigit() or len(raw) > 20:
            return ints, name
        ints[name] = int(raw)
    return ints, None


def protocol_class(name: str) -> type[Protocol]:
    """The :class:`Protocol` subclass for ``name``; ``ConfigurationError`` (a ValueError)
    naming the valid choices otherwise."""
    if name == "binance":
        from .binance_api import BinanceProtocol

        return BinanceProtocol
    if name == "okx":
        from .okx_api import OkxProtocol

        return OkxProtocol
    if name == "bybit":
        from .bybit_api import BybitProtocol

        return BybitProtocol
    raise ConfigurationError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")
