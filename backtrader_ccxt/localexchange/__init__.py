"""A local spot exchange on 127.0.0.1 speaking Binance's, OKX v5's or Bybit v5's public
protocol (REST + WebSocket candles).

It replays real candles re-stamped onto the current clock so the real ccxt / ccxt.pro clients
of that venue can be tested against it offline, with fault controls and counters. See
``docs/localexchange.md``.

    >>> from backtrader_ccxt.localexchange import LocalExchange
    >>> with LocalExchange(symbols=("BTC/USDT",), protocol="okx") as ex:  # doctest: +SKIP
    ...     exchange = ccxt.okx(ex.ccxt_config())
"""

from .data import BINANCE_INTERVALS, REAL_SYMBOLS, Candle, parse_timeframe
from .exchange import LocalExchange
from .faults import FAULT_KINDS, MALFORMED_KINDS, REST_FAULT_KINDS, Faults
from .protocol import PROTOCOLS, CandleFrame
from .rehearsal import RehearsalExchange
from .stats import Stats

__all__ = [
    "BINANCE_INTERVALS",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "PROTOCOLS",
    "REAL_SYMBOLS",
    "REST_FAULT_KINDS",
    "RehearsalExchange",
    "Candle",
    "CandleFrame",
    "Faults",
    "LocalExchange",
    "Stats",
    "parse_timeframe",
]
