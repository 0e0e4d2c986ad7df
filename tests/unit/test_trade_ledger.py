"""The local exchange's trade ledger: trades that aggregate exactly into its candles (pure)."""

from datetime import datetime, timezone

import pytest

from backtrader_ccxt.localexchange.data import Replay
from backtrader_ccxt.localexchange.trades import TradeLedger
from backtrader_ccxt.timeframes import parse
from backtrader_ccxt.trades import TradeBars, TradeGate, parse_trades

NOW = int(datetime(2024, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc).timestamp() * 1000)
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")  # two real, one derived


def ledger(tf="1s", history=600, empty_every=0):
    replay = Replay(SYMBOLS, NOW, history, 4, empty_every=empty_every)
    return replay, TradeLedger(replay, tf)


def bars_from(trades, tf_name, now, empty="skip"):
    good, bad = parse_trades([t.ccxt() for t in trades])
    assert bad == []
    gate, agg = TradeGate(), TradeBars(parse(tf_name), empty=empty)
    for t in gate.admit(good):
        assert agg.add(t)
    return [b.row() for b in agg.advance(now)], gate


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("tf", ["1s", "1m"])
def test_trades_aggregate_to_exactly_the_candles(symbol, tf):
    replay, led = ledger(tf, history=300)
    trades = led.between(symbol, None, None, NOW)
    assert [t.id for t in trades] == list(range(len(trades)))  # consecutive, in time order
    times = [t.time_ms for t in trades]
    assert times == sorted(times) and len(set(times)) == len(times) and times[-1] <= NOW
    bars, gate = bars_from(trades, tf, NOW)
    assert gate.gaps == []
    assert bars == replay.closed_ohlcv(symbol, replay.timeframe(tf), None, None, NOW)


def test_prices_are_on_the_tick_and_amounts_in_lot_steps():
    replay, led = ledger()
    for symbol in SYMBOLS:
        tick = replay.series[symbol].tick_units
        for t in led.between(symbol, None, None, NOW):
            assert t.price % tick == 0 and t.qty > 0 and t.qty % 1000 == 0


@pytest.mark.parametrize("omit, empty", [(True, "skip"), (False, "flat")])
def test_empty_candles_have_no_trades_and_match_either_rule(omit, empty):
    replay, led = ledger(empty_every=7)
    tf = replay.timeframe("1s")
    for symbol in SYMBOLS:
        bars, _ = bars_from(led.between(symbol, None, None, NOW), "1s", NOW, empty)
        want = replay.closed_ohlcv(symbol, tf, None, None, NOW, omit_empty=omit)
        if not omit:  # a flat bar needs a trade before it: the history may start empty
            while replay.is_empty(symbol, tf, tf.index(want[0][0])):
                want.pop(0)
        assert bars == want
        assert any(r[5] == 0 for r in want) != omit


def test_paging_by_id_and_the_windows_agree_with_the_ledger():
    _, led = ledger()
    symbol = "ETH/USDT"
    every = led.between(symbol, None, None, NOW)
    walked, next_id = [], 0
    while True:
        page = led.from_id(symbol, next_id, 97, NOW)
        if not page:
            break
        walked += page
        next_id = page[-1].id + 1
    assert walked == every
    assert led.recent(symbol, 5, NOW) == every[-5:]
    start, end = every[100].time_ms, every[400].time_ms
    inside = [t for t in every if start <= t.time_ms <= end]
    assert led.last_between(symbol, start, end, 50, NOW) == inside[-50:]
    assert led.first_between(symbol, start, end, 50, NOW) == inside[:50]
    assert led.between(symbol, start, end, NOW) == [t for t in inside if t.time_ms < end]
    # a trade exists once the clock reaches its time, never before
    assert led.from_id(symbol, every[-1].id + 1, 10, NOW) == []
    later = led.from_id(symbol, every[-1].id + 1, 1, NOW + 1000)
    assert later and later[0].time_ms > NOW


def test_make_empty_removes_a_candles_trades():
    replay, led = ledger()
    tf = replay.timeframe("1s")
    symbol = "BTC/USDT"
    k = tf.index(NOW) - 10
    before = led.between(symbol, None, None, NOW)
    replay.make_empty(symbol, tf, tf.open_of(k))
    after = led.between(symbol, None, None, NOW)
    assert led.candle_trades(symbol, k) == []
    assert len(after) == len(before) - sum(1 for t in before if tf.index(t.time_ms) == k)
    assert [t.id for t in after] == list(range(len(after)))
