"""A tick feed over REST polling: every public trade once, backfilled from ``fromdate``.

:class:`TradePollingMachine` holds the rules and no I/O, as :class:`~.polling.PollingMachine`
does for candles: it says which ``fetch_trades`` call to make or how long to wait, and turns
answers into ticks (a :class:`~backtrader_ccxt.bars.Bar` with open = high = low = close =
price and volume = amount, stamped at the close of the trade's millisecond: see :func:`tick`)
and status events.
:class:`TradePollingSource` drives it from backtrader's thread with the blocking ccxt
instance.

Paging, the part that differs between venues:

* ``"id"`` (Binance): pages go by trade id (``params={'fromId': n}``), because a time window
  on Binance's aggregate-trades endpoint returns the LAST ``limit`` trades of the window, so a
  page asked ``since=t`` does not start at ``t``. The first id at or after ``fromdate`` is
  found by asking ever narrower windows until one is not full (then it holds the first
  trades), skipping forward over empty ones.
* ``"back"`` (OKX, Bybit): the venue serves its newest trades and pages only backwards
  (OKX ``history-trades`` ``after=<tradeId>``: older than that id; Bybit: the newest page only,
  60 spot trades). A walk asks for the newest page, then older ones, until a page reaches the
  target (the last delivered trade, or ``fromdate``), then delivers them oldest first. Where
  the venue cannot page back (Bybit) and the newest page does not reach the target, the
  trades before it are gone from REST: counted (``cut``) and logged.
* ``"time"`` (the rest): pages go by ``since`` = the newest trade time seen; the overlap at
  that millisecond is dropped by :class:`~backtrader_ccxt.trades.TradeGate` (ids, or content
  where there are none).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import ccxt

from ..bars import Bar, Status
from ..errors import ExchangeRequestError, FatalExchangeError
from ..rest import call_with_retry
from ..retry import Backoff
from ..trades import Trade, TradeGate, parse_trades
from .polling import BlockingSource

log = logging.getLogger(__name__)

__all__ = [
    "PAGING",
    "TradePollingMachine",
    "TradePollingSource",
    "TradeRequest",
    "TradeSpec",
    "trade_page",
    "venue_paging",
]

#: How a venue's trades are paged (see the module docstring).
PAGING = ("id", "back", "time")
_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TradeSpec:
    """What a tick feed wants. Times are exchange ms.

    ``since_ms``: the first trade time to deliver (None: start from the newest
    ``backfill_trades`` trades); ``until_ms``: the exclusive end (``todate``);
    ``historical``: end after the backfill.
    """

    symbol: str
    since_ms: int | None
    page_limit: int
    paging: str = "id"
    until_ms: int | None = None
    historical: bool = False
    backfill_trades: int = 0
    poll_interval_ms: int = 1000
    retries: int = 5
    reconnect_delay: float = 1.0
    max_reconnect_delay: float = 30.0
    grace_ms: int = 0
    tf: str = "ticks"
    #: "back" paging: the venue param for "older than this id" (None: newest page only),
    #: extra params of those pages, and their size
    back_param: str | None = None
    back_params: tuple = ()
    back_limit: int = 100
    #: WebSocket mode: the transport's settings (seconds) and the venue's trade stream name
    #: where it has two (Binance ``'aggTrade'``: the ids REST pages by)
    stall_timeout: float = 60.0
    max_connection_age: float | None = None
    reconnections: int | None = None
    stream_name: str | None = None
    #: whether the venue's decimal trade ids are consecutive, so an id gap is a lost trade
    consecutive_ids: bool = True

    @property
    def label(self) -> str:
        return f"{self.symbol} ticks"


@dataclass(frozen=True)
class TradeRequest:
    """One ``fetch_trades(symbol, since, limit, params)`` call to make."""

    since_ms: int | None
    limit: int
    until_ms: int | None = None
    from_id: int | None = None
    extra: tuple = ()

    def params(self) -> dict:
        out: dict = dict(self.extra)
        if self.from_id is not None:
            out["fromId"] = self.from_id
        if self.until_ms is not None:
            out["until"] = self.until_ms
        return out


def tick(t: Trade) -> Bar:
    """A trade as a backtrader tick: a bar of its millisecond, stamped at that millisecond's
    close (``timestamp + 1 ms``) like every bar here. Why: backtrader's resampler puts an
    instant ``T`` in the bar ending at ``T`` (its bars span ``(close - size, close]``), a venue
    puts a trade at ``T`` in the candle opening at ``T`` (``[open, open + size)``); with
    millisecond timestamps the 1 ms shift maps one onto the other exactly, so
    ``resampledata`` of a tick feed gives the venue's candles, a trade on the boundary too."""
    p = t.price
    return Bar(t.timestamp_ms, t.timestamp_ms + 1, p, p, p, p, t.amount)


class TradePollingMachine:
    """Backfill then poll trades, as a state machine.

    ``next_action(now)`` returns a :class:`TradeRequest`, an ``int`` (exchange ms to wait
    until) or None (finished); answers go to :meth:`on_trades`, failures (retries spent) to
    :meth:`on_failure`; ticks and statuses collect in ``outbox`` in delivery order.
    """

    def __init__(self, spec: TradeSpec, stats=None) -> None:
        self.spec = spec
        self.outbox: deque[Bar | Status] = deque([Status("DELAYED", "backfilling trades")])
        self.gate = TradeGate()
        self.rejected = 0
        self.live = False
        self.broken = False
        self.done = False
        self.next_id: int | None = None  # id paging: where the next page starts
        self.cursor_ms = spec.since_ms  # time paging, and the seek's window start
        self._window = _HOUR_MS
        self._seeking = spec.since_ms is not None and spec.paging == "id"
        self._tail = spec.since_ms is None  # start from the newest trades
        self._due: int | None = None
        self._resume_at: int | None = None
        self._failures = Backoff(spec.reconnect_delay, spec.max_reconnect_delay)
        self._asked: TradeRequest | None = None
        self._back: list[Trade] = []  # "back" paging: the pages of the walk under way
        self._back_cursor: int | None = None
        self.cut = 0  # "back" walks that could not reach their target (trades lost to REST)
        self.stats = stats  # a Counter (the store's stats) or None

    def next_action(self, now_ms: int) -> TradeRequest | int | None:
        if self.done:
            return None
        for wait in (self._resume_at, self._due):
            if wait is not None and now_ms < wait:
                return wait
        self._resume_at = self._due = None
        s = self.spec
        if self._tail:
            req = TradeRequest(None, max(1, min(s.backfill_trades, s.page_limit)))
        elif self._seeking:
            assert self.cursor_ms is not None
            if self.cursor_ms > now_ms:  # no trade since fromdate yet: start from the newest
                self._seeking, self._tail = False, True
                return self.next_action(now_ms)
            req = TradeRequest(self.cursor_ms, s.page_limit, self.cursor_ms + self._window - 1)
        elif s.paging == "id":
            req = TradeRequest(None, s.page_limit, from_id=self.next_id)
        elif s.paging == "back":
            if self._back_cursor is None:
                req = TradeRequest(None, s.page_limit)
            else:
                extra = (*s.back_params, (s.back_param, self._back_cursor))
                req = TradeRequest(None, s.back_limit, extra=extra)
        else:
            req = TradeRequest(self.cursor_ms, s.page_limit)
        self._asked = req
        return req

    def on_trades(self, raws: list, now_ms: int) -> None:
        req, self._asked = self._asked, None
        assert req is not None
        self._failures.reset()
        trades, bad = parse_trades(raws)
        for raw, why in bad:
            self.rejected += 1
            log.warning("%s: trade rejected (%s): %r", self.spec.label, why, raw)
        if self._tail:
            self._on_tail(trades)
        elif self._seeking:
            self._on_seek(req, trades)
        elif self.spec.paging == "back":
            self._on_back(req, raws, trades, now_ms)
        else:
            self._deliver(trades)
            if self.spec.paging == "id" and trades:
                self.next_id = max(t.seq or 0 for t in trades) + 1
            elif trades:
                newest = max(t.timestamp_ms for t in trades)
                full_same_ms = len(raws) >= req.limit and newest == self.cursor_ms
                self.cursor_ms = newest + 1 if full_same_ms else newest
            if len(raws) < req.limit and not self.done:
                self._caught_up(now_ms)

    def _on_back(self, req: TradeRequest, raws: list, trades: list[Trade], now_ms: int) -> None:
        self._back.extend(trades)
        reached = len(raws) < req.limit or self._reached(trades)
        if not reached:
            cursor = min((t.seq for t in trades if t.seq is not None), default=None)
            if self.spec.back_param is not None and cursor is not None:
                self._back_cursor = cursor
                return
            self.cut += 1
            if self.stats is not None:
                self.stats["trades_cut"] += 1
            log.warning(
                "%s: REST keeps only the newest %d trades: older missed trades are lost",
                self.spec.label,
                len(raws),
            )
        batch, self._back, self._back_cursor = self._back, [], None
        self._deliver(batch)
        if not self.done:
            self._caught_up(now_ms)

    def _reached(self, trades: list[Trade]) -> bool:
        """Whether a page reaches back to the walk's target: the trade after the last one
        delivered, or ``fromdate`` before the first."""
        if not trades:
            return True
        g = self.gate
        seqs = [t.seq for t in trades if t.seq is not None]
        if g.last_seq is not None and seqs:
            return min(seqs) <= g.last_seq + 1
        oldest = min(t.timestamp_ms for t in trades)
        if g.newest_ms is not None:
            return oldest < g.newest_ms
        since = self.spec.since_ms
        return since is None or oldest < since

    def _on_tail(self, trades: list[Trade]) -> None:
        self._tail = False
        keep = self.spec.backfill_trades
        if keep:
            self._deliver(trades[-keep:])
        else:
            self.gate.admit(trades)  # seen, not delivered: the feed starts after them
        if self.spec.paging == "id":
            last = self.gate.last_seq
            self.next_id = None if last is None else last + 1
        else:
            self.cursor_ms = max((t.timestamp_ms for t in trades), default=0)

    def _on_seek(self, req: TradeRequest, trades: list[Trade]) -> None:
        if len(trades) >= req.limit and self._window > 1:
            self._window = max(1, self._window // 2)  # full: the window's first trades are cut
            return
        if not trades:
            self.cursor_ms = (self.cursor_ms or 0) + self._window
            self._window = min(_HOUR_MS, self._window * 2)
            return
        self._seeking = False
        self.next_id = min(t.seq for t in trades if t.seq is not None)

    def _deliver(self, trades: list[Trade]) -> None:
        s = self.spec
        for t in self.gate.admit(trades):
            if s.since_ms is not None and t.timestamp_ms < s.since_ms:
                continue
            if s.until_ms is not None and t.timestamp_ms >= s.until_ms:
                self._finish("todate reached")
                return
            self.outbox.append(tick(t))

    def _caught_up(self, now_ms: int) -> None:
        s = self.spec
        if s.until_ms is not None and now_ms >= s.until_ms:
            self._finish("todate reached")
            return
        if not self.live:
            if s.historical:
                self._finish("historical backfill complete")
                return
            self.live = True
            self.outbox.append(Status("LIVE"))
        elif self.broken:
            self.outbox.append(Status("LIVE", "caught up after a REST failure"))
        self.broken = False
        self._due = now_ms + s.poll_interval_ms

    def _finish(self, why: str) -> None:
        self.done = True
        self.outbox.append(Status("DISCONNECTED", why))

    def on_failure(self, exc: ExchangeRequestError, now_ms: int) -> None:
        """A fetch failed for good (its retries are spent)."""
        self._asked = None
        if isinstance(exc, FatalExchangeError) or (not self.live and self.spec.historical):
            self.outbox.append(Status("DISCONNECTED", str(exc), fatal=True))
            self.done = True
            return
        delay = self._failures.next_delay()
        self._resume_at = now_ms + int(delay * 1000)
        if not self.broken:
            self.broken = True
            self.outbox.append(Status("CONNBROKEN", str(exc)))
        log.warning("%s: REST unavailable, next try in %.1fs: %s", self.spec.label, delay, exc)


class TradePollingSource(BlockingSource):
    """:class:`TradePollingMachine` driven from backtrader's thread (the feed's source for
    ``timeframe=bt.TimeFrame.Ticks``): ``get(timeout)`` returns the next tick or status, or
    None after waiting at most ``timeout`` seconds (``stop()`` ends a wait at once)."""

    def __init__(
        self, exchange, spec: TradeSpec, clock, retries: int, backoff, redact, notify, stats=None
    ):
        super().__init__(TradePollingMachine(spec, stats), clock)
        self._exchange = exchange
        self._retries = retries
        self._backoff = backoff
        self._redact = redact
        self._notify = notify

    def _serve(self, req: TradeRequest, asked_ms: int) -> None:
        if self.machine.stats is not None:
            self.machine.stats["rest_calls"] += 1
        self.machine.on_trades(self._fetch(req), asked_ms)

    def _fetch(self, req: TradeRequest) -> list:
        symbol, params = self.machine.spec.symbol, req.params()
        context = f"fetch_trades({symbol!r}, since={req.since_ms}, params={params})"

        def call() -> list:
            return trade_page(self._exchange.fetch_trades(symbol, req.since_ms, req.limit, params))

        def notify(kind: str, message: str) -> None:
            if self._notify is not None:
                self._notify(kind, message, (symbol,))

        return call_with_retry(
            self._exchange,
            call,
            context,
            self._retries,
            self._backoff,
            self._redact,
            self._wait,
            notify,
        )


def trade_page(rows) -> list:
    """A ``fetch_trades`` answer as the fields the machines read, or ``ccxt.BadResponse``
    (retried) for a page that is not a list of trades."""
    if not isinstance(rows, list):
        raise ccxt.BadResponse(f"expected a list of trades, got {type(rows).__name__}")
    out = [
        {k: r.get(k) for k in ("id", "timestamp", "price", "amount", "side")}
        if isinstance(r, dict)
        else r
        for r in rows
    ]
    # A garbled body (ccxt turns a cut JSON text into one "trade" per character) is a bad
    # page, retried: read as "no trades there" it would skip a window.
    _, bad = parse_trades(out)
    if bad:
        raise ccxt.BadResponse(f"malformed trade in the page ({bad[0][1]}): {bad[0][0]!r}")
    return out


def trade_context(req: TradeRequest, symbol: str) -> str:
    return f"fetch_trades({symbol!r}, since={req.since_ms}, params={req.params()})"


def paging_for(exchange_id: str) -> str:
    """How ``exchange_id``'s trades are paged: ``"id"`` for Binance's family, ``"back"`` for
    OKX and Bybit, else ``"time"``."""
    return venue_paging(exchange_id)["paging"]


def venue_paging(exchange_id: str, options: dict | None = None) -> dict:
    """The :class:`TradeSpec` fields of a venue's trade paging and trade stream (and
    ``max_page``, the venue's largest trade page where it is below the feed's).

    Binance: REST pages aggregate trades by id (ccxt's default ``fetchTradesMethod`` on spot,
    ``publicGetAggTrades``), so the stream must be ``@aggTrade``: ``@trade`` ids are another
    sequence. A store configured for the raw trade endpoints (``fetchTradesMethod`` ending in
    ``Trades`` or ``HistoricalTrades``) gets the ``@trade`` stream instead.
    """
    ex = str(exchange_id)
    if ex.startswith("binance"):
        method = str((options or {}).get("fetchTradesMethod") or "publicGetAggTrades")
        name = "aggTrade" if method.endswith("AggTrades") else "trade"
        return {"paging": "id", "stream_name": name}
    if ex.startswith("okx"):
        return {
            "paging": "back",
            "back_param": "after",
            "back_params": (("method", "publicGetMarketHistoryTrades"), ("type", "1")),
            "back_limit": 100,
        }
    if ex.startswith("bybit"):
        # spot REST: the newest 60 trades and nothing older (derivatives: 1,000)
        return {"paging": "back", "back_param": None, "max_page": 60}
    return {"paging": "time"}


def backoff_for(store) -> Backoff:
    return Backoff(store.retry_delay, store.retry_max_delay)
