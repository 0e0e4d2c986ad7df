"""The "candle closed" flag that ccxt.pro parses away, read from the raw frame.

ccxt.pro keeps ``[t, o, h, l, c, v]`` of each kline frame and drops the venue's closed flag
(Binance ``k.x``; ccxt issue #21885). Where this table knows the venue's frame, we wrap the
instance's ``handle_ohlcv`` so every frame that the venue marks final reaches the stream
worker with its own values, in arrival order, before ccxt's cache can overwrite them.

With a flag, a bar is delivered the moment its final frame arrives, and a candle closed
without one (a lost or skipped final) comes from REST. Venues not in the table use the
generic rules of :mod:`.assembler`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["install", "supported"]

OnFinal = Callable[[str, str, list], None]


def _binance(exchange, client, message) -> tuple[str, str, list] | None:
    kline = message.get("k") if isinstance(message, dict) else None
    if not isinstance(kline, dict) or kline.get("x") is not True:
        return None
    if message.get("e") != "kline":
        return None  # mark/index price klines: not what the feeds watch
    market_type = "spot" if exchange.is_spot_url(client) else "contract"
    symbol = exchange.safe_symbol(kline.get("s"), None, None, market_type)
    timeframe = exchange.find_timeframe(kline.get("i"))
    row = [
        int(kline["t"]),
        float(kline["o"]),
        float(kline["h"]),
        float(kline["l"]),
        float(kline["c"]),
        float(kline["v"]),
    ]
    return symbol, timeframe, row


_EXTRACTORS = {
    "binance": _binance,
    "binanceus": _binance,
    "binanceusdm": _binance,
    "binancecoinm": _binance,
}


def supported(exchange_id: str) -> bool:
    return exchange_id in _EXTRACTORS


def install(exchange, on_final: OnFinal) -> bool:
    """Wrap ``exchange.handle_ohlcv`` so ``on_final(symbol, timeframe, row)`` runs for every
    final frame. Returns False (and changes nothing) for venues not in the table."""
    extract = _EXTRACTORS.get(exchange.id)
    original = getattr(exchange, "handle_ohlcv", None)
    if extract is None or original is None:
        return False

    def handle_ohlcv(client, message):
        original(client, message)
        try:
            found = extract(exchange, client, message)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("%s: unreadable kline frame ignored: %s", exchange.id, exc)
            return
        if found is not None:
            on_final(*found)

    exchange.handle_ohlcv = handle_ohlcv
    return True
