"""Every way to misconfigure a store or feed fails fast, with a typed exception whose message
names the bad value and the valid choices. Feed errors surface from cerebro.run() (start())."""

from __future__ import annotations

import threading
import warnings
from datetime import datetime, timedelta

import backtrader as bt
import ccxt
import pytest

from backtrader_ccxt import (
    BacktraderCCXTError,
    CapabilityError,
    CCXTFeed,
    CCXTStore,
    ConfigurationError,
    ConfigurationWarning,
    UnknownExchangeError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from backtrader_ccxt.localexchange import LocalExchange


@pytest.fixture(scope="module")
def ex():
    with LocalExchange(symbols=("BTC/USDT", "ETH/USDT"), timeframes=("1s", "1m"), history=50) as ex:
        yield ex


# (store kwargs, exception, words the message must contain)
STORE_CASES = {
    "unknown exchange": ({"exchange": "binanse"}, UnknownExchangeError, ["'binanse'", "binance"]),
    "exchange not a str": ({"exchange": 42}, UnknownExchangeError, ["42", "binance"]),
    "exchange in capitals": (
        {"exchange": "Binance"},
        UnknownExchangeError,
        ["did you mean 'binance'?"],
    ),
    "a ccxt instance as exchange": (
        {"exchange": ccxt.binance()},
        UnknownExchangeError,
        ["instance", "exchange='binance'", "config"],
    ),
    "a ccxt class as exchange": (
        {"exchange": ccxt.okx},
        UnknownExchangeError,
        ["class", "exchange='okx'"],
    ),
    "bt-ccxt-store's currency": (
        {"exchange": "binance", "currency": "USDT"},
        ConfigurationError,
        ["'currency'", "getbroker(currency=", "valid choices: clock"],
    ),
    "bt-ccxt-store's positional currency": (
        {"exchange": "binance", "config": "USDT"},
        ConfigurationError,
        ["'USDT'", "currency", "config={...}"],
    ),
    "cloudQuant's use_rate_limiter": (
        {"exchange": "binance", "use_rate_limiter": True},
        ConfigurationError,
        ["'use_rate_limiter'", "enableRateLimit"],
    ),
    "a feed parameter on the store": (
        {"exchange": "binance", "fetch_ohlcv_params": {}},
        ConfigurationError,
        ["'fetch_ohlcv_params'", "store.getdata("],
    ),
    "a ccxt option on the store": (
        {"exchange": "binance", "timeout": 3000},
        ConfigurationError,
        ["'timeout'", "config={'timeout'"],
    ),
    "a misspelt store keyword": (
        {"exchange": "binance", "retires": 3},
        ConfigurationError,
        ["'retires'", "did you mean 'retries'"],
    ),
    "config not a dict": (
        {"exchange": "binance", "config": "apiKey=x"},
        ConfigurationError,
        ["config", "str"],
    ),
    "negative retries": ({"exchange": "binance", "retries": -1}, ConfigurationError, ["-1"]),
    "retries not an int": ({"exchange": "binance", "retries": "3"}, ConfigurationError, ["'3'"]),
    "zero retry delay": (
        {"exchange": "binance", "retry_delay": 0},
        ConfigurationError,
        ["0 < retry_delay"],
    ),
    "retry delays inverted": (
        {"exchange": "binance", "retry_delay": 5.0, "retry_max_delay": 1.0},
        ConfigurationError,
        ["5.0", "1.0"],
    ),
}


@pytest.mark.parametrize("case", list(STORE_CASES))
def test_store_rejects(case):
    kwargs, exc, words = STORE_CASES[case]
    with pytest.raises(exc) as info:
        CCXTStore(**kwargs)
    assert isinstance(info.value, BacktraderCCXTError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# (feed kwargs, exception, words the message must contain)
FEED_CASES = {
    "unknown symbol": (
        {"dataname": "BTC/USDX"},
        UnknownSymbolError,
        ["'BTC/USDX'", "BTC/USDT"],
    ),
    "symbol not a str": ({"dataname": 123}, ConfigurationError, ["123", "BTC/USDT"]),
    "timeframe the exchange lacks": (
        {"timeframe": bt.TimeFrame.Minutes, "compression": 7},
        UnsupportedTimeframeError,
        ["'7m'", "1m", "15m"],
    ),
    "ccxt timeframe string the exchange lacks": (
        {"timeframe": "7m"},
        UnsupportedTimeframeError,
        ["'7m'", "1m"],
    ),
    "garbage timeframe string": (
        {"timeframe": "1 minute"},
        UnsupportedTimeframeError,
        ["'1 minute'", "'1m'"],
    ),
    "ticks timeframe with a cache": (
        {"timeframe": bt.TimeFrame.Ticks, "cache": "CACHE"},
        ConfigurationError,
        ["bt.TimeFrame.Ticks", "cache", "REST polling"],
    ),
    "timeframe list by duration": (
        {"timeframe": "7m"},
        UnsupportedTimeframeError,
        ["1s, 1m, 3m, 5m, 15m, 30m, 1h", "resampledata"],
    ),
    "fetch_ohlcv_params not a dict": (
        {"fetch_ohlcv_params": "price=mark"},
        ConfigurationError,
        ["fetch_ohlcv_params", "'price=mark'", "dict"],
    ),
    "fetch_ohlcv_params with a cache": (
        {"fetch_ohlcv_params": {"price": "mark"}, "cache": "CACHE"},
        ConfigurationError,
        ["fetch_ohlcv_params", "cache", "mark"],
    ),
    "fetch_ohlcv_params with paginate": (
        {"fetch_ohlcv_params": {"paginate": True}},
        ConfigurationError,
        ["paginate", "pages itself"],
    ),
    "zero compression": (
        {"timeframe": bt.TimeFrame.Minutes, "compression": 0},
        UnsupportedTimeframeError,
        ["0", "positive"],
    ),
    "fromdate after todate": (
        {"fromdate": datetime(2024, 2, 1), "todate": datetime(2024, 1, 1)},
        ConfigurationError,
        ["2024-02-01", "2024-01-01", "fromdate <= todate"],
    ),
    "fromdate in the future": (
        {"fromdate": "FUTURE"},
        ConfigurationError,
        ["future", "past"],
    ),
    "fromdate not a datetime": (
        {"fromdate": "2024-01-01"},
        ConfigurationError,
        ["fromdate", "'2024-01-01'", "datetime"],
    ),
    "two live modes": (
        {"use_websocket": True, "use_threaded_data": True},
        ConfigurationError,
        ["use_websocket", "use_threaded_data", "REST polling"],
    ),
    "historical with a live mode": (
        {"historical": True, "use_threaded_data": True},
        ConfigurationError,
        ["historical", "use_threaded_data"],
    ),
    "ohlcv_limit zero": ({"ohlcv_limit": 0}, ConfigurationError, ["ohlcv_limit", "0"]),
    "ohlcv_limit a string": ({"ohlcv_limit": "500"}, ConfigurationError, ["'500'"]),
    "negative backfill_bars": ({"backfill_bars": -5}, ConfigurationError, ["-5"]),
    "reconnect delays inverted": (
        {"ws_reconnect_delay": 10.0, "ws_max_reconnect_delay": 1.0},
        ConfigurationError,
        ["10.0", "1.0"],
    ),
    "zero reconnect delay": (
        {"ws_reconnect_delay": 0},
        ConfigurationError,
        ["ws_reconnect_delay", "> 0", "0"],
    ),
    "negative poll_grace": ({"poll_grace": -1}, ConfigurationError, ["poll_grace", "-1"]),
    "qcheck a string": ({"qcheck": "fast"}, ConfigurationError, ["qcheck", "'fast'"]),
}


def _run_feed(store, **kwargs):
    cerebro = bt.Cerebro(stdstats=False)
    params = {"dataname": "BTC/USDT", "timeframe": "1s", "backfill_bars": 3}
    params.update(kwargs)
    cerebro.adddata(store.getdata(**params))
    cerebro.addstrategy(bt.Strategy)
    cerebro.run()


@pytest.mark.parametrize("case", list(FEED_CASES))
def test_feed_rejects_at_start(ex, case, tmp_path):
    kwargs, exc, words = FEED_CASES[case]
    kwargs = dict(kwargs)
    if kwargs.get("cache") == "CACHE":
        kwargs["cache"] = tmp_path / "cache.sqlite"
    if kwargs.get("fromdate") == "FUTURE":
        kwargs["fromdate"] = datetime(1970, 1, 1) + timedelta(milliseconds=ex.now_ms() + 3600_000)
    store = CCXTStore("binance", config=ex.ccxt_config())
    threads = threading.active_count()
    with pytest.raises(exc) as info:
        _run_feed(store, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert threading.active_count() == threads, "a failed start left a thread behind"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"exchange": "binance"}, ["'exchange'", "store parameter", "CCXTStore(exchange="]),
        ({"currency": "USDT"}, ["'currency'", "getbroker(currency="]),
        ({"symbol": "BTC/USDT"}, ["'symbol'", "dataname="]),
        ({"fetch_ohlcv_param": {}}, ["did you mean 'fetch_ohlcv_params'"]),
    ],
)
def test_feed_rejects_prior_plugins_keywords_with_what_to_write(kwargs, words):
    store = CCXTStore("binance")
    with pytest.raises(ConfigurationError) as info:
        store.getdata(dataname="BTC/USDT", **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_live_feed_without_timeframe_warns_at_start(ex):
    store = CCXTStore("binance", config=ex.ccxt_config())
    cerebro = bt.Cerebro(stdstats=False)
    data = store.getdata(dataname="BTC/USDT", backfill_bars=2)
    cerebro.adddata(data)
    cerebro.addstrategy(_StopAtOnce)
    with pytest.warns(ConfigurationWarning, match="no timeframe.*daily bars.*timeframe="):
        cerebro.run()
    assert (data.p.timeframe, data.p.compression) == (bt.TimeFrame.Days, 1)  # still days


@pytest.mark.parametrize(
    "kwargs", [{"timeframe": "1d"}, {"timeframe": bt.TimeFrame.Days}, {"historical": True}]
)
def test_no_warning_when_days_are_asked_for_or_the_feed_is_historical(ex, kwargs):
    store = CCXTStore("binance", config=ex.ccxt_config())
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="BTC/USDT", backfill_bars=2, **kwargs))
    cerebro.addstrategy(_StopAtOnce)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigurationWarning)
        cerebro.run()


class _StopAtOnce(bt.Strategy):
    def prenext(self):
        self.env.runstop()

    def next(self):
        self.env.runstop()


def test_feed_without_a_store_is_rejected():
    cerebro = bt.Cerebro()
    cerebro.adddata(CCXTFeed(dataname="BTC/USDT"))
    with pytest.raises(ConfigurationError, match="store must be a CCXTStore.*getdata"):
        cerebro.run()


def test_websocket_on_an_exchange_without_it_is_a_capability_error():
    """bitbank has no ccxt.pro class: asking for WebSocket fails before any network I/O."""
    store = CCXTStore("bitbank")
    with pytest.raises(CapabilityError) as info:
        _run_feed(store, dataname="BTC/JPY", timeframe="1m", use_websocket=True)
    msg = str(info.value)
    assert "'bitbank'" in msg and "use_websocket=False" in msg and "use_threaded_data" in msg


def test_websocket_ticks_on_an_exchange_without_watch_trades_is_a_capability_error():
    """bydfi's ccxt.pro class watches candles but not trades: tick feeds over WebSocket
    (which run everywhere watchTrades exists) fail before any network I/O."""
    store = CCXTStore("bydfi")
    with pytest.raises(CapabilityError) as info:
        _run_feed(store, dataname="BTC/USDT", timeframe=bt.TimeFrame.Ticks, use_websocket=True)
    msg = str(info.value)
    assert "watchTrades" in msg and "use_websocket=False" in msg


def test_sandbox_on_an_exchange_without_one_is_a_capability_error():
    store = CCXTStore("bitbank", sandbox=True)
    with pytest.raises(CapabilityError, match="'bitbank'.*sandbox=False"):
        _run_feed(store, dataname="BTC/JPY", timeframe="1m")


def test_configuration_errors_are_value_errors_and_never_retried():
    from backtrader_ccxt.errors import is_retryable

    err = ConfigurationError("x")
    assert isinstance(err, ValueError)
    assert not is_retryable(err)
