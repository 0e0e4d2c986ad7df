"""HistoryCache: closed candles only, coverage with legitimate holes, corruption never trusted,
several processes at once."""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import warmpython

from backtrader_ccxt.cache import DEFAULT_FILENAME, HistoryCache
from backtrader_ccxt.errors import ConfigurationError

M = 60_000
EX, SYM, TF = "binance", "BTC/USDT", "1m"
ROOT = Path(__file__).resolve().parents[1]


def rows(first: int, n: int, skip: tuple[int, ...] = ()) -> list[list]:
    """``n`` one-minute candles from index ``first``, leaving out the indices in ``skip``."""
    return [
        [i * M, 100.0 + i, 101.5 + i, 99.25 + i, 100.5078125 + i, 0.125 * i + 1]
        for i in range(first, first + n)
        if i not in skip
    ]


@pytest.fixture
def cache(tmp_path):
    with HistoryCache(tmp_path) as c:
        yield c


def test_round_trip_is_exact_and_nothing_is_created_before_a_write(tmp_path):
    c = HistoryCache(tmp_path / "sub")
    assert c.read(EX, SYM, TF, 0) == []
    assert c.last_open_ms(EX, SYM, TF) is None
    assert not (tmp_path / "sub").exists()
    data = rows(0, 50)
    assert c.write(EX, SYM, TF, data, now_ms=50 * M) == 50
    assert c.file == tmp_path / "sub" / DEFAULT_FILENAME
    assert c.read(EX, SYM, TF, 0) == data
    assert all(isinstance(r[0], int) for r in c.read(EX, SYM, TF, 0))
    assert c.read(EX, SYM, TF, 10 * M, until_ms=20 * M) == data[10:20]
    assert c.last_open_ms(EX, SYM, TF) == 49 * M
    assert c.coverage(EX, SYM, TF) == [(0, 50 * M)]
    c.close()
    # a file path works too, and the series are separate
    with HistoryCache(tmp_path / "one.sqlite3") as f:
        f.write(EX, SYM, TF, data[:5], now_ms=10**12)
        f.write(EX, "ETH/USDT", TF, data[5:], now_ms=10**12)
        f.write("bybit", SYM, TF, data[:3], now_ms=10**12)
        assert f.file == tmp_path / "one.sqlite3"
        assert f.read(EX, SYM, TF, 0) == data[:5]
        assert f.read(EX, "ETH/USDT", TF, 5 * M) == data[5:]
        assert f.read("bybit", SYM, TF, 0) == data[:3]
        assert f.read(EX, SYM, "5m", 0) == []


def test_forming_candle_is_never_stored_nor_covered(cache):
    data = rows(0, 10)
    now = 9 * M + 30_000  # candle 9 is forming
    assert cache.write(EX, SYM, TF, data, now_ms=now) == 9
    assert cache.read(EX, SYM, TF, 0) == data[:9]
    assert cache.coverage(EX, SYM, TF) == [(0, 9 * M)]
    # an explicit bound past now is clipped too: the forming candle stays uncovered
    cache.write(EX, SYM, TF, [], now_ms=now, since_ms=9 * M, until_ms=20 * M)
    assert cache.coverage(EX, SYM, TF) == [(0, 9 * M)]
    assert cache.read(EX, SYM, TF, 9 * M) == []


def test_holes_inside_coverage_are_omissions_and_reads_stop_at_uncovered_ranges(cache):
    cache.write(EX, SYM, TF, rows(0, 20, skip=(5, 6)), now_ms=10**12)  # venue omitted 5 and 6
    cache.write(EX, SYM, TF, rows(30, 10), now_ms=10**12)  # 20..29 not fetched
    got = cache.read(EX, SYM, TF, 0)
    assert got == rows(0, 20, skip=(5, 6))  # across the omission, up to the unfetched gap
    assert cache.read(EX, SYM, TF, 20 * M) == []  # not covered: unknown, not empty
    assert cache.read(EX, SYM, TF, 32 * M) == rows(32, 8)
    assert cache.coverage(EX, SYM, TF) == [(0, 20 * M), (30 * M, 40 * M)]
    # filling the gap joins the intervals
    cache.write(EX, SYM, TF, rows(20, 10), now_ms=10**12)
    assert cache.coverage(EX, SYM, TF) == [(0, 40 * M)]
    assert cache.read(EX, SYM, TF, 0) == rows(0, 40, skip=(5, 6))


def test_since_and_until_widen_coverage_to_what_was_asked(cache):
    # asked from candle 0 to 10, the venue had only 3..7: 0-2 and 8-9 are known to be empty
    cache.write(EX, SYM, TF, rows(3, 5), now_ms=10**12, since_ms=0, until_ms=10 * M)
    assert cache.coverage(EX, SYM, TF) == [(0, 10 * M)]
    assert cache.read(EX, SYM, TF, 0) == rows(3, 5)
    # an empty window is coverage too
    cache.write(EX, SYM, TF, [], now_ms=10**12, since_ms=10 * M, until_ms=15 * M)
    assert cache.covered_until(EX, SYM, TF, 0) == 15 * M


def test_a_rewrite_replaces_the_span_it_covers(cache):
    cache.write(EX, SYM, TF, rows(0, 10), now_ms=10**12)
    newer = [[r[0], r[1], r[2] + 1, r[3], r[4] + 1, r[5]] for r in rows(3, 4)]
    cache.write(EX, SYM, TF, newer, now_ms=10**12)
    assert cache.read(EX, SYM, TF, 0) == rows(0, 3) + newer + rows(7, 3)


def test_bad_input_is_refused(cache, tmp_path):
    with pytest.raises(ValueError, match="not a candle"):
        cache.write(EX, SYM, TF, [[0, 1.0, "x", 1.0, 1.0, 1.0]], now_ms=10**12)
    with pytest.raises(ValueError, match="not a candle"):
        cache.write(EX, SYM, TF, [[0, 1.0, float("nan"), 1.0, 1.0, 1.0]], now_ms=10**12)
    with pytest.raises(ValueError, match="not a candle"):  # a missing price is not 0.0
        cache.write(EX, SYM, TF, [[0, None, 1.0, 1.0, 1.0, 1.0]], now_ms=10**12)
    with pytest.raises(ConfigurationError, match="timeframe"):
        cache.read(EX, SYM, "1 minute", 0)
    with pytest.raises(ConfigurationError, match="symbol"):
        cache.read(EX, "", TF, 0)
    with pytest.raises(ConfigurationError):
        HistoryCache(None)  # type: ignore[arg-type]


def test_someone_elses_database_is_refused_not_moved(tmp_path):
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    c = HistoryCache(other)
    with pytest.raises(ConfigurationError, match="another application"):
        c.write(EX, SYM, TF, rows(0, 3), now_ms=10**12)
    c.close()
    assert other.exists() and not list(tmp_path.glob("*.corrupt-*"))


# -- corruption ------------------------------------------------------------------------------


def _filled(tmp_path, n=3000) -> tuple[Path, list[list]]:
    data = rows(0, n)
    with HistoryCache(tmp_path) as c:
        for k in range(0, n, 500):
            c.write(EX, SYM, TF, data[k : k + 500], now_ms=10**12)
        path = c.file
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    return path, data


def test_a_flipped_value_cuts_coverage_there_and_the_tail_is_refetched(tmp_path):
    path, data = _filled(tmp_path)
    blob = bytearray(path.read_bytes())
    needle = struct.pack(">d", data[1234][4])  # SQLite stores REALs big-endian
    assert blob.count(needle) == 1
    blob[blob.index(needle) + 7] ^= 0x01
    path.write_bytes(bytes(blob))
    with HistoryCache(tmp_path) as c:
        got = c.read(EX, SYM, TF, 0)
        assert got == data[:1234]  # everything before the bad row, nothing after
        assert c.coverage(EX, SYM, TF) == [(0, 1234 * M)]
        assert c.read(EX, SYM, TF, 1234 * M) == []
        c.write(EX, SYM, TF, data[1234:], now_ms=10**12)  # the refetch
        assert c.read(EX, SYM, TF, 0) == data


def test_a_row_an_older_version_stored_with_a_zero_price_is_dropped_and_refetched(tmp_path):
    """Older versions turned a missing price into 0.0 and cached it, checksum and all: the
    row parser refuses it on the way out, like a row that fails its checksum."""
    from backtrader_ccxt.cache import _Key

    data = rows(0, 10)
    bad = [*data[:6], [6 * M, 106.0, 0.0, 105.25, 106.5078125, 1.75], *data[7:]]
    with HistoryCache(tmp_path) as c:
        key = _Key(EX, SYM, TF)
        # what the old write path did: no candle check before storing
        c._guard(lambda conn: c._write(conn, key, [tuple(r) for r in bad], 0, 10 * M), 0, True)
        assert c.read(EX, SYM, TF, 0) == data[:6]
        assert c.coverage(EX, SYM, TF) == [(0, 6 * M)]
        c.write(EX, SYM, TF, data[6:], now_ms=10**12)  # the refetch
        assert c.read(EX, SYM, TF, 0) == data


def test_a_lost_row_is_detected_by_the_interval_count(tmp_path):
    path, data = _filled(tmp_path, 100)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM candles WHERE open_ms = ?", (40 * M,))
    conn.close()
    with HistoryCache(tmp_path) as c:
        assert c.read(EX, SYM, TF, 0) == []  # a hole that is not an omission: not trusted
        assert c.coverage(EX, SYM, TF) == []


def test_a_tampered_coverage_interval_is_dropped(tmp_path):
    path, data = _filled(tmp_path, 100)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE coverage SET end_ms = end_ms + ?", (50 * M,))
    conn.close()
    with HistoryCache(tmp_path) as c:
        assert c.read(EX, SYM, TF, 0) == []
        assert c.coverage(EX, SYM, TF) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "zero_pages"])
def test_an_unreadable_file_reads_as_empty_and_is_moved_aside_on_write(tmp_path, damage):
    path, data = _filled(tmp_path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage_header":
        path.write_bytes(b"\x00garbage" * 20 + blob[160:])
    else:
        path.write_bytes(blob[:4096] + b"\x00" * (len(blob) - 8192) + blob[-4096:])
    c = HistoryCache(tmp_path)
    try:
        got = c.read(EX, SYM, TF, 0)
        assert got == data[: len(got)]  # never wrong data: at most a valid prefix
        assert len(got) < len(data)
        c.write(EX, SYM, TF, data, now_ms=10**12)
        assert c.read(EX, SYM, TF, 0) == data
    finally:
        c.close()
    assert len(list(tmp_path.glob(f"{DEFAULT_FILENAME}.corrupt-*"))) == 1  # kept for a post-mortem


# -- concurrency -----------------------------------------------------------------------------

_WRITER = """
import sys
from backtrader_ccxt.cache import HistoryCache
M = 60_000
path, first, step, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with HistoryCache(path) as c:
    for k in range(first, n, step):
        rows = [[i * M, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, float(i)] for i in range(k, k + 50)]
        c.write("binance", "BTC/USDT", "1m", rows, now_ms=10**12)
        c.read("binance", "BTC/USDT", "1m", 0)
"""


def test_two_processes_write_the_same_cache_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    n = 6000
    procs = [
        warmpython.Popen(
            [
                sys.executable,
                "-W",
                "error",
                "-c",
                _WRITER,
                str(tmp_path),
                str(first),
                "100",
                str(n),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 50)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with HistoryCache(tmp_path) as c:
        got = c.read(EX, SYM, TF, 0)
        assert [r[0] for r in got] == [i * M for i in range(n)]
        assert got[77] == [77 * M, 78.0, 79.0, 77.5, 78.5, 77.0]
        assert c.coverage(EX, SYM, TF) == [(0, n * M)]


def test_threads_share_one_cache(cache):
    errors: list[BaseException] = []

    def work(first: int) -> None:
        try:
            for k in range(first, 2000, 200):
                cache.write(EX, SYM, TF, rows(k, 100), now_ms=10**12)
                cache.read(EX, SYM, TF, 0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f,)) for f in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert cache.read(EX, SYM, TF, 0) == rows(0, 2000)
