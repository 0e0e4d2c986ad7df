"""Several feeds in one cerebro with ``exactbars=1`` (flat memory), made out of step by faults.

backtrader rewinds a feed that delivered a bar later than another feed's in the same loop
turn, and reads every feed's last bar on each strategy step; a one-bar buffer supports
neither (``IndexError: deque index out of range``). The feeds keep themselves in step
(``backtrader_ccxt/sync.py``); these runs check, through a real cerebro against the local
exchange, that every feed still delivers exactly the exchange's candles.
"""

from __future__ import annotations

from datetime import timedelta

import backtrader as bt
import pytest
from feedtools import (
    EPOCH,
    MODES,
    Recorder,
    assert_contiguous,
    expected_for,
    fast_exchange,
    fast_store,
    to_ms,
    truth,
)

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SK00/USDT")


@pytest.fixture(scope="module")
def ex():
    """On a fast clock (tests/feedtools.py). The graces below are fractions of a candle that
    order the feeds' requests within it, so they stay in exchange seconds; 2.5x, not 5x:
    the 429s must still land on one feed's request and its one retry (real 0.1 s apart, by
    Retry-After), and at 5x the other feeds' polls come between them (seen: threaded)."""
    with fast_exchange(2.5, symbols=SYMBOLS, timeframes=("1s", "1m"), history=3000) as ex:
        yield ex


class StepRecorder(Recorder):
    """Also counts the strategy steps in which only some feeds advanced (out of step)."""

    def __init__(self) -> None:
        super().__init__()
        self.partial_steps = 0

    def next(self) -> None:
        before = {n: len(b) for n, b in self.bars.items()}
        super().next()
        moved = sum(len(b) > before[n] for n, b in self.bars.items())
        if 0 < moved < len(self.bars):
            self.partial_steps += 1


@pytest.mark.parametrize("mode", list(MODES))
def test_exactbars_1_with_three_live_feeds_out_of_step(ex, mode):
    """One feed falls behind the others (REST 429s beyond its retries in the polling modes,
    two missing WebSocket finals confirmed late over REST), then catches up: crashed with
    IndexError before the feeds kept in step."""
    store = fast_store(ex, retries=1, retry_delay=0.05, retry_max_delay=0.2)
    cerebro = bt.Cerebro(stdstats=False, exactbars=1)
    lagging = "ETH/USDT"
    for sym in SYMBOLS:
        # the lagging feed polls (or confirms) later in each second, so the fault injected
        # on the first feed's bar hits its requests first
        grace = 0.6 if sym == lagging else 0.1
        if mode == "websocket" and sym == lagging:
            grace = 0.95  # its REST confirmation arrives next to the others' next finals
        cerebro.adddata(
            store.getdata(
                dataname=sym,
                name=sym,
                timeframe="1s",
                backfill_bars=5,
                poll_grace=grace,
                ws_reconnect_delay=0.8,
                ws_max_reconnect_delay=1.0,
                **MODES[mode],
            )
        )
    injected = []

    def on_bar(strat, data):
        if data._name == SYMBOLS[0] and strat.live_counts[data._name] == 2 and not injected:
            injected.append(True)
            if mode == "websocket":
                ex.faults.skip_final(count=2, symbol=lagging)
            else:
                ex.faults.rest_errors("429", count=2, retry_after=0.1)

    cerebro.addstrategy(StepRecorder, live_bars=8, on_bar=on_bar)
    strat = cerebro.run()[0]

    assert injected
    assert strat.partial_steps >= 1, "the feeds never got out of step: the test proves nothing"
    for sym in SYMBOLS:
        bars = strat.bars[sym]
        assert len(bars) >= 5 + 8
        assert_contiguous(bars, "1s")
        assert bars == expected_for(ex, sym, "1s", bars)
    if mode != "websocket":  # the 429s outlasted a feed's retries: it fell behind
        assert any("CONNBROKEN" in st for st in strat.statuses.values()), strat.statuses


def test_exactbars_1_historical_feeds_of_different_spans_and_timeframes(ex):
    """``historical=True`` feeds starting at different times, 1s and 1m, one cerebro with
    exactbars=1 (no preload): each feed's bars are exact, and every strategy step sees one
    time only (the earliest first)."""
    now = ex.now_ms()
    end = now - now % 60_000 - 60_000
    store = fast_store(ex)
    cerebro = bt.Cerebro(stdstats=False, exactbars=1)
    spans = {
        "BTC1s": ("BTC/USDT", "1s", end - 150_000),
        "ETH1s": ("ETH/USDT", "1s", end - 90_000),
        "BTC1m": ("BTC/USDT", "1m", end - 240_000),
    }
    for name, (sym, tf, start_ms) in spans.items():
        cerebro.adddata(
            store.getdata(
                dataname=sym,
                name=name,
                timeframe=tf,
                fromdate=EPOCH + timedelta(milliseconds=start_ms),
                todate=EPOCH + timedelta(milliseconds=end),
                historical=True,
            )
        )
    cerebro.addstrategy(StepRecorder, live_bars=None)
    strat = cerebro.run()[0]

    for name, (sym, tf, start_ms) in spans.items():
        step = 1000 if tf == "1s" else 60_000
        want = truth(ex, sym, tf, start_ms - step, end)
        assert strat.bars[name] == want, name
    assert strat.partial_steps >= 1
    # the merged order: no step shows a bar older than one shown before (across feeds)
    stamps = sorted(
        ((b[0], name) for name, bars in strat.bars.items() for b in bars), key=lambda x: x[0]
    )
    assert to_ms(stamps[0][0]) == spans["BTC1m"][2]
