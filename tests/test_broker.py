"""CCXTBroker against the local exchange with the real ccxt client: a strategy trades in a real
cerebro over a rehearsed history, and the exchange's ledgers equal the strategy's orders,
fills, positions and cash; the same strategy on backtrader's own broker makes the same trades.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import backtrader as bt
import pytest
from helpers import eventually
from test_rehearsal import make_rows

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import RehearsalExchange

pd = pytest.importorskip("pandas")

from backtrader_ccxt.frames import rows_to_frame, to_pandas_data  # noqa: E402

ROWS = 64
WARMUP = 36
START = WARMUP + 4  # trade once the feed is live (the backfill comes in a burst)
SPEED = 120.0  # a 1m candle every 0.5 s: the fills are back long before the next bar
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

    params = (("every", 4), ("hold", 2), ("size", 0.1), ("start", START), ("stop_at", ROWS - 4))

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
        if n < self.p.start or n > self.p.stop_at:
            return
        if self.position.size == 0 and n % self.p.every == 0:
            self.buy(size=self.p.size)
            self.entry = n
        elif self.position.size > 0 and self.entry is not None and n - self.entry >= self.p.hold:
            self.sell(size=self.position.size)
            self.entry = None


def backtest(rows, strategy=Trader, **kw):
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.adddata(to_pandas_data(rows_to_frame(rows, "1m"), "1m", name="BTC"))
    cerebro.broker.setcash(10_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addstrategy(strategy, **kw)
    return cerebro.run()[0]


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


def check_ledgers(ex, acct, broker):
    """The exchange's ledgers equal the broker's view: no duplicate order, every fill once."""
    creates = ex.ledger.create_requests(acct)
    cids = Counter(c.get("newClientOrderId") for c in creates)
    assert all(n == 1 for n in cids.values()), cids  # 0 duplicate orders
    assert set(cids) == set(broker._cid.values())  # every order the broker sent, once
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
    names = {"FILLED": "Completed", "CANCELED": "Canceled", "EXPIRED": "Expired", "NEW": "Accepted",
             "PARTIALLY_FILLED": "Partial"}  # fmt: skip
    for cid, status in snap.items():
        t = broker.ledger.by_cid[cid]
        assert broker.orders[t.ref].getstatusname() == names[status], (cid, status)
    bal = ex.ledger.balances(acct)
    base = bal.get("BTC", (0, 0))
    quote = bal.get("USDT", (0, 0))
    assert broker.positions[SYMBOL].size == pytest.approx(float(base[0] + base[1]), abs=1e-12)
    assert broker.getcash() == pytest.approx(float(quote[0] + quote[1]), abs=1e-8)
    return fills


@pytest.fixture(scope="module")
def rows():
    return make_rows(ROWS, seed=11)


def _bar_close_of(ms: int) -> datetime:
    """The close stamp of the candle trading at ``ms``."""
    return EPOCH + timedelta(milliseconds=(ms // MIN_MS + 1) * MIN_MS)


def test_ledgers_equal_the_strategy_and_trades_equal_backtraders_broker(rows):
    expected = backtest(rows)
    assert len(expected.trades) >= 4, "the rule must trade for the comparison to mean much"
    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        strat, broker = live(ex, acct)
        fills = check_ledgers(ex, acct, broker)
    # the same trades: same size, opened and closed on the same bars (backtrader's broker
    # stamps an execution with its bar's close; the exchange with the fill's own time)
    times = [_bar_close_of(f["time"]) for f in fills]
    assert [f["isBuyer"] for f in fills] == [e[1] for e in expected.execs]
    assert list(zip(times[::2], times[1::2], strict=False)) == [
        (o, c) for o, c, _, _, _ in expected.trades
    ]
    assert len(strat.trades) == len(expected.trades)
    assert len(strat.execs) == len(expected.execs)
    by_close = {r[0] + MIN_MS: r for r in rows}
    for f in fills:
        # each fill at a price of its candle (the replay's own path), its fee at the rate
        close = _bar_close_of(f["time"])
        row = by_close[int((close - EPOCH) / timedelta(milliseconds=1))]
        assert row[3] <= float(f["price"]) <= row[2]
        assert float(f["commission"]) == pytest.approx(float(f["quoteQty"]) * 0.001, abs=1e-8)
    # the strategy's P&L is the exchange's: sum over fills of -side*quote - fee
    spent = sum(
        (f["quoteQty"] if f["isBuyer"] else -f["quoteQty"]) + f["commission"] for f in fills
    )
    assert broker.getcash() == pytest.approx(10_000 - float(spent), abs=1e-8)
    closed = fills[: 2 * len(strat.trades)]  # the last buy may still be open
    pnl = -sum(
        (f["quoteQty"] if f["isBuyer"] else -f["quoteQty"]) + f["commission"] for f in closed
    )
    assert sum(t[4] for t in strat.trades) == pytest.approx(float(pnl), abs=1e-6)
    statuses = Counter(s for _, s in strat.notes)
    assert statuses["Completed"] == len(strat.execs)
    assert not statuses["Rejected"] and not statuses["Margin"]
