"""Gate: ``result.w`` ("window closed"), which Gate's docs say may be missing.

A push ``{"channel": "spot.candlesticks", "result": {"t": open_s, "n": "1m_BTC_USDT", "w":
true, ..}}``. Where ``w`` is true the frame is the final state; where it is missing the
frame carries no word either way and the timing rule decides.
"""

from __future__ import annotations

from .base import VenueAdapter, unified_names

__all__ = ["ADAPTER", "read_flags"]


def read_flags(exchange, client, message) -> dict | None:
    if not isinstance(message, dict):
        return None
    channel = message.get("channel")
    if not isinstance(channel, str) or not channel.endswith(".candlesticks"):
        return None
    market_type = "spot" if channel.startswith("spot") else "contract"
    result = message.get("result")
    items = result if isinstance(result, list) else [result]
    out: dict = {}
    for item in items:
        if not isinstance(item, dict) or "t" not in item:
            continue
        sub = str(item.get("n", ""))

        def lookup(sub=sub) -> tuple:
            timeframe_id, _, market_id = sub.partition("_")
            return (
                exchange.safe_symbol(market_id, None, "_", market_type),
                exchange.find_timeframe(timeframe_id),
            )

        symbol, timeframe = unified_names(exchange, (market_type, sub), lookup)
        flag = item.get("w")
        out[(symbol, timeframe, int(float(item["t"]) * 1000))] = True if flag is True else None
    return out


def read_event_ms(message) -> int | None:
    """The message's ``time_ms`` (the venue's send time, ms)."""
    event = message.get("time_ms") if isinstance(message, dict) else None
    return event if isinstance(event, int) and not isinstance(event, bool) else None


ADAPTER = VenueAdapter(
    name="gate",
    rule="flag-or-timing",
    read_flags=read_flags,
    read_event_ms=read_event_ms,
    final_lag_ms=1000,
    streams_per_watch=100,
    notes="result.w marks the final where present (may be missing: then the timing rule)",
    ids=("gate", "gateio"),
)
