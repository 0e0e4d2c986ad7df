"""``tz``: backtrader reads naive ``fromdate``/``todate`` in ``tz`` and shows bar times in it;
the feed fetches the same window, and its lines stay UTC."""

from __future__ import annotations

import zoneinfo
from datetime import timedelta, timezone

import backtrader as bt
import pytest
from feedtools import EPOCH, truth

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.localexchange import LocalExchange

UTC = timezone.utc


@pytest.fixture(scope="module")
def ex():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",), history=1000) as ex:
        yield ex


class UtcRecorder(bt.Strategy):
    """Each bar's UTC stamp (from the line itself) and the time backtrader displays."""

    def __init__(self) -> None:
        self.utc: list[tuple] = []
        self.shown: list = []

    def next(self) -> None:
        d = self.data
        self.utc.append((bt.num2date(d.datetime[0]), d.open[0], d.close[0], d.volume[0]))
        self.shown.append(d.datetime.datetime(0))


def run(store, tz, fromdate, todate) -> UtcRecorder:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="BTC/USDT",
            timeframe="1m",
            fromdate=fromdate,
            todate=todate,
            historical=True,
            tz=tz,
        )
    )
    cerebro.addstrategy(UtcRecorder)
    return cerebro.run()[0]


def local(dt_utc, zone):
    """A naive UTC time as the naive wall time of ``zone``."""
    return dt_utc.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


@pytest.mark.parametrize(
    "tz, zone",
    [
        ("America/New_York", zoneinfo.ZoneInfo("America/New_York")),
        (zoneinfo.ZoneInfo("Asia/Tokyo"), zoneinfo.ZoneInfo("Asia/Tokyo")),
        (timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=5, minutes=30))),
    ],
    ids=["name", "zoneinfo", "fixed-offset"],
)
def test_a_run_in_tz_gives_the_bars_of_the_utc_run_of_the_same_window(ex, tz, zone):
    now = ex.now_ms()
    end_open = now - now % 60_000 - 60 * 60_000  # todate an hour back, fromdate 8 h back
    todate = EPOCH + timedelta(milliseconds=end_open + 60_000)
    fromdate = todate - timedelta(hours=7)
    store = CCXTStore("binance", config=ex.ccxt_config())

    utc_run = run(store, None, fromdate, todate)
    tz_run = run(store, tz, local(fromdate, zone), local(todate, zone))

    want = [
        (b[0], b[1], b[4], b[5])
        for b in truth(ex, "BTC/USDT", "1m", end_open - 420 * 60_000, end_open + 1)
    ]
    assert len(want) == 421  # fromdate and todate are close stamps, both included
    assert utc_run.utc == want
    assert tz_run.utc == want  # same bars, lines in UTC
    assert tz_run.shown == [local(b[0], zone) for b in want]  # shown in tz by backtrader


@pytest.mark.parametrize("tz", ["Mars/Olympus", 5, "not a zone"])
def test_a_bad_tz_fails_fast_naming_it(ex, tz):
    store = CCXTStore("binance", config=ex.ccxt_config())
    with pytest.raises(ConfigurationError, match="tz .*valid choices"):
        run(store, tz, None, None)


def test_tzinput_is_refused_the_candles_are_utc(ex):
    store = CCXTStore("binance", config=ex.ccxt_config())
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(dataname="BTC/USDT", timeframe="1m", historical=True, tzinput="Asia/Tokyo")
    )
    with pytest.raises(ConfigurationError, match="tzinput"):
        cerebro.run()
