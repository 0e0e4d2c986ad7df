"""Bybit v5: ``data[].confirm`` in the kline push.

A push ``{"topic": "kline.1.BTCUSDT", "data": [{"start": open_ms, "end": .., "confirm":
bool, ..}], "type": "snapshot"}``; ``confirm: true`` marks the final state, sent a little
after ``end``, and often carries the same values as the last partial (so a rule that waits
for a *change* after the close never trusts it). REST pages are newest-first, 1000 rows.
"""

from __future__ import annotations

from .base import VenueAdapter, unified_names

__all__ = ["ADAPTER", "read_flags"]


def read_flags(exchange, client, message) -> dict | None:
    if not isinstance(message, dict):
        return None
    topic = message.get("topic")
    data = message.get("data")
    if not isinstance(topic, str) or not topic.startswith("kline.") or not isinstance(data, list):
        return None
    url = str(getattr(client, "url", ""))

    def lookup() -> tuple:
        parts = topic.split(".")
        market_type = "spot" if "spot" in url else "contract"
        return (
            exchange.safe_market(parts[-1], None, None, market_type)["symbol"],
            exchange.find_timeframe(parts[1]),
        )

    symbol, timeframe = unified_names(exchange, (url, topic), lookup)
    out: dict = {}
    for item in data:
        if not isinstance(item, dict) or "start" not in item:
            continue
        flag = item.get("confirm")
        out[(symbol, timeframe, int(item["start"]))] = flag if isinstance(flag, bool) else None
    return out


def read_event_ms(message) -> int | None:
    """The message's ``ts`` (the venue's send time, ms)."""
    event = message.get("ts") if isinstance(message, dict) else None
    return event if isinstance(event, int) and not isinstance(event, bool) else None


ADAPTER = VenueAdapter(
    name="bybit",
    rule="flag",
    read_flags=read_flags,
    read_event_ms=read_event_ms,
    final_lag_ms=1000,
    streams_per_watch=10,
    subscribe_interval=0.1,
    notes="data[].confirm marks the final, sent just after 'end'; REST newest-first, 1000 rows",
    ids=("bybit",),
)
