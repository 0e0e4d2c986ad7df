"""backtrader-ccxt: history then live bars from ccxt exchanges for backtrader.

store = CCXTStore(exchange="binance")
cerebro.adddata(store.getdata(dataname="BTC/USDT", timeframe=bt.TimeFrame.Minutes))
"""

import logging

from .bars import Bar, Status
from .cache import HistoryCache
from .errors import (
    BacktraderCCXTError,
    CapabilityError,
    ConfigurationError,
    ConfigurationWarning,
    ExchangeRequestError,
    FatalExchangeError,
    RetryableError,
    TransientExchangeError,
    UnknownExchangeError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from .feed import CCXTFeed
from .notifications import StoreNotification
from .running import run_live, stop_on_sigint
from .store import CCXTStore

__version__ = "0.1.0"

__all__ = [
    "Bar",
    "BacktraderCCXTError",
    "CapabilityError",
    "CCXTFeed",
    "CCXTStore",
    "ConfigurationError",
    "ConfigurationWarning",
    "ExchangeRequestError",
    "FatalExchangeError",
    "HistoryCache",
    "RetryableError",
    "TransientExchangeError",
    "Status",
    "StoreNotification",
    "UnknownExchangeError",
    "UnknownSymbolError",
    "UnsupportedTimeframeError",
    "run_live",
    "stop_on_sigint",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
