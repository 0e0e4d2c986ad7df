"""Live broker test helpers: a strategy that trades on a schedule, the live run through
CCXTBroker on a rehearsal exchange, and the check that the exchange's ledgers equal what the
broker and the strategy saw."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import backtrader as bt
import pytest
from helpers import eventually

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.frames import rows_to_frame, to_pandas_data

ROWS = 64
WARMUP = 36
START = WARMUP + 4  # trade once the feed is live (the backfill comes in a burst)
SYMBOL = "BTC/USDT"
MIN_MS = 60_000
EPOCH = datetime(1970, 1, 1)


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() <= before, timeout=10)


class Trader(bt.Strategy):
    """Buys 0.1 every ``every`` bars after the warmup when flat, sells it ``hold`` bars later;
    records every notification, execution and closed trade."""

    params = (
        ("every", 4),
        ("hold", 2),
        ("size", 0.1),
        ("start", START),
        ("stop_at", ROWS - 4),
        ("on_bar", None),  # on_bar(strategy, n) before the rule: faults, cancels
        ("limit_offset", None),  # buy with a limit this far under the close (else market)
        ("sell_offset", None),  # sell with a limit this far over the close (else market)
    )

    def __init__(self):
        self.notes = []
        self.execs = []
        self.trades = []
        self.entry = None

    def notify_order(self, order):
        self.notes.append((order.ref, order.getstatusname()))
        if order.status == order.Completed:
            ex = order.executed
            self.execs.append((bt.num2date(ex.dt), order.isbuy(), ex.size, ex.price, ex.comm))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades.append((bt.num2date(trade.dtopen), bt.num2date(trade.dtclose), trade.size,
                                trade.pnl, trade.pnlcomm))  # fmt: skip

    def next(self):
        n = len(self.data)
        if self.p.on_bar is not None:
            self.p.on_bar(self, n)
        if n < self.p.start or n > self.p.stop_at:
            return
        if self.position.size == 0 and n % self.p.every == 0:
            if self.p.limit_offset is None:
                self.buy(size=self.p.size)
            else:
                price = round(self.data.close[0] - self.p.limit_offset, 2)
                self.buy(size=self.p.size, exectype=bt.Order.Limit, price=price)
            self.entry = n
        elif self.position.size > 0 and self.entry is not None and n - self.entry >= self.p.hold:
            if self.p.sell_offset is None:
                self.sell(size=self.position.size)
            else:
                price = round(self.data.close[0] + self.p.sell_offset, 2)
                self.sell(size=self.position.size, exectype=bt.Order.Limit, price=price)
            self.entry = None


def backtest(rows, strategy=Trader, **kw):
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.adddata(to_pandas_data(rows_to_frame(rows, "1m"), "1m", name="BTC"))
    cerebro.broker.setcash(10_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addstrategy(strategy, **kw)
    return cerebro.run()[0]


def bar_close_of(ms: int) -> datetime:
    """The close stamp of the candle trading at ``ms``."""
    return EPOCH + timedelta(milliseconds=(ms // MIN_MS + 1) * MIN_MS)


def live(ex, acct, strategy=Trader, broker_kwargs=None, store_kwargs=None, **kw):
    skw = ex.store_kwargs()
    skw["config"] = {**ex.ccxt_config(account=acct), "timeout": 3000, **(store_kwargs or {})}
    store = CCXTStore(**skw)
    broker = store.getbroker(**{"stream": False, "poll_interval": 20.0, **(broker_kwargs or {})})
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(broker)
    cerebro.adddata(store.getdata(dataname=SYMBOL, name="BTC", timeframe="1m", **ex.feed_kwargs()))
    cerebro.addstrategy(strategy, **kw)
    try:
        strat = cerebro.run()[0]
    finally:
        store.stop()
    return strat, broker


def leg_cids(create: dict) -> list:
    """The client ids one accepted create request books: an order's, or an OCO's two legs'."""
    if "newClientOrderId" in create:
        return [create["newClientOrderId"]]
    return [create["aboveClientOrderId"], create["belowClientOrderId"]]


def check_ledgers(ex, acct, broker):
    """The exchange's ledgers equal the broker's view: no duplicate order, every fill once."""
    creates = ex.ledger.create_requests(acct)
    cids = Counter(cid for c in creates for cid in leg_cids(c))
    assert all(n == 1 for n in cids.values()), cids  # 0 duplicate orders
    refused = {
        t.client_id
        for t in broker.ledger.by_cid.values()
        if broker.orders[t.ref].status in (bt.Order.Margin, bt.Order.Rejected)
    }
    assert set(cids) == set(broker._cid.values()) - refused  # every order the broker sent, once
    assert not set(cids) & refused
    assert all("quoteOrderQty" not in c for c in creates)  # market orders sent by size
    fills = ex.ledger.fills(acct)
    ours = {str(f["id"]) for f in fills}
    assert ours == broker.ledger.trade_ids  # 0 missed, 0 extra
    for t in broker.ledger.by_cid.values():
        on_ex = sum(f["qty"] for f in fills if f["clientOrderId"] == t.client_id)
        assert on_ex == t.filled
        order = broker.orders[t.ref]
        assert abs(order.executed.size) == pytest.approx(float(on_ex), abs=1e-12)
    snap = {o["clientOrderId"]: o["status"] for o in ex.ledger.orders(acct)}
    names = {"FILLED": {"Completed"}, "CANCELED": {"Canceled", "Expired"}, "EXPIRED": {"Expired", "Canceled"},
             "NEW": {"Accepted"}, "PARTIALLY_FILLED": {"Partial"}}  # fmt: skip
    for cid, status in snap.items():
        t = broker.ledger.by_cid[cid]
        got = broker.orders[t.ref].getstatusname()
        assert got in names[status], (cid, status, got)
        if status == "EXPIRED" and got == "Canceled":
            assert t.list_leg  # the losing leg of a native OCO: backtrader cancels it
        if got == "Expired" and status == "CANCELED":
            assert t.expiring  # canceled by the broker for its valid date
    bal = ex.ledger.balances(acct)
    base = bal.get("BTC", (0, 0))
    quote = bal.get("USDT", (0, 0))
    assert broker.positions[SYMBOL].size == pytest.approx(float(base[0] + base[1]), abs=1e-12)
    assert broker.getcash() == pytest.approx(float(quote[0] + quote[1]), abs=1e-8)
    return fills
