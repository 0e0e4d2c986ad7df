"""CCXTBroker against the local exchange with the real ccxt client: a strategy trades in a real
cerebro over a rehearsed history, and the exchange's ledgers equal the strategy's orders,
fills, positions and cash; the same strategy on backtrader's own broker makes the same trades.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from brokerlive import (
    EPOCH,
    MIN_MS,
    ROWS,
    SYMBOL,
    WARMUP,
    backtest,
    bar_close_of,
    check_ledgers,
    live,
    no_leftover_threads,  # noqa: F401 - the fixture
)
from test_rehearsal import make_rows

from backtrader_ccxt.localexchange import RehearsalExchange

pytest.importorskip("pandas")

SPEED = 300.0  # a 1m candle every 0.2 s: the fills are back long before the next bar (the
# REST poll every 20 exchange s, ccxt's rate limiter scaled with the clock: store.py)


@pytest.fixture(scope="module")
def rows():
    return make_rows(ROWS, seed=11)


@pytest.mark.parametrize("stream", [False, True], ids=["rest-poll", "user-stream"])
def test_ledgers_equal_the_strategy_and_trades_equal_backtraders_broker(rows, stream):
    expected = backtest(rows)
    assert len(expected.trades) >= 4, "the rule must trade for the comparison to mean much"
    with RehearsalExchange({SYMBOL: rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        strat, broker = live(ex, acct, broker_kwargs={"stream": stream})
        fills = check_ledgers(ex, acct, broker)
    # the same trades: same size, opened and closed on the same bars (backtrader's broker
    # stamps an execution with its bar's close; the exchange with the fill's own time)
    times = [bar_close_of(f["time"]) for f in fills]
    assert [f["isBuyer"] for f in fills] == [e[1] for e in expected.execs]
    assert list(zip(times[::2], times[1::2], strict=False)) == [
        (o, c) for o, c, _, _, _ in expected.trades
    ]
    assert len(strat.trades) == len(expected.trades)
    assert len(strat.execs) == len(expected.execs)
    by_close = {r[0] + MIN_MS: r for r in rows}
    for f in fills:
        # each fill at a price of its candle (the replay's own path), its fee at the rate
        close = bar_close_of(f["time"])
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
    if stream:
        assert broker.ledger.stats["report_from_stream"] > 0  # the stream was followed
    statuses = Counter(s for _, s in strat.notes)
    assert statuses["Completed"] == len(strat.execs)
    assert not statuses["Rejected"] and not statuses["Margin"]
