"""The download command fills the cache with exactly the exchange's closed candles, resumes
after an interruption with only the missing tail, and refetches what a damaged file lost."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import warmpython
from helpers import eventually

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.__main__ import main
from backtrader_ccxt.cache import HistoryCache
from backtrader_ccxt.download import (
    DownloadProgress,
    download,
    missing_spans,
    parse_time,
)
from backtrader_ccxt.download_cli import ProgressLine
from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.localexchange import LocalExchange

M = 60_000
SYM, TF, KEY = "BTC/USDT", "1m", "binance"
KLINES = "/api/v3/klines"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ex():
    with LocalExchange(symbols=(SYM, "ETH/USDT"), timeframes=("1m",), history=3000) as ex:
        yield ex


@pytest.fixture
def store(ex):
    s = CCXTStore("binance", config=ex.ccxt_config())
    yield s
    s.stop()


def klines(ex) -> int:
    return ex.stats.snapshot()["rest_by_path"].get(KLINES, 0)


def since_for(ex, bars: int) -> int:
    now = ex.now_ms()
    return now - now % M - bars * M


def test_download_equals_the_exchange_history(ex, store, tmp_path):
    since = since_for(ex, 2200)
    seen: list[DownloadProgress] = []
    before = klines(ex)
    with HistoryCache(tmp_path) as cache:
        result = download(store, cache, SYM, TF, since, page_limit=1000, progress=seen.append)
        end = cache.covered_until(KEY, SYM, TF, since)
        assert end is not None and end >= since + 2200 * M
        got = cache.read(KEY, SYM, TF, since)
    assert got == ex.candles(SYM, TF, since, end)
    assert len(got) == (end - since) // M
    assert klines(ex) - before == result.pages == len(seen) == 3  # 1000 + 1000 + the rest
    assert result.rows == len(got)
    assert [p.page_since_ms for p in seen] == [since, since + 1000 * M, since + 2000 * M]
    assert seen[-1].fraction == pytest.approx(1.0, abs=0.01)


def test_an_interrupted_download_resumes_with_only_the_missing_tail(ex, store, tmp_path):
    since = since_for(ex, 2200)
    pages_seen = []

    def stop_after_two(p: DownloadProgress) -> None:
        pages_seen.append(p)
        if len(pages_seen) == 2:
            raise KeyboardInterrupt

    with HistoryCache(tmp_path) as cache:
        before = klines(ex)
        with pytest.raises(KeyboardInterrupt):
            download(store, cache, SYM, TF, since, page_limit=500, progress=stop_after_two)
        assert klines(ex) - before == 2
        assert cache.coverage(KEY, SYM, TF) == [(since, since + 1000 * M)]

        resumed: list[DownloadProgress] = []
        before = klines(ex)
        result = download(store, cache, SYM, TF, since, page_limit=500, progress=resumed.append)
        assert resumed[0].page_since_ms == since + 1000 * M  # starts where the cache ends
        assert klines(ex) - before == result.pages == 3  # 500 + 500 + the rest, no refetch
        end = cache.covered_until(KEY, SYM, TF, since)
        assert cache.read(KEY, SYM, TF, since) == ex.candles(SYM, TF, since, end)

        # all there: a third run asks only for candles that closed since
        before = klines(ex)
        download(store, cache, SYM, TF, since, page_limit=500)
        assert klines(ex) - before <= 1


def test_a_gap_in_the_middle_is_filled_without_refetching_either_side(ex, store, tmp_path):
    since = since_for(ex, 2000)
    truth = ex.candles(SYM, TF, since, since + 2000 * M)
    with HistoryCache(tmp_path) as cache:
        cache.write(KEY, SYM, TF, truth[:500], ex.now_ms())
        cache.write(KEY, SYM, TF, truth[800:1500], ex.now_ms())
        before = klines(ex)
        seen: list[DownloadProgress] = []
        download(
            store, cache, SYM, TF, since, since + 2000 * M, page_limit=1000, progress=seen.append
        )
        assert [p.page_since_ms for p in seen] == [since + 500 * M, since + 1500 * M]
        assert klines(ex) - before == 2
        assert cache.read(KEY, SYM, TF, since, since + 2000 * M) == truth
        assert cache.coverage(KEY, SYM, TF)[0] == (since, since + 2000 * M)


def test_a_corrupted_cache_file_is_detected_and_refetched(ex, store, tmp_path):
    since = since_for(ex, 1500)
    with HistoryCache(tmp_path) as cache:
        download(store, cache, SYM, TF, since, page_limit=1000)
        path = cache.file
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a partial file, as after a bad copy

    with HistoryCache(tmp_path) as cache:
        assert cache.read(KEY, SYM, TF, since) == []  # not trusted
        before = klines(ex)
        result = download(store, cache, SYM, TF, since, page_limit=1000)
        assert klines(ex) - before == result.pages >= 2  # everything fetched again
        end = cache.covered_until(KEY, SYM, TF, since)
        assert cache.read(KEY, SYM, TF, since) == ex.candles(SYM, TF, since, end)
    assert list(tmp_path.glob("*.corrupt-*"))


def test_bad_arguments_are_configuration_errors(store, tmp_path):
    with HistoryCache(tmp_path) as cache:
        with pytest.raises(ConfigurationError, match="exactly one"):
            download(store, cache, SYM, TF)
        with pytest.raises(ConfigurationError, match="not listed"):
            download(store, cache, "NOPE/USDT", TF, bars=10)
        with pytest.raises(ConfigurationError, match="not before"):
            download(store, cache, SYM, TF, 10**13)
        with pytest.raises(ConfigurationError, match="bars"):
            download(store, cache, SYM, TF, bars=0)


def test_missing_spans():
    assert missing_spans([], 0, 10) == [(0, 10)]
    assert missing_spans([(2, 4), (6, 8)], 0, 10) == [(0, 2), (4, 6), (8, 10)]
    assert missing_spans([(0, 12)], 0, 10) == []
    assert missing_spans([(-5, 3), (3, 5)], 0, 10) == [(5, 10)]


def test_parse_time():
    assert parse_time("1970-01-02") == 86_400_000
    assert parse_time("1970-01-01T00:01:00Z") == 60_000
    assert parse_time("1970-01-01T01:00:00+01:00") == 0
    assert parse_time("123456") == 123456
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday")


def test_progress_line_without_a_terminal_ends_with_the_final_state():
    out = io.StringIO()
    line = ProgressLine(out, every=3600)
    for i in range(1, 4):
        line(DownloadProgress(SYM, TF, 0, 3 * M, (i - 1) * M, i * M, i, i, 3 * M, i * M))
    line.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "100.0%" in lines[-1] and "33.3%" in lines[0]


# -- the command line ------------------------------------------------------------------------


def test_command_downloads_then_resumes_from_the_cache(tmp_path):
    args = ["download", "--local", "--timeframe", "1m", "--bars", "1200", "--cache", str(tmp_path)]
    assert main([*args, "--quiet"]) == 0
    with HistoryCache(tmp_path) as cache:
        first = cache.coverage("localexchange", SYM, TF)
        assert len(first) == 1 and first[0][1] - first[0][0] >= 1200 * M
        assert cache.coverage("binance", SYM, TF) == []  # never mixed with the real venue
    assert main([*args, "--quiet"]) == 0
    with HistoryCache(tmp_path) as cache:
        again = cache.coverage("localexchange", SYM, TF)
        assert again[0][0] == first[0][0] and again[0][1] >= first[0][1]
    bad = ["download", "--local", "--bars", "5", "--cache", str(tmp_path)]
    assert main([*bad, "--exchange", "kraken"]) == 2
    assert main([*bad, "--symbol", "BTC-USDT"]) == 2


def test_command_ctrl_c_keeps_pages_and_exits_130(tmp_path):
    """A real SIGINT in a subprocess mid-download; the next run completes from the cache."""
    cmd = [
        sys.executable,
        "-m",
        "backtrader_ccxt",
        "download",
        "--local",
        "--timeframe",
        "1s",
        "--bars",
        "200000",
        "--page-limit",
        "100",
        "--cache",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = warmpython.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # wait until some pages are committed, then interrupt
        def some_pages():
            with HistoryCache(tmp_path) as cache:
                cov = cache.coverage("localexchange", SYM, "1s")
                return cov and cov[0][1] - cov[0][0] >= 500 * 1000

        eventually(some_pages, timeout=60, interval=0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    with HistoryCache(tmp_path) as cache:
        (start, end), *_ = cache.coverage("localexchange", SYM, "1s")
        assert end - start < 200000 * 1000  # it did stop early


# -- --format csv|parquet: the downloaded range as a file ------------------------------------


def run_cli(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = (
        pre + "import sys\nfrom backtrader_ccxt.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return warmpython.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("fmt, stamp", [("csv", "close"), ("parquet", "close"), ("csv", "open")])
def test_command_exports_exactly_the_cached_range_and_still_fills_the_cache(tmp_path, fmt, stamp):
    pd = pytest.importorskip("pandas")
    from backtrader_ccxt.frames import frame_to_rows, read_frame

    out = tmp_path / f"out/btc.{fmt}"
    args = ["download", "--local", "--bars", "1200", "--cache", str(tmp_path), "--quiet"]
    proc = run_cli(*args, "--format", fmt, "--out", str(out), "--stamp", stamp)
    assert proc.returncode == 0, proc.stderr
    frame = read_frame(out)
    assert frame.index.name == f"{stamp}_time" and str(frame.index.tz) == "UTC"
    with HistoryCache(tmp_path) as cache:
        ((start, end),) = cache.coverage("localexchange", SYM, TF)
        rows = cache.read("localexchange", SYM, TF, start)
        again = cache.read_frame("localexchange", SYM, TF, start, stamp=stamp)
    assert len(rows) >= 1200 and frame_to_rows(frame, TF) == rows
    pd.testing.assert_frame_equal(frame, again, check_exact=True)
    first = frame.index[0].to_pydatetime().replace(tzinfo=None)
    assert to_ms(first) == rows[0][0] + (M if stamp == "close" else 0)
    assert f"wrote {len(rows)} candles ({stamp}-stamped) to {out}" in proc.stdout


def to_ms(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1)) / timedelta(milliseconds=1))


def test_command_without_pandas_fails_in_one_line_naming_the_extra(tmp_path):
    args = ["download", "--local", "--bars", "50", "--cache", str(tmp_path), "--quiet"]
    proc = run_cli(*args, "--format", "csv", pre="import sys\nsys.modules['pandas'] = None\n")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and 'pip install "backtrader-ccxt[pandas]"' in line
    assert not list(tmp_path.iterdir())  # failed before downloading anything

    no_engine = "import sys\nsys.modules['pyarrow'] = None\nsys.modules['fastparquet'] = None\n"
    proc = run_cli(*args, "--out", str(tmp_path / "x.parquet"), pre=no_engine)
    assert proc.returncode == 2
    assert 'pip install "backtrader-ccxt[parquet]"' in proc.stderr.splitlines()[-1]


def test_command_v_after_the_subcommand_shows_the_traceback(tmp_path):
    proc = run_cli("download", "--local", "--bars", "5", "--symbol", "BTC-USDT", "-v")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: ")
    proc = run_cli("download", "--local", "--bars", "5", "--out", str(tmp_path / "x.xlsx"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ".csv, .parquet, .pq" in proc.stderr


@pytest.mark.parametrize(
    "args, names",
    [
        (("--local", "--timeframe", "7m"), ("'7m'", "1m, 3m", "resample")),
        (("--local", "--symbol", "DOGE/USDT"), ("BTC/USDT, ETH/USDT", "without --local")),
        (("--exchange", "kraken", "--timeframe", "1s"), ("kraken", "1m, 5m")),  # no request
    ],
)
def test_command_rejects_what_the_venue_would_reject_before_any_request(tmp_path, args, names):
    """The local exchange derives any symbol and interval; the command line does not let it."""
    proc = run_cli("download", "--bars", "5", "--cache", str(tmp_path), *args)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    for name in names:
        assert name in line
    assert not list(tmp_path.iterdir())
