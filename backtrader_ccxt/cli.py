"""How the command line reports a failure: one clear line, the traceback only with ``-v``.

Pure text rules (what the line says, which exit status) beside one small writer, shared by
every subcommand so that ``demo`` and ``download`` fail alike.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import TextIO

from .errors import ConfigurationError, ExchangeRequestError, RetryableError

__all__ = ["error_line", "exit_status", "load_config", "report_error", "root_cause"]

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
