"""A local exchange speaking Binance's SPOT protocol (REST + WebSocket) on 127.0.0.1.

It replays real candles re-stamped onto the current clock so the real ccxt / ccxt.pro binance
clients can be tested against it offline, with fault controls and counters. See
``docs/localexchange.md``.

    >>> from backtrader_ccxt.localexchange import LocalExchange
    >>> with LocalExchange(symbols=("BTC/USDT",)) as ex:  # doctest: +SKIP
    ...     exchange = ccxt.binance(ex.ccxt_config())
"""

from .data import BINANCE_INTERVALS, REAL_SYMBOLS, Candle, parse_timeframe
from .exchange import LocalExchange
from .faults import FAULT_KINDS, MALFORMED_KINDS, REST_FAULT_KINDS, Faults
from .stats import Stats

__all__ = [
    "BINANCE_INTERVALS",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "REAL_SYMBOLS",
    "REST_FAULT_KINDS",
    "Candle",
    "Faults",
    "LocalExchange",
    "Stats",
    "parse_timeframe",
]
