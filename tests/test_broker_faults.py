"""CCXTBroker through each of the local exchange's trading faults: after each, 0 duplicate
orders, 0 missed and 0 double-counted fills, and the strategy's orders, positions and cash
equal the exchange's ledgers (real ccxt and ccxt.pro on 127.0.0.1)."""

from __future__ import annotations

import backtrader as bt
import pytest
from brokerlive import (
    ROWS,
    START,
    SYMBOL,
    WARMUP,
    Trader,
    check_ledgers,
    live,
    no_leftover_threads,  # noqa: F401 - the fixture
)
from test_rehearsal import make_rows

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.errors import FatalExchangeError
from backtrader_ccxt.localexchange import LocalExchange, RehearsalExchange

pytest.importorskip("pandas")

SPEED = 600.0  # a 1m candle every 0.1 s: these check ledgers, not timing (test_broker.py stays
# at 300: its trades must equal backtrader's bar for bar, and at 600 a busy machine's fill
# latency moved a trade in 3 runs of 3 with a CPU hog beside the broker tests)


@pytest.fixture(scope="module")
def rows():
    return make_rows(ROWS, seed=5)


def at(n, fn):
    """An ``on_bar`` hook running ``fn(strategy)`` once, on bar ``n``."""

    def hook(strat, bar):
        if bar == n:
            fn(strat)

    return hook


def run_fault(rows, arm, stream=True, balances=None, timeout=3000, **kw):
    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances=balances or {"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        strat, broker = live(
            ex,
            acct,
            broker_kwargs={"stream": stream, "reconcile_interval": 60.0},
            store_kwargs={"timeout": timeout},
            on_bar=at(START, lambda s: arm(ex, s)),
            **kw,
        )
        fills = check_ledgers(ex, acct, broker)
        counts = dict(ex.faults.trading.counts) if hasattr(ex.faults, "trading") else {}
        return strat, broker, fills, counts, ex


def test_lost_create_reply_is_looked_up_not_resent(rows):
    strat, broker, fills, counts, _ = run_fault(
        rows, lambda ex, s: ex.faults.lose_order_reply(1), timeout=1000
    )
    assert counts.get("lost_order_reply") == 1
    st = broker.store.stats
    assert st["broker_create_unknown"] == 1 and st["broker_create_adopted"] == 1
    assert fills  # and the order it adopted filled, once (check_ledgers)


@pytest.mark.parametrize(
    "fault, key",
    [
        (lambda ex, s: ex.faults.drop_user_stream_during_fill(2), "drop_during_fill"),
        (lambda ex, s: ex.faults.duplicate_execution_reports(6), "duplicate_report"),
        (lambda ex, s: ex.faults.reorder_execution_reports(4), "reordered_report"),
        (lambda ex, s: ex.faults.fill_while_disconnected(2), "fill_while_disconnected"),
    ],
    ids=["drop-during-fill", "duplicates", "out-of-order", "fill-while-disconnected"],
)
def test_stream_faults_change_no_fill(rows, fault, key):
    # limit buys just under the close and sells just over it rest, then fill on the stream
    # (or, when the fault hides a fill, in REST only): no fill rides on a create reply
    strat, broker, fills, counts, _ = run_fault(rows, fault, limit_offset=0.05, sell_offset=0.05)
    assert counts.get(key, 0) >= 1, counts
    assert len(fills) >= 4
    if key in ("drop_during_fill", "fill_while_disconnected"):
        assert broker.store.stats["broker_stream_breaks"] >= 1
        assert broker.store.stats["broker_stream_restored"] >= 1  # and the stream came back
        assert broker.ledger.stats.get("fill_from_rest", 0) >= 1  # the gap came over REST
    if key == "duplicate_report":
        assert broker.ledger.stats["fill_duplicate"] + broker.ledger.stats["report_duplicate"] > 0


def _far_limit_then_cancel(ex, s):
    s.far = s.buy(size=0.1, exectype=bt.Order.Limit, price=round(s.data.close[0] - 3, 2))
    s.entry = len(s)


def test_cancel_racing_a_fill_ends_completed(rows):
    def arm(ex, s):
        _far_limit_then_cancel(ex, s)

    def then_cancel(strat, bar):
        if bar == START:
            arm(None, strat)
        elif bar == START + 1:
            strat.ex.faults.cancel_races_fill(1)
            strat.cancel(strat.far)

    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        Trader.ex = ex
        try:
            strat, broker = live(
                ex, acct, broker_kwargs={"stream": True}, on_bar=then_cancel, start=ROWS
            )
        finally:
            del Trader.ex
        check_ledgers(ex, acct, broker)
        assert ex.faults.trading.counts.get("cancel_race") == 1
    assert broker.orders[strat.far.ref].status == bt.Order.Completed
    assert broker.store.stats["broker_cancel_refused"] == 1
    assert broker.positions[SYMBOL].size == pytest.approx(0.1)


def test_insufficient_balance_is_margin_and_nothing_booked(rows):
    strat, broker, fills, _, ex = run_fault(
        rows, lambda ex, s: None, stream=False, balances={"USDT": 15, "BTC": 0}, size=0.2
    )
    statuses = [s for _, s in strat.notes]
    assert "Margin" in statuses and "Completed" not in statuses
    assert fills == []
    assert broker.getcash() == pytest.approx(15.0)


def test_clock_skew_is_measured_and_the_refused_order_sent_once_more():
    """Real time (the skew is against the wall clock the signatures are checked with)."""
    ex = LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=60)
    acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0}, fee_rate=0.001)

    class Skewed(bt.Strategy):
        def __init__(self):
            self.live_bars = 0
            self.notes = []

        def notify_data(self, data, status, *args, **kwargs):
            self.is_live = data._getstatusname(status) == "LIVE"

        def notify_order(self, order):
            self.notes.append(order.getstatusname())

        def next(self):
            if not getattr(self, "is_live", False):
                return
            self.live_bars += 1
            if self.live_bars == 1:
                ex.faults.clock_skew(-3000)  # the venue's clock 3 s behind: -1021 from now
            elif self.live_bars == 2:
                self.buy(size=0.001)
            elif self.live_bars >= 3 and "Completed" in self.notes or self.live_bars == 15:
                self.env.runstop()

    with ex:
        store = CCXTStore(
            exchange="binance", config={**ex.ccxt_config(account=acct), "timeout": 3000}
        )
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.setbroker(store.getbroker(stream=False, poll_interval=600))
        cerebro.adddata(store.getdata(dataname=SYMBOL, timeframe="1s"))
        cerebro.addstrategy(Skewed)
        try:
            strat = cerebro.run()[0]
        finally:
            store.stop()
        broker = cerebro.broker
        assert store.stats["broker_create_resent_after_1021"] == 1
        assert strat.notes[:3] == ["Submitted", "Accepted", "Completed"]
        check_ledgers(ex, acct, broker)
        assert len(ex.ledger.create_requests(acct)) == 1


def test_refused_credentials_fail_the_start_with_the_reason_and_no_secret():
    with LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=10) as ex:
        acct = ex.add_account(balances={"USDT": 100})
        config = {**ex.ccxt_config(account=acct), "secret": "f" * 64}
        store = CCXTStore(exchange="binance", config=config)
        broker = store.getbroker()
        try:
            with pytest.raises(FatalExchangeError, match="balance") as info:
                broker.start()
        finally:
            store.stop()
        assert "f" * 64 not in str(info.value)
        assert ex.ledger.create_requests(acct) == []
