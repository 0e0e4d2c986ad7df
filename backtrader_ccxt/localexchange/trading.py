"""The trading desk: the driver of the matching engine on the server thread.

It matches up to the exchange clock before every request (so what a client sees depends only
on the clock reading, never on a timer's punctuality), runs a timer that matches resting
orders as public trades happen (following a custom clock by polling), hands the engine's
events to the venue's renderer and the user streams, and applies the fill-side faults.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .accounts import Account, Fill, Ledger, Order, OrderList
from .matching import Event, MatchingEngine, OrderRequest
from .trading_faults import TradingFaultState
from .userstream import Push, UserStreams

__all__ = ["TradingDesk"]

log = logging.getLogger(__name__)


class TradingDesk:
    """Params:
    engine: the :class:`MatchingEngine` (its ledger is the ground truth).
    faults: the trading fault state. now_ms: the exchange (replay) clock.
    render: ``event -> Push | None``, the venue's user-data shape of an engine event.
    wrap: ``(subscription id, payload) -> dict``, the venue's WebSocket-API event wrapper.
    exact_clock / poll_interval: as the stream hub's (a custom clock is polled).
    """

    def __init__(
        self,
        engine: MatchingEngine,
        faults: TradingFaultState,
        now_ms: Callable[[], int],
        render: Callable[[Event], Push | None] = lambda event: None,
        wrap: Callable[[int, dict], dict] = lambda sid, payload: payload,
        *,
        exact_clock: bool = True,
        poll_interval: float = 0.05,
    ):
        self.engine = engine
        self.ledger: Ledger = engine.ledger
        self.faults = faults
        self.now_ms = now_ms
        self.render = render
        self.streams = UserStreams(faults, wrap)
        self.exact_clock = exact_clock
        self.poll_interval = poll_interval
        self.hub = None  # the stream hub, set once the server runs
        self.stats = None  # the exchange's Stats, set by LocalExchange
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        engine.on_fill = self._on_fill

    # -- clocks -----------------------------------------------------------------------------

    def server_ms(self) -> int:
        """The server clock of event times and ``/api/v3/time``: exchange time + skew."""
        return self.now_ms() + self.faults.skew_ms

    def signing_ms(self) -> int:
        """What request timestamps are checked against: the machine's wall clock + skew
        (clients sign with their own wall clock, whatever the replay clock)."""
        return int(time.time() * 1000) + self.faults.skew_ms

    # -- operations (server thread) ---------------------------------------------------------

    def sync(self) -> None:
        """Match up to now and publish what happened."""
        self.publish(self.engine.advance(self.now_ms()))
        self._arm()

    def place(self, account: Account, req: OrderRequest, request: dict) -> Order:
        """Book an order (raises ``Rejected``); ``request`` is recorded as accepted."""
        return self._book(
            account,
            request,
            lambda now: self.engine.place(account, req, now),
            lambda order: {"orderId": order.order_id},
        )

    def place_oco(
        self, account: Account, above: OrderRequest, below: OrderRequest, cid: str, request: dict
    ) -> OrderList:
        """Book an OCO (raises ``Rejected``); ``request`` is recorded as accepted."""
        return self._book(
            account,
            request,
            lambda now: self.engine.place_oco(account, above, below, cid, now),
            lambda order_list: {"orderListId": order_list.list_id},
        )

    def _book(self, account: Account, request: dict, place, ids):
        """Match up to now, ``place(now) -> (booked, events)``, count it, record the accepted
        request with ``ids(booked)``, then publish the events."""
        self.sync()
        try:
            booked, events = place(self.now_ms())
        except Exception:
            if self.stats is not None:
                self.stats.orders_rejected += 1
            raise
        if self.stats is not None:
            self.stats.orders_accepted += 1
        self.ledger.add_create(account, {**request, **ids(booked)})
        self.publish(events)
        self._arm()
        return booked

    def cancel_list(self, account: Account, symbol: str, **kw) -> OrderList:
        self.sync()
        order_list, events = self.engine.cancel_list(account, symbol, self.now_ms(), **kw)
        self.publish(events)
        self._arm()
        return order_list

    def cancel(self, account: Account, symbol: str, **kw) -> Order:
        """Cancel (raises ``Rejected``); the cancel-races-fill fault is applied here."""
        self.sync()
        now = self.now_ms()
        if self.faults.cancel_race > 0:
            order = self.engine.find(
                account, symbol, kw.get("order_id"), kw.get("orig_client_order_id")
            )
            if order is not None and order.is_open:
                self.faults.cancel_race -= 1
                self.faults.counts["cancel_race"] += 1
                self.publish(self.engine.fill_now(order, now))
        order, events = self.engine.cancel(account, symbol, now, **kw)
        self.publish(events)
        self._arm()
        return order

    def publish(self, events: list[Event]) -> None:
        by_account: dict[Account, list[Push]] = {}
        for event in events:
            push = self.render(event)
            if push is not None:
                by_account.setdefault(event.account, []).append(push)
        for account, pushes in by_account.items():
            self.streams.publish(self.hub, account, pushes)

    def _on_fill(self, fill: Fill) -> None:
        if self.stats is not None:
            self.stats.fills += 1
        st = self.faults
        if st.disconnected_fills > 0:
            st.disconnected_fills -= 1
            st.counts["fill_while_disconnected"] += 1

    def drop_streams(self, count: bool = True) -> int:
        n = 0 if self.hub is None else self.streams.drop(self.hub)
        if count:
            self.faults.counts["user_stream_drop"] += n
        return n

    # -- the matching timer -----------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopping or not self.engine.watching():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the server loop (before start): the next request matches
        now = self.now_ms()
        due = self.engine.next_trade_time(now, 60_000)
        delay = 1.0 if due is None else min(max(due - now, 1) / 1000, 1.0)
        if not self.exact_clock:
            delay = min(delay, self.poll_interval)
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.publish(self.engine.advance(self.now_ms()))
        except Exception:
            log.exception("localexchange: matching failed")
        self._arm()

    def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
