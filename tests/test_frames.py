"""History as pandas frames: the frame is the cache's rows, files round-trip exactly, and a
PandasData backtest records exactly the bars of the historical CCXTFeed on the same range."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import backtrader as bt
import pytest
import warmpython
from feedtools import Recorder, run, run_historical, truth

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.cache import HistoryCache
from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.frames import (
    COLUMNS,
    MissingDependencyError,
    export_frame,
    frame_to_rows,
    history_frame,
    pandas_feed,
    read_frame,
    rows_to_frame,
    to_pandas_data,
)
from backtrader_ccxt.localexchange import LocalExchange

pd = pytest.importorskip("pandas")

M = 60_000
SYM, TF = "BTC/USDT", "1m"
ROOT = Path(__file__).resolve().parents[1]
EPOCH = datetime(1970, 1, 1)


def ms(dt: datetime) -> int:
    return int((dt - EPOCH) / timedelta(milliseconds=1))


@pytest.fixture(scope="module")
def ex():
    with LocalExchange(symbols=(SYM,), timeframes=(TF,), history=3000, empty_every=97) as ex:
        ex.faults.omit_empty = True  # candles without trades are left out, as venues do
        yield ex


@pytest.fixture
def store(ex):
    s = CCXTStore("binance", config=ex.ccxt_config())
    yield s
    s.stop()


def last_close(ex) -> datetime:
    now = ex.now_ms()
    return EPOCH + timedelta(milliseconds=now - now % M)


def odd_rows() -> list[list]:
    """Candles whose values a careless float format would not round-trip; candle 3 omitted."""
    return [
        [t * M, 0.1 + 0.2 + t, 123456.789012345 + t, 1e-8 * (t + 1), 1 / 3 + t, 2.0 / 7 * t]
        for t in range(10)
        if t != 3
    ]


# -- the frame is the cache's rows -----------------------------------------------------------


def test_read_frame_equals_the_cache_rows_close_stamped_by_default(tmp_path):
    rows = odd_rows()
    with HistoryCache(tmp_path) as cache:
        cache.write("binance", SYM, TF, rows, now_ms=10 * M)
        cached = cache.read("binance", SYM, TF, 0)
        frame = cache.read_frame("binance", SYM, TF, 0)
        opened = cache.read_frame("binance", SYM, TF, 0, stamp="open")
    assert cached == rows
    assert list(frame.columns) == list(COLUMNS)
    assert str(frame.index.tz) == "UTC" and frame.index.name == "close_time"
    assert [ms(t.to_pydatetime().replace(tzinfo=None)) for t in frame.index] == [
        r[0] + M for r in rows
    ]  # each candle at its close, as the feed stamps it
    assert [ms(t.to_pydatetime().replace(tzinfo=None)) for t in opened.index] == [
        r[0] for r in rows
    ]
    assert opened.index.name == "open_time"
    assert frame.to_numpy().tolist() == [r[1:] for r in rows]
    assert frame_to_rows(frame, TF) == rows == frame_to_rows(opened, TF)


def test_calendar_months_close_at_the_next_month():
    jan, feb, mar = (ms(datetime(2024, m, 1)) for m in (1, 2, 3))
    frame = rows_to_frame([[jan, 1, 2, 0.5, 1.5, 10], [feb, 1.5, 3, 1, 2, 20]], "1M")
    assert [t.to_pydatetime() for t in frame.index] == [
        datetime(2024, 2, 1, tzinfo=timezone.utc),
        datetime(2024, 3, 1, tzinfo=timezone.utc),
    ]
    assert frame_to_rows(frame, "1M")[1][0] == feb and mar > feb


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("stamp", ["close", "open"])
def test_files_round_trip_exactly(tmp_path, suffix, stamp):
    frame = rows_to_frame(odd_rows(), TF, stamp=stamp)
    path = export_frame(frame, tmp_path / f"sub/history{suffix}")
    back = read_frame(path)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert frame_to_rows(back, TF) == odd_rows()
    assert not list(path.parent.glob(".*partial"))


def test_sub_second_stamps_round_trip_through_csv(tmp_path):
    frame = rows_to_frame([[r[0] + 250, *r[1:]] for r in odd_rows()], "1s", stamp="open")
    back = read_frame(export_frame(frame, tmp_path / "ms.csv"))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


def test_an_empty_frame_round_trips(tmp_path):
    frame = rows_to_frame([], TF)
    back = read_frame(export_frame(frame, tmp_path / "empty.csv"))
    assert len(back) == 0 and list(back.columns) == list(COLUMNS)


def test_bad_arguments_are_configuration_errors(tmp_path):
    frame = rows_to_frame(odd_rows(), TF)
    with pytest.raises(ConfigurationError, match="stamp must be one of close, open"):
        rows_to_frame(odd_rows(), TF, stamp="middle")
    with pytest.raises(ConfigurationError, match=r"\.csv, \.parquet, \.pq"):
        export_frame(frame, tmp_path / "x.xlsx")
    with pytest.raises(ConfigurationError, match="names a csv file but the format is parquet"):
        export_frame(frame, tmp_path / "x.csv", "parquet")
    with pytest.raises(ConfigurationError, match="close_time"):
        frame_to_rows(frame.rename_axis("when"), TF)


# -- the PandasData bridge gives the live feed's history -------------------------------------


def pandas_backtest(feed) -> Recorder:
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.adddata(feed)
    return run(cerebro, live_bars=None)


def test_pandas_feed_backtest_records_the_historical_feeds_bars(ex, store, tmp_path):
    end = last_close(ex)
    start = end - timedelta(minutes=1500)  # two pages, an omitted candle every 97
    via_feed = run_historical(store, SYM, TF, start, end).bars[SYM]
    via_pandas = pandas_backtest(pandas_feed(store, SYM, TF, start, end)).bars[SYM]
    expected = truth(ex, SYM, TF, ms(start) - M, ms(end) - M + 1)
    assert len(expected) < 1501  # the omissions are there
    assert via_pandas == via_feed == expected

    # through one cache: the frame fills it, the feed then reads it, same bars again
    with HistoryCache(tmp_path) as cache:
        via_pandas = pandas_backtest(pandas_feed(store, SYM, TF, start, end, cache=cache))
        frame = cache.read_frame("binance", SYM, TF, ms(start) - M, ms(end) - M + 1)
        via_feed = run_historical(store, SYM, TF, start, end, cache=cache)
    assert via_pandas.bars[SYM] == via_feed.bars[SYM] == expected
    assert len(frame) == len(expected)


def test_history_frame_by_bars_and_an_open_stamped_frame_feed_the_same_bars(ex, store):
    frame = history_frame(store, SYM, TF, bars=50)
    assert 48 <= len(frame) <= 50  # 50 candles, less the omitted ones
    opened = history_frame(
        store,
        SYM,
        TF,
        frame.index[0].to_pydatetime(),
        frame.index[-1].to_pydatetime(),
        stamp="open",
    )
    assert frame_to_rows(opened, TF) == frame_to_rows(frame, TF)
    feed = to_pandas_data(frame, TF, name=SYM)
    assert isinstance(feed, bt.feeds.PandasData)
    a = pandas_backtest(feed).bars[SYM]
    b = pandas_backtest(to_pandas_data(opened, TF, name=SYM)).bars[SYM]
    assert a == b and len(a) == len(frame)
    assert a[0][0] == frame.index[0].to_pydatetime().replace(tzinfo=None)
    # backtrader's own PandasData over the same frame: the faster _load changes nothing
    stock = bt.feeds.PandasData(dataname=frame, name=SYM, timeframe=bt.TimeFrame.Minutes)
    assert pandas_backtest(stock).bars[SYM] == a


# -- a missing optional dependency -----------------------------------------------------------


def without(*modules: str) -> str:
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def run_python(code: str) -> subprocess.CompletedProcess:
    return warmpython.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_without_pandas_the_error_names_the_extra():
    code = without("pandas") + (
        "from backtrader_ccxt.frames import rows_to_frame, MissingDependencyError\n"
        "try:\n"
        "    rows_to_frame([], '1m')\n"
        "except MissingDependencyError as e:\n"
        "    assert isinstance(e, ImportError) and e.extra == 'pandas'\n"
        "    print(e)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "backtrader-ccxt[pandas]"' in proc.stdout


def test_without_a_parquet_engine_the_error_names_the_extra(tmp_path):
    code = without("pyarrow", "fastparquet") + (
        "from backtrader_ccxt.frames import rows_to_frame, export_frame\n"
        f"export_frame(rows_to_frame([], '1m'), {str(tmp_path / 'x.parquet')!r})\n"
    )
    proc = run_python(code)
    assert proc.returncode == 1
    assert "MissingDependencyError" in proc.stderr
    assert 'pip install "backtrader-ccxt[parquet]"' in proc.stderr
    assert not (tmp_path / "x.parquet").exists()
    assert issubclass(MissingDependencyError, ConfigurationError)
