"""When each REST request really left: after ccxt's rate limiter, not when it was asked for.

A page is judged "closed by now" against the time its request left. Asking for a page and
the request leaving can be seconds apart when many feeds share one instance: ccxt's limiter
queues them (500 backfills at Binance's default pace take 25 s). Judged at the asking time,
the answer is taken as older than it is, and the candles that closed meanwhile must be
fetched again. :func:`stamp` wraps an instance's ``fetch`` (ccxt's one HTTP call, run after
the throttle) so each call records its departure into the list of the task or thread that
made it (a context variable: concurrent requests never see each other's times).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import time

__all__ = ["recording", "stamp"]

_box: contextvars.ContextVar[list | None] = contextvars.ContextVar("departures", default=None)


def stamp(exchange) -> None:
    """Make ``exchange`` (sync or asyncio ccxt) record when each HTTP request leaves."""
    original = exchange.fetch
    if getattr(original, "_stamps_departures", False):
        return
    if inspect.iscoroutinefunction(original):

        async def fetch(*args, **kwargs):
            box = _box.get()
            if box is not None:
                box.append(time.time())
            return await original(*args, **kwargs)

    else:

        def fetch(*args, **kwargs):
            box = _box.get()
            if box is not None:
                box.append(time.time())
            return original(*args, **kwargs)

    fetch._stamps_departures = True
    exchange.fetch = fetch


@contextlib.contextmanager
def recording(box: list | None):
    """Within the block, requests of stamped instances append their departure (wall clock
    seconds) to ``box``; None records nothing."""
    if box is None:
        yield
        return
    token = _box.set(box)
    try:
        yield
    finally:
        _box.reset(token)
