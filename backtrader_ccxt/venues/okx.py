"""OKX v5 (and OKCoin, same schema): the candle array's index 8, ``confirm``.

A push ``{"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [[ts, o, h, l, c,
vol, volCcy, volCcyQuote, confirm]]}`` on the ``/business`` endpoint; ``confirm`` is ``"1"``
on the candle's final state. OKX sends the final of candle T *after* the first update of
T+1 at times, so the successor's arrival closes nothing: the stream waits for the flagged
final (up to :attr:`final_lag_ms` past the close) before asking REST. REST pages are
newest-first, 300 rows (``market/candles``; older data from ``market/history-candles``,
which ccxt picks by itself).
"""

from __future__ import annotations

from .base import VenueAdapter, unified_names

__all__ = ["ADAPTER", "read_flags"]


def read_flags(exchange, client, message) -> dict | None:
    if not isinstance(message, dict):
        return None
    arg = message.get("arg")
    data = message.get("data")
    if not isinstance(arg, dict) or not isinstance(data, list):
        return None
    channel = arg.get("channel")
    if not isinstance(channel, str) or not channel.startswith("candle"):
        return None
    inst_id = arg.get("instId")

    def lookup() -> tuple:
        return (
            exchange.safe_market(inst_id)["symbol"],
            exchange.find_timeframe(channel[len("candle") :]),
        )

    symbol, timeframe = unified_names(exchange, (channel, inst_id), lookup)
    out: dict = {}
    for item in data:
        if not isinstance(item, list) or not item:
            continue
        flag = item[8] if len(item) > 8 else None
        out[(symbol, timeframe, int(item[0]))] = {"1": True, "0": False}.get(str(flag))
    return out


ADAPTER = VenueAdapter(
    name="okx",
    rule="flag",
    read_flags=read_flags,
    final_lag_ms=1000,
    streams_per_watch=100,
    ws_timeframes={
        "6h": "6Hutc",
        "12h": "12Hutc",
        "1d": "1Dutc",
        "1w": "1Wutc",
        "1M": "1Mutc",
        "3M": "3Mutc",
    },
    subscribe_interval=0.35,
    notes=(
        "candle index 8 'confirm'; the final of T may follow T+1's first update; REST pages "
        "newest-first, 300 rows (history-candles for old data)"
    ),
    ids=("okx", "okxus", "myokx", "okcoin"),
)
