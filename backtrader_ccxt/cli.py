"""How the command line reports a failure: one clear line, the traceback only with ``-v``.

Pure text rules (what the line says, which exit status) beside one small writer, shared by
every subcommand so that ``demo`` and ``download`` fail alike; and the checks that make the
local exchange, reached through the command line, reject what Binance would reject.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import TextIO

from .errors import (
    ConfigurationError,
    ExchangeRequestError,
    RetryableError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from .timeframes import parse as parse_tf

__all__ = [
    "LOCAL_SYMBOLS",
    "by_duration",
    "check_local_market",
    "check_timeframe",
    "error_line",
    "exit_status",
    "load_config",
    "local_timeframes",
    "report_error",
    "root_cause",
]

#: what the local exchange serves with real candles (any other symbol would be made up)
LOCAL_SYMBOLS = ("BTC/USDT", "ETH/USDT")

_MAX_CAUSE = 240


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of the ``__cause__`` / ``__context__`` chain: where a network
    failure says what actually went wrong (a name that does not resolve, a refused port)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_line(exc: BaseException, redact: Callable[[str], str] = str) -> str:
    """The single line that reports ``exc``: what failed and why, with the root cause when
    the message hides it."""
    text = _one_line(redact(str(exc))) or type(exc).__name__
    if isinstance(exc, ConfigurationError):
        return f"error: {text}"
    if not isinstance(exc, ExchangeRequestError):
        text = f"{type(exc).__name__}: {text}"
    cause = root_cause(exc)
    if cause is not exc:
        why = _one_line(redact(str(cause)))[:_MAX_CAUSE]
        if why and why not in text:
            text += f"; cause: {type(cause).__name__}: {why}"
    if isinstance(exc, RetryableError):
        # the error class is named for what ccxt reported (a transient fault); by the time
        # it reaches the command line every retry has been spent, so it is final
        text += " (gave up after retrying: check the network or the exchange's status)"
    return f"error: {text}"


def exit_status(exc: BaseException) -> int:
    """2 for bad configuration (as argparse), 130 for Ctrl-C, 1 for everything else."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 2 if isinstance(exc, ConfigurationError) else 1


def report_error(
    exc: BaseException,
    stream: TextIO,
    verbose: bool = False,
    redact: Callable[[str], str] = str,
) -> None:
    """Write the traceback (``verbose`` only), then the one line."""
    line = error_line(exc, redact)
    if verbose:
        stream.write(redact("".join(traceback.format_exception(exc))))
    elif not isinstance(exc, ConfigurationError):
        line += " [-v shows the traceback]"
    print(line, file=stream, flush=True)


def load_config(text: str | None) -> dict:
    """``--config``: ccxt constructor options as JSON text, or ``@file.json``."""
    if not text:
        return {}
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigurationError(f"--config {text}: {exc.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--config is not valid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise ConfigurationError("--config must be a JSON object of ccxt constructor options")
    return config


def by_duration(timeframes) -> list[str]:
    """ccxt timeframe strings, shortest first (``1m, 15m, 12h, 1d, 1M``, not string order)."""

    def key(name: str):
        try:
            return (0, parse_tf(name).ms, name)
        except ConfigurationError:
            return (1, 0, name)

    return sorted(timeframes, key=key)


def check_timeframe(timeframe: str, offered, venue: str) -> None:
    """:class:`UnsupportedTimeframeError` unless ``venue`` offers ``timeframe``: the message
    lists what it offers by duration and, for a multiple of an offered one, how to resample."""
    valid = by_duration(offered)
    if not valid or timeframe in valid:
        return
    hint = ""
    try:
        want = parse_tf(timeframe)
        fixed = [parse_tf(t) for t in valid if not parse_tf(t).is_calendar]
        finer = [t for t in fixed if want.ms % t.ms == 0]
        if finer and not want.is_calendar:
            hint = (
                f"; for {timeframe} bars, feed {finer[-1]} candles and resample them "
                "(cerebro.resampledata, see samples/resample_live.py)"
            )
    except ConfigurationError:
        pass
    raise UnsupportedTimeframeError(
        f"--timeframe {timeframe!r} is not offered by {venue}; valid choices: "
        f"{', '.join(valid)}{hint}"
    )


def local_timeframes() -> list[str]:
    """What the local exchange serves as the real venue would: Binance's own intervals
    (``ccxt.binance().timeframes``) that have a fixed length (the replay has no ``1M``)."""
    import ccxt

    from .localexchange.data import BINANCE_INTERVALS

    return by_duration(t for t in ccxt.binance().timeframes if t in BINANCE_INTERVALS)


def check_local_market(symbol: str, timeframe: str, elsewhere: str) -> None:
    """The local exchange derives any symbol and interval; through the command line it
    serves only what it replays for real (``LOCAL_SYMBOLS``) on Binance's intervals.
    ``elsewhere`` says how to reach every Binance market instead."""
    if symbol not in LOCAL_SYMBOLS:
        raise UnknownSymbolError(
            f"--symbol {symbol!r} is not served by the local exchange; valid choices: "
            f"{', '.join(LOCAL_SYMBOLS)} (any Binance market {elsewhere})"
        )
    check_timeframe(timeframe, local_timeframes(), "the local exchange (Binance's intervals)")
