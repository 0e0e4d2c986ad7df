"""Kraken: no closed flag, and ccxt.pro keys OHLC messages by symbol only.

``watch_ohlcv(symbol, tf)`` of Kraken resolves on one message hash per symbol, so two
timeframes of one symbol receive each other's rows through ccxt's watch results. The stream
transport does not read watch results where it can help it: it reads each row as ccxt's
handler appends it to the cache of *its own* (symbol, timeframe), so each timeframe gets only
its own candles. ccxt.pro also subscribes only once per symbol on a connection (the
subscription hash has no timeframe either), so each timeframe of a symbol is watched on a
connection of its own (:attr:`~.base.VenueAdapter.one_timeframe_per_connection`). The timing
rule decides closure.
"""

from __future__ import annotations

from .base import VenueAdapter

__all__ = ["ADAPTER"]

ADAPTER = VenueAdapter(
    name="kraken",
    rule="timing",
    streams_per_watch=100,
    subscribe_interval=0.05,
    one_timeframe_per_connection=True,
    notes=(
        "no flag; one ccxt.pro message hash per symbol for all timeframes (rows are routed by "
        "ccxt's per-timeframe cache instead); REST 720 rows"
    ),
    ids=("kraken",),
)
