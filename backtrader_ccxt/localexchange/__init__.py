"""A local spot exchange on 127.0.0.1 speaking Binance's, OKX v5's or Bybit v5's public
protocol (REST + WebSocket candles); on Binance it also trades (accounts, signed orders, user
data streams, ledgers).

It replays real candles re-stamped onto the current clock so the real ccxt / ccxt.pro clients
of that venue can be tested against it offline, with fault controls and counters. See
``docs/localexchange.md``.

    >>> from backtrader_ccxt.localexchange import LocalExchange
    >>> with LocalExchange(symbols=("BTC/USDT",), protocol="okx") as ex:  # doctest: +SKIP
    ...     exchange = ccxt.okx(ex.ccxt_config())
"""

from .accounts import Account
from .data import BINANCE_INTERVALS, REAL_SYMBOLS, Candle, parse_timeframe
from .exchange import LocalExchange
from .faults import FAULT_KINDS, MALFORMED_KINDS, REST_FAULT_KINDS
from .protocol import PROTOCOLS, CandleFrame
from .rehearsal import RehearsalExchange
from .stats import Stats
from .trading_faults import TRADING_FAULT_KINDS, Faults

__all__ = [
    "TRADING_FAULT_KINDS",
    "Account",
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
