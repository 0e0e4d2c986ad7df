"""CCXTBroker's backtrader side on an in-memory venue: statuses, executions, trades, P&L,
positions and cash, against backtrader's own broker on the same bars."""

from __future__ import annotations

import backtrader as bt
import pytest

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.broker import MissingCredentialsError
from tests.brokertools import FakeBroker, FakeStore, Trader, run


def _fake(**venue):
    return FakeBroker(store=FakeStore(), venue_kwargs=venue)


def test_getbroker_without_credentials_is_a_typed_error():
    with pytest.raises(MissingCredentialsError, match="apiKey, secret"):
        CCXTStore("binance").getbroker()
    with pytest.raises(MissingCredentialsError, match="secret"):
        CCXTStore("binance", config={"apiKey": "k"}).getbroker()


@pytest.mark.parametrize("limit", [False, True])
def test_same_trades_as_backtraders_broker(limit):
    ref, ref_broker = run(limit=limit)
    got, broker = run(_fake(), limit=limit)
    assert len(ref.trades) >= 5
    assert got.trades == ref.trades
    assert broker.getcash() == pytest.approx(ref_broker.getcash(), abs=1e-6)
    assert broker.getvalue() == pytest.approx(ref_broker.getvalue(), abs=1e-6)


def test_status_path_and_each_fill_once():
    got, broker = run(_fake())
    by_ref = {}
    for ref, status, _ in got.notes:
        by_ref.setdefault(ref, []).append(status)
    assert by_ref
    for statuses in by_ref.values():
        assert statuses == ["Submitted", "Accepted", "Completed"]
    assert broker.stats["fills"] == len(broker.venue.trades)


@pytest.mark.parametrize("fault", ["duplicate", "reorder"])
def test_duplicate_and_out_of_order_reports_change_nothing(fault):
    ref, _ = run(_fake())
    got, broker = run(_fake(**{fault: True}))
    assert got.trades == ref.trades
    assert broker.stats["fills"] == len(broker.venue.trades)
    # the position is the venue's balance: nothing counted twice
    assert broker.positions["BTC/USDT"].size == pytest.approx(float(broker.venue.base))


def test_market_orders_leave_without_a_price():
    _, broker = run(_fake())
    assert broker.venue.creates
    assert all(r.price is None for r in broker.venue.creates if r.type == "market")


class _Oddsize(bt.Strategy):
    def next(self):
        if len(self) == 2:
            self.order = self.buy(size=0.00015)  # below the step

    def notify_order(self, order):
        if order.status == order.Rejected:
            self.reason = order.info.get("reject_reason")


def test_an_order_that_does_not_fit_is_rejected_with_the_reason_never_sent():
    got, broker = run(_fake(), strategy=_Oddsize, n=5)
    assert got.reason.startswith("amount_step")
    assert broker.venue.creates == []


class _Bracket(bt.Strategy):
    def __init__(self):
        self.notes = []

    def notify_order(self, order):
        self.notes.append((order.ref, order.getstatusname()))

    def next(self):
        if len(self) == 3:
            c = self.data.close[0]
            self.orders = self.buy_bracket(
                size=0.5, exectype=bt.Order.Market, stopprice=c - 50, limitprice=c + 0.5
            )


def test_bracket_children_wait_for_the_parent_and_cancel_each_other():
    got, broker = run(_fake(), strategy=_Bracket, n=30)
    parent, stop, limit = got.orders
    # the parent went first, alone; then only the take-profit limit rested on the venue
    kinds = [(r.type, r.side) for r in broker.venue.creates]
    assert kinds[0] == ("market", "buy")
    assert kinds[1] == ("limit", "sell")
    assert broker.orders[limit.ref].status == bt.Order.Completed
    assert broker.orders[stop.ref].status == bt.Order.Canceled
    assert broker.positions["BTC/USDT"].size == pytest.approx(0.0)


class _Valid(bt.Strategy):
    def next(self):
        if len(self) == 2:
            self.o = self.buy(
                size=0.5,
                exectype=bt.Order.Limit,
                price=50.0,  # never reached
                valid=self.data.datetime.datetime(0) + __import__("datetime").timedelta(minutes=3),
            )

    def notify_order(self, order):
        self.last = order.getstatusname()


def test_valid_until_a_date_expires_through_a_cancel():
    got, broker = run(_fake(), strategy=_Valid, n=10)
    assert got.last == "Expired"
    assert len(broker.venue.cancels) == 1


def test_strategy_runs_on_the_trader_helper():
    # guard: the helper strategy really trades (else the comparisons above prove nothing)
    got, _ = run(_fake(), strategy=Trader)
    assert len(got.trades) >= 5
