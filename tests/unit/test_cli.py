"""The command line's failure line and its checks: pure rules, no I/O."""

from __future__ import annotations

import io

import ccxt
import pytest

from backtrader_ccxt.cli import (
    by_duration,
    check_local_market,
    check_timeframe,
    error_line,
    exit_status,
    report_error,
    root_cause,
)
from backtrader_ccxt.errors import (
    ConfigurationError,
    FatalExchangeError,
    RetryableError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
    translate,
)


def chained() -> RetryableError:
    """What the store raises after its retries: ours <- ccxt's <- the socket's."""
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as os_err:
            raise ccxt.NetworkError(
                "binance GET http://127.0.0.1:9/api/v3/exchangeInfo"
            ) from os_err
    except ccxt.NetworkError as net:
        try:
            raise translate(net, "binance: loading markets") from net
        except RetryableError as ours:
            return ours


def test_the_line_names_the_root_cause_and_that_retrying_is_over():
    exc = chained()
    assert isinstance(root_cause(exc), ConnectionRefusedError)
    line = error_line(exc)
    assert line.startswith("error: binance: loading markets: NetworkError: binance GET")
    assert "cause: ConnectionRefusedError: [Errno 111] Connection refused" in line
    assert "gave up after retrying" in line
    assert "\n" not in line and "RetryableError" not in line


def test_configuration_errors_are_the_message_alone_and_exit_2():
    exc = UnsupportedTimeframeError("--timeframe '7m' is not offered\nby binance")
    assert error_line(exc) == "error: --timeframe '7m' is not offered by binance"
    assert exit_status(exc) == 2
    assert exit_status(FatalExchangeError("x")) == 1
    assert exit_status(KeyboardInterrupt()) == 130
    assert error_line(OSError(28, "No space left on device")).startswith("error: OSError: ")


def test_report_error_traceback_only_when_verbose_and_redacted():
    exc = FatalExchangeError("auth failed for key SECRETKEY")
    out = io.StringIO()
    report_error(exc, out, verbose=False, redact=lambda t: t.replace("SECRETKEY", "***"))
    assert out.getvalue() == "error: auth failed for key *** [-v shows the traceback]\n"
    out = io.StringIO()
    try:
        raise exc
    except FatalExchangeError as raised:
        report_error(raised, out, verbose=True, redact=lambda t: t.replace("SECRETKEY", "***"))
    text = out.getvalue()
    assert text.startswith("Traceback") and "SECRETKEY" not in text
    assert text.splitlines()[-1] == "error: auth failed for key ***"


def test_timeframes_sorted_by_duration_and_a_resample_hint():
    assert by_duration(["12h", "15m", "1M", "1d", "1s", "odd"]) == [
        "1s",
        "15m",
        "12h",
        "1d",
        "1M",
        "odd",
    ]
    with pytest.raises(UnsupportedTimeframeError) as info:
        check_timeframe("45m", ["1d", "1m", "15m", "1M"], "venue")
    msg = str(info.value)
    assert "valid choices: 1m, 15m, 1d, 1M" in msg and "feed 15m candles and resample" in msg
    check_timeframe("15m", ["15m"], "venue")  # offered: no error
    check_timeframe("7m", {}, "venue")  # a venue that does not say: left to the exchange


def test_the_local_market_is_what_the_replay_serves_for_real():
    check_local_market("ETH/USDT", "1s", elsewhere="x")
    with pytest.raises(UnknownSymbolError, match="BTC/USDT, ETH/USDT"):
        check_local_market("SOL/USDT", "1m", elsewhere="x")
    with pytest.raises(UnsupportedTimeframeError, match="1d, 3d, 1w$"):
        check_local_market("BTC/USDT", "1M", elsewhere="x")
    assert issubclass(UnsupportedTimeframeError, ConfigurationError)
