"""Binance family (spot, USD-M, COIN-M, Binance US): the kline frame's ``k.x`` flag.

A kline event ``{"e": "kline", "s": .., "k": {"t": open_ms, "i": "1m", "x": bool, ..}}`` is
sent about every second (every 2 s on spot 1m); the one with ``x: true`` is the candle's
final state, sent at its close. ccxt.pro keeps ``[t, o, h, l, c, v]`` and drops ``x``.
Mark- and index-price klines (other event names) are not what the feeds watch.
"""

from __future__ import annotations

from .base import VenueAdapter, unified_names

__all__ = ["ADAPTER", "read_flags"]


def read_flags(exchange, client, message) -> dict | None:
    if not isinstance(message, dict) or message.get("e") != "kline":
        return None
    kline = message.get("k")
    if not isinstance(kline, dict):
        return None
    market_id, interval = kline.get("s"), kline.get("i")

    def lookup() -> tuple:
        market_type = "spot" if exchange.is_spot_url(client) else "contract"
        return (
            exchange.safe_symbol(market_id, None, None, market_type),
            exchange.find_timeframe(interval),
        )

    symbol, timeframe = unified_names(exchange, (client.url, market_id, interval), lookup)
    flag = kline.get("x")
    return {(symbol, timeframe, int(kline["t"])): flag if isinstance(flag, bool) else None}


def read_event_ms(message) -> int | None:
    """The kline event's ``E`` (the venue's send time, ms)."""
    event = message.get("E") if isinstance(message, dict) else None
    return event if isinstance(event, int) and not isinstance(event, bool) else None


ADAPTER = VenueAdapter(
    name="binance",
    rule="flag",
    read_flags=read_flags,
    read_event_ms=read_event_ms,
    final_lag_ms=0,
    streams_per_watch=200,
    streams_per_instance=1000,
    subscribe_interval=0.25,
    notes="k.x marks the final frame, sent at the close; REST pages of 1000 rows, oldest first",
    ids=("binance", "binanceus", "binanceusdm", "binancecoinm"),
)
