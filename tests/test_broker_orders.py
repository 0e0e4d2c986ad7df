"""CCXTBroker's order types on the local exchange: native stops, an emulated bracket (one
resting child, the other watched), valid dates, partial fills, and a restart that finds the
earlier run's holdings and open order."""

from __future__ import annotations

from datetime import timedelta

import backtrader as bt
import pytest
from brokerlive import (
    ROWS,
    START,
    SYMBOL,
    WARMUP,
    check_ledgers,
    live,
    no_leftover_threads,  # noqa: F401 - the fixture
)
from test_rehearsal import make_rows

from backtrader_ccxt.localexchange import RehearsalExchange

pytest.importorskip("pandas")

SPEED = 600.0  # a 1m candle every 0.1 s: these check ledgers, not timing (test_broker.py stays
# at 300: its trades must equal backtrader's bar for bar, and at 600 a busy machine's fill
# latency moved a trade in 3 runs of 3 with a CPU hog beside the broker tests)


@pytest.fixture(scope="module")
def rows():
    return make_rows(ROWS, seed=3)


def _run(rows, hook, balances=None, setup=None, broker_kwargs=None, **kw):
    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances=balances or {"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        if setup is not None:
            setup(ex)
        strat, broker = live(ex, acct, broker_kwargs={"stream": True, **(broker_kwargs or {})},
                             on_bar=hook, start=ROWS + 1, **kw)  # fmt: skip
        check_ledgers(ex, acct, broker)
        return strat, broker, ex.ledger.orders(acct), ex.ledger.fills(acct)


def test_native_stop_is_a_binance_stop_loss(rows):
    def hook(s, n):
        if n == START:
            s.buy(size=0.1)
        elif n == START + 1:
            # under the next candle's low (rows seed 3: close 103.68, next low 103.28): it
            # rests whenever in that candle it arrives, and triggers in the one after (low
            # 102.71); 0.3 under the close triggered at once when it arrived after the low
            s.stop_order = s.sell(
                size=0.1, exectype=bt.Order.Stop, price=round(s.data.close[0] - 0.5, 2)
            )

    strat, broker, orders, fills = _run(rows, hook)
    assert [o["type"] for o in orders] == ["MARKET", "STOP_LOSS"]
    assert broker.orders[strat.stop_order.ref].status == bt.Order.Completed
    assert broker.positions[SYMBOL].size == pytest.approx(0.0)
    assert len(fills) == 2


def _bracket(s, n, down=1.5, up=1.2):
    if n == START:
        c = s.data.close[0]
        s.bracket = s.buy_bracket(size=0.1, exectype=bt.Order.Market,
                                  stopprice=round(c - down, 2), limitprice=round(c + up, 2))  # fmt: skip


def _one_child_filled(strat, broker, fills):
    parent, stop, limit = strat.bracket
    st = {k: broker.orders[o.ref].getstatusname() for k, o in (("stop", stop), ("limit", limit))}
    assert sorted(st.values()) == ["Canceled", "Completed"], st
    assert broker.orders[parent.ref].status == bt.Order.Completed
    assert broker.positions[SYMBOL].size == pytest.approx(0.0)
    assert len(fills) == 2  # the group filled once
    return st


def test_bracket_children_as_binances_own_oco(rows):
    strat, broker, orders, fills = _run(rows, _bracket)
    # both children rest on the exchange, as one order list
    assert [o["type"] for o in orders] == ["MARKET", "LIMIT_MAKER", "STOP_LOSS"]
    assert orders[1]["orderListId"] == orders[2]["orderListId"] != -1
    assert sorted(o["status"] for o in orders[1:]) == ["EXPIRED", "FILLED"]
    _one_child_filled(strat, broker, fills)  # EXPIRED (the losing leg) is notified Canceled
    assert broker.stats["native_oco"] == 1 and not broker.stats["native_oco_refused"]


def test_a_refused_oco_falls_back_to_the_emulated_bracket(rows):
    # a take-profit 0.01 above the signal's close: by the time the list arrives the market has
    # moved past it (or gets there at once), and Binance refuses the list (-2010)
    strat, broker, orders, fills = _run(rows, lambda s, n: _bracket(s, n, down=1.5, up=0.01))
    assert broker.stats["native_oco"] == 1 and broker.stats["native_oco_refused"] == 1
    _one_child_filled(strat, broker, fills)
    assert "LIMIT" in [o["type"] for o in orders]  # the take-profit, sent on its own


def test_bracket_children_emulated_one_resting_one_watched(rows):
    strat, broker, orders, fills = _run(rows, _bracket, broker_kwargs={"native_oco": False})
    # the exchange saw the parent and the take-profit; the stop was the broker's to watch,
    # sent as a market order only if it triggered
    types = [o["type"] for o in orders]
    assert types[:2] == ["MARKET", "LIMIT"]
    assert "STOP_LOSS" not in types
    _one_child_filled(strat, broker, fills)


def test_valid_date_expires_on_the_exchange_too(rows):
    def hook(s, n):
        if n == START:
            s.far = s.buy(size=0.1, exectype=bt.Order.Limit, price=round(s.data.close[0] - 20, 2),
                          valid=s.data.datetime.datetime(0) + timedelta(minutes=2))  # fmt: skip

    strat, broker, orders, fills = _run(rows, hook)
    assert broker.orders[strat.far.ref].getstatusname() == "Expired"
    assert [o["status"] for o in orders] == ["CANCELED"]
    assert fills == []


def test_partial_fills_each_executed_once(rows):
    def setup(ex):
        ex.max_fill_qty = "0.03"

    def hook(s, n):
        if n == START:
            s.big = s.buy(size=0.1)

    strat, broker, orders, fills = _run(rows, hook, setup=setup)
    assert [float(f["qty"]) for f in fills] == pytest.approx([0.03, 0.03, 0.03, 0.01])
    order = broker.orders[strat.big.ref]
    assert order.status == bt.Order.Completed
    assert len(order.executed.exbits) == 4
    assert order.executed.price == pytest.approx(
        float(sum(f["price"] * f["qty"] for f in fills) / sum(f["qty"] for f in fills))
    )


def test_a_restart_loads_holdings_and_sees_the_earlier_runs_open_order(rows):
    class Look(bt.Strategy):
        def next(self):
            if not hasattr(self, "first"):
                self.first = (self.getposition().size, dict(self.broker.earlier_orders))

    def hook(s, n):
        if n == START:
            s.buy(size=0.2)
        elif n == START + 2:
            s.far = s.sell(size=0.1, exectype=bt.Order.Limit, price=round(s.data.close[0] + 30, 2))

    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0.05}, fee_rate=0.001)
        strat, broker = live(ex, acct, broker_kwargs={"stream": True}, on_bar=hook, start=ROWS + 1)
        first_cid = strat.far.info["client_id"]
        again, broker2 = live(ex, acct, strategy=Look, broker_kwargs={"stream": False})
    size, earlier = again.first
    assert size == pytest.approx(0.25)  # 0.05 held before, 0.2 bought by the first run
    assert list(earlier) == [first_cid]
    assert broker2.ids.run != broker.ids.run
