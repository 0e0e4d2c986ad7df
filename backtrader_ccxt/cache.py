"""HistoryCache: an opt-in on-disk cache of CLOSED candles, per exchange, symbol and timeframe.

A second backtest, or a restart, reads the history it already has and fetches only the
missing tail. The rules:

* **Closed candles only.** :meth:`HistoryCache.write` keeps a row only if its candle closed by
  ``now_ms`` (``close_of(open) <= now_ms``); a forming candle is never stored, so never served.
* **Coverage, not just rows.** Venues omit candles without trades, so a missing candle may be a
  real omission or simply not fetched yet. Every write records the open-time interval it
  covers; :meth:`HistoryCache.read` serves rows only from inside a covered interval, so a hole
  there is a real omission and the end of the interval is where fetching must resume.
* **Never trusted blindly.** Every row and every coverage interval carries a checksum (BLAKE2b
  over the series key and the values), and each interval the number of rows it holds. A row
  that fails its checksum cuts its interval there (the rest is refetched); an interval that
  fails its own check is dropped with its rows. A file SQLite cannot read (truncated, garbage)
  is moved aside as ``<name>.corrupt-<time>`` on the next write and rebuilt.
* **Several processes may share it.** SQLite in WAL mode: readers never block, writers are
  serialised by SQLite's lock (each write is one ``BEGIN IMMEDIATE`` transaction), a killed
  writer leaves no partial transaction. One machine only: WAL needs shared memory, so do not
  put the file on a network file system.

Storage: one SQLite file (stdlib ``sqlite3``, no extra dependency). See ``docs/cache.md`` for
the format choice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .bars import BadRow, bar_from_row
from .errors import ConfigurationError
from .timeframes import Timeframe
from .timeframes import parse as parse_tf

log = logging.getLogger(__name__)

__all__ = ["HistoryCache", "FeedCacheLink", "cache_key", "default_cache_dir", "DEFAULT_FILENAME"]

#: the file name used when the cache path is a directory
DEFAULT_FILENAME = "ohlcv-cache.sqlite3"
_FILE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_APPLICATION_ID = 0x62744378  # "btCx": marks the file as ours
_SCHEMA_VERSION = 1
_ROW = struct.Struct("<q5d")
_COVER = struct.Struct("<qqq")
_MAX_LEN_MS = {"M": 31 * 86_400_000, "y": 366 * 86_400_000}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        exchange TEXT NOT NULL,
        symbol TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        UNIQUE (exchange, symbol, timeframe))""",
    """CREATE TABLE IF NOT EXISTS candles (
        series INTEGER NOT NULL,
        open_ms INTEGER NOT NULL,
        o REAL NOT NULL, h REAL NOT NULL, l REAL NOT NULL, c REAL NOT NULL, v REAL NOT NULL,
        crc INTEGER NOT NULL,
        PRIMARY KEY (series, open_ms)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS coverage (
        series INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        n_rows INTEGER NOT NULL,
        crc INTEGER NOT NULL,
        PRIMARY KEY (series, start_ms)) WITHOUT ROWID""",
)


def default_cache_dir() -> Path:
    """The per-user cache directory: ``$XDG_CACHE_HOME/backtrader-ccxt`` (``~/.cache/...``),
    ``%LOCALAPPDATA%\\backtrader-ccxt`` on Windows."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "backtrader-ccxt"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "backtrader-ccxt"


class _Corrupt(Exception):
    """The file cannot be trusted as a whole."""


class _Key:
    """A series (exchange, symbol, timeframe) and the checksum prefix of its rows."""

    __slots__ = ("exchange", "symbol", "tf", "_hash")

    def __init__(self, exchange: str, symbol: str, timeframe: str) -> None:
        for name, value in (("exchange_id", exchange), ("symbol", symbol)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
        self.exchange = exchange
        self.symbol = symbol
        self.tf: Timeframe = parse_tf(timeframe)
        self._hash = hashlib.blake2b(digest_size=8)
        self._hash.update("\x1f".join((exchange, symbol, self.tf.ccxt)).encode())

    def row_crc(self, open_ms: int, o: float, h: float, l: float, c: float, v: float) -> int:  # noqa: E741
        h8 = self._hash.copy()
        h8.update(_ROW.pack(open_ms, o, h, l, c, v))
        return int.from_bytes(h8.digest(), "little", signed=True)

    def cover_crc(self, start_ms: int, end_ms: int, n_rows: int) -> int:
        h8 = self._hash.copy()
        h8.update(b"cover")
        h8.update(_COVER.pack(start_ms, end_ms, n_rows))
        return int.from_bytes(h8.digest(), "little", signed=True)

    def __str__(self) -> str:
        return f"{self.exchange} {self.symbol} {self.tf}"


def _clean_row(row: Sequence, tf) -> tuple[int, float, float, float, float, float]:
    """A row through the one row parser; raises :class:`~.bars.BadRow` (a ValueError)."""
    return tuple(bar_from_row(row, tf).row())  # type: ignore[return-value]


class HistoryCache:
    """An on-disk cache of closed OHLCV candles, shared safely by threads and processes.

    ``path`` is a directory (the file ``ohlcv-cache.sqlite3`` is used inside it) or a file path
    ending in ``.sqlite``, ``.sqlite3`` or ``.db``. Nothing is created until the first write.

    Rows are ccxt rows ``[open_ms, open, high, low, close, volume]`` (ints and floats).
    Times are ms since the epoch, UTC; ``until_ms`` bounds are exclusive open times.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigurationError(f"cache path must be a file or directory path, got {path!r}")
        self.path = Path(path).expanduser()
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._broken: tuple[int, int] | None = None  # identity of a file found unreadable

    def __repr__(self) -> str:
        return f"HistoryCache({str(self.path)!r})"

    def __enter__(self) -> HistoryCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def file(self) -> Path:
        """The SQLite file this cache uses."""
        p = self.path
        if p.suffix.lower() in _FILE_SUFFIXES and not p.is_dir():
            return p
        return p / DEFAULT_FILENAME

    # -- public API ------------------------------------------------------------------------

    def read(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
    ) -> list[list]:
        """Closed rows from ``since_ms`` (open time, inclusive) to the end of the covered
        interval that contains it, or to ``until_ms`` (exclusive) if that comes first.

        Holes inside the returned span are candles the venue omitted. Returns ``[]`` when
        ``since_ms`` is not covered, or when the cache is missing or cannot be trusted.
        """
        key = _Key(exchange_id, symbol, timeframe)
        with self._lock:
            return self._guard(lambda conn: self._read(conn, key, int(since_ms), until_ms), [])

    def read_frame(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        *,
        stamp: str = "close",
    ):
        """:meth:`read` as a pandas DataFrame: a UTC ``DatetimeIndex`` at each candle's close
        (``stamp="close"``, as the feeds stamp bars; index name ``close_time``) or open
        (``stamp="open"``, ccxt's convention; ``open_time``), float columns ``open, high,
        low, close, volume``. Needs pandas (``pip install "backtrader-ccxt[pandas]"``); see
        :mod:`backtrader_ccxt.frames`."""
        from .frames import rows_to_frame

        rows = self.read(exchange_id, symbol, timeframe, since_ms, until_ms)
        return rows_to_frame(rows, timeframe, stamp=stamp)

    def write(
        self,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        rows: Iterable[Sequence],
        now_ms: int,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> int:
        """Store the rows whose candle closed by ``now_ms`` (exchange time); returns how many.

        ``rows`` must be one contiguous fetch: every candle the venue has between the first
        and the last row is among them (holes are omissions), so that span becomes covered.
        ``since_ms`` / ``until_ms`` widen the covered span to what was asked for (e.g. the
        ``since`` of the request, and where the paginator's cursor stopped), so leading or
        trailing omissions, and empty windows, are known too. Coverage never reaches past
        candles that were still forming at ``now_ms``.
        """
        key = _Key(exchange_id, symbol, timeframe)
        tf = key.tf
        closed: dict[int, tuple] = {}
        for row in rows:
            clean = _clean_row(row, tf)
            if tf.close_of(clean[0]) <= now_ms:
                closed[clean[0]] = clean
        opens = sorted(closed)
        if opens:
            start = opens[0] if since_ms is None else min(int(since_ms), opens[0])
            end = tf.close_of(opens[-1])
        elif since_ms is not None:
            start = end = int(since_ms)
        else:
            return 0
        if until_ms is not None:
            # a bound we did not see a row at: every candle opening before it must be closed,
            # whatever the venue's candle grid, so stay a whole candle length behind now
            end = max(end, min(int(until_ms), int(now_ms) - _longest_ms(tf) + 1))
        if end <= start and not opens:
            return 0
        data = [closed[t] for t in opens]
        with self._lock:
            return self._guard(lambda conn: self._write(conn, key, data, start, end), 0, True)

    def last_open_ms(self, exchange_id: str, symbol: str, timeframe: str) -> int | None:
        """Open time of the newest cached candle of the series, or None."""
        key = _Key(exchange_id, symbol, timeframe)

        def run(conn):
            sid = self._series_id(conn, key, create=False)
            if sid is None:
                return None
            row = conn.execute(
                "SELECT MAX(c.open_ms) FROM candles c JOIN coverage v ON v.series = c.series "
                "AND c.open_ms >= v.start_ms AND c.open_ms < v.end_ms WHERE c.series = ?",
                (sid,),
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        with self._lock:
            return self._guard(run, None)

    def coverage(self, exchange_id: str, symbol: str, timeframe: str) -> list[tuple[int, int]]:
        """The covered open-time intervals ``[(start_ms, end_ms), ...]`` (end exclusive), in
        order. Intervals that fail their check are dropped (and so refetched)."""
        key = _Key(exchange_id, symbol, timeframe)

        def run(conn):
            sid = self._series_id(conn, key, create=False)
            if sid is None:
                return []
            out = []
            for start, end, n, crc in conn.execute(
                "SELECT start_ms, end_ms, n_rows, crc FROM coverage WHERE series = ? "
                "ORDER BY start_ms",
                (sid,),
            ).fetchall():
                if self._interval_ok(conn, key, sid, start, end, n, crc):
                    out.append((start, end))
                else:
                    self._drop_interval(conn, key, sid, start)
            return out

        with self._lock:
            return self._guard(run, [])

    def covered_until(
        self, exchange_id: str, symbol: str, timeframe: str, since_ms: int
    ) -> int | None:
        """End (exclusive open time) of the covered interval containing ``since_ms``, or
        None: where fetching must resume after :meth:`read` of the same ``since_ms``."""
        for start, end in self.coverage(exchange_id, symbol, timeframe):
            if start <= since_ms < end:
                return end
        return None

    def close(self) -> None:
        """Close the database connection (idempotent); the cache reopens on next use."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # -- connection and corruption ---------------------------------------------------------

    def _guard(self, fn, default, write: bool = False):
        """Run ``fn(conn)``; an unreadable file gives ``default`` (reads) or is replaced
        (writes)."""
        for attempt in (0, 1):
            try:
                conn = self._connect(create=write)
                if conn is None:
                    return default
                return fn(conn)
            except (_Corrupt, sqlite3.DatabaseError) as exc:
                if isinstance(exc, sqlite3.OperationalError) and _transient(exc):
                    raise
                self._rollback()
                log.warning("history cache %s cannot be trusted (%s)", self.file, exc)
                self._broken = self._identity
                self.close()
                if not write or attempt:
                    return default
                self._quarantine()

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        file = self.file
        if not file.exists():
            if not create:
                return None
            file.parent.mkdir(parents=True, exist_ok=True)
        elif self._broken is not None and not create and _identity(file) == self._broken:
            return None  # known unreadable: reads miss until a write rebuilds it
        conn = sqlite3.connect(
            str(file), timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._identity = _identity(file)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._check_header(conn, file)
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._broken = None
        return conn

    def _check_header(self, conn: sqlite3.Connection, file: Path) -> None:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app == _APPLICATION_ID:
            if version != _SCHEMA_VERSION:
                raise _Corrupt(f"schema version {version}, expected {_SCHEMA_VERSION}")
            return
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables <= {"series", "candles", "coverage"}:
            raise ConfigurationError(
                f"{file} is an SQLite database of another application; give HistoryCache a "
                "directory or a new file name"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ddl in _SCHEMA:
                conn.execute(ddl)
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _quarantine(self) -> None:
        """Move an unreadable file (and its WAL) aside, unless another process already did."""
        file = self.file
        current = _identity(file)
        if current is None:
            return
        if self._identity is not None and current != self._identity:
            return  # replaced since we opened it: someone else rebuilt it
        aside = file.with_name(f"{file.name}.corrupt-{int(time.time() * 1000)}")
        log.warning("moving the unreadable history cache %s aside to %s", file, aside.name)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(file) + suffix)
            try:
                os.replace(src, Path(str(aside) + suffix))
            except FileNotFoundError:
                pass
        self._identity = None

    # -- reading and writing ---------------------------------------------------------------

    def _series_id(self, conn: sqlite3.Connection, key: _Key, create: bool) -> int | None:
        args = (key.exchange, key.symbol, key.tf.ccxt)
        row = conn.execute(
            "SELECT id FROM series WHERE exchange = ? AND symbol = ? AND timeframe = ?", args
        ).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        return int(
            conn.execute(
                "INSERT INTO series (exchange, symbol, timeframe) VALUES (?, ?, ?)", args
            ).lastrowid
        )

    def _count(self, conn, sid: int, start: int, end: int) -> int:
        return conn.execute(
            "SELECT COUNT(*) FROM candles WHERE series = ? AND open_ms >= ? AND open_ms < ?",
            (sid, start, end),
        ).fetchone()[0]

    def _interval_ok(self, conn, key: _Key, sid, start, end, n, crc) -> bool:
        if crc != key.cover_crc(start, end, n) or end <= start:
            log.warning("history cache: coverage %s [%s, %s) fails its checksum", key, start, end)
            return False
        if self._count(conn, sid, start, end) != n:
            log.warning("history cache: coverage %s [%s, %s) lost rows", key, start, end)
            return False
        return True

    def _drop_interval(self, conn, key: _Key, sid: int, start: int) -> None:
        """Forget a covered interval and its rows (so they are refetched)."""
        self._repair(conn, key, sid, start, cut_at=None)

    def _repair(self, conn, key: _Key, sid: int, start: int, cut_at: int | None) -> None:
        """In its own write transaction: cut the interval starting at ``start`` at ``cut_at``
        (or drop it), deleting its rows from there on."""
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT end_ms FROM coverage WHERE series = ? AND start_ms = ?", (sid, start)
        ).fetchone()
        if row is not None:
            end = int(row[0])
            lo = start if cut_at is None else cut_at
            conn.execute(
                "DELETE FROM candles WHERE series = ? AND open_ms >= ? AND open_ms < ?",
                (sid, lo, end),
            )
            conn.execute("DELETE FROM coverage WHERE series = ? AND start_ms = ?", (sid, start))
            if cut_at is not None and cut_at > start:
                self._insert_interval(conn, key, sid, start, cut_at)
        conn.execute("COMMIT")

    def _insert_interval(self, conn, key: _Key, sid: int, start: int, end: int) -> None:
        n = self._count(conn, sid, start, end)
        conn.execute(
            "INSERT OR REPLACE INTO coverage (series, start_ms, end_ms, n_rows, crc) "
            "VALUES (?, ?, ?, ?, ?)",
            (sid, start, end, n, key.cover_crc(start, end, n)),
        )

    def _read(self, conn, key: _Key, since: int, until_ms: int | None) -> list[list]:
        conn.execute("BEGIN")  # one snapshot for coverage and rows
        sid = self._series_id(conn, key, create=False)
        if sid is None:
            conn.execute("COMMIT")
            return []
        cover = conn.execute(
            "SELECT start_ms, end_ms, n_rows, crc FROM coverage WHERE series = ? AND "
            "start_ms <= ? ORDER BY start_ms DESC LIMIT 1",
            (sid, since),
        ).fetchone()
        if cover is None or cover[1] <= since:
            conn.execute("COMMIT")
            return []
        start, end, n, crc = cover
        if not self._interval_ok(conn, key, sid, start, end, n, crc):
            self._drop_interval(conn, key, sid, start)
            return []
        hi = end if until_ms is None else min(end, int(until_ms))
        rows = conn.execute(
            "SELECT open_ms, o, h, l, c, v, crc FROM candles WHERE series = ? AND "
            "open_ms >= ? AND open_ms < ? ORDER BY open_ms",
            (sid, since, hi),
        ).fetchall()
        out: list[list] = []
        for t, o, h, l, c, v, rcrc in rows:  # noqa: E741
            if rcrc != key.row_crc(t, o, h, l, c, v):
                log.warning("history cache: %s row at %s fails its checksum", key, t)
                self._repair(conn, key, sid, start, cut_at=t)
                return out
            try:
                # rows written by older versions may hold a missing price as 0.0
                bar_from_row((t, o, h, l, c, v), key.tf)
            except BadRow as exc:
                log.warning("history cache: %s row at %s dropped, refetched: %s", key, t, exc)
                self._repair(conn, key, sid, start, cut_at=t)
                return out
            out.append([t, o, h, l, c, v])
        conn.execute("COMMIT")
        return out

    def _write(self, conn, key: _Key, data: list[tuple], start: int, end: int) -> int:
        """One transaction: the rows replace whatever was cached in ``[start, end)`` (they
        are a complete fetch of it), and the coverage merges with its neighbours."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            sid = self._series_id(conn, key, create=True)
            lo, hi, n = start, end, len(data)
            for s, e, n_old, crc in conn.execute(
                "SELECT start_ms, end_ms, n_rows, crc FROM coverage WHERE series = ? AND "
                "start_ms <= ? AND end_ms >= ?",
                (sid, end, start),
            ).fetchall():
                conn.execute("DELETE FROM coverage WHERE series = ? AND start_ms = ?", (sid, s))
                if crc != key.cover_crc(s, e, n_old) or e <= s:
                    # a neighbour that fails its check is forgotten, rows and all
                    log.warning("history cache: coverage %s [%s, %s) fails its checksum", key, s, e)
                    conn.execute(
                        "DELETE FROM candles WHERE series = ? AND open_ms >= ? AND open_ms < ?",
                        (sid, s, e),
                    )
                    continue
                # its rows inside [start, end) are about to be replaced
                n += n_old - self._count(conn, sid, max(s, start), min(e, end))
                lo, hi = min(lo, s), max(hi, e)
            conn.execute(
                "DELETE FROM candles WHERE series = ? AND open_ms >= ? AND open_ms < ?",
                (sid, start, end),
            )
            conn.executemany(
                "INSERT INTO candles (series, open_ms, o, h, l, c, v, crc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(sid, *r, key.row_crc(*r)) for r in data],
            )
            conn.execute(
                "INSERT INTO coverage (series, start_ms, end_ms, n_rows, crc) "
                "VALUES (?, ?, ?, ?, ?)",
                (sid, lo, hi, n, key.cover_crc(lo, hi, n)),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(data)


def _identity(file: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _longest_ms(tf: Timeframe) -> int:
    """The longest a candle of ``tf`` can be (calendar months and years vary)."""
    if tf.is_calendar:
        return tf.amount * _MAX_LEN_MS[tf.unit]
    return tf.ms


def _transient(exc: sqlite3.OperationalError) -> bool:
    """Locked / busy / I/O trouble is not corruption: raise it, never move the file."""
    text = str(exc).lower()
    return any(
        w in text for w in ("locked", "busy", "unable to open", "readonly", "disk i/o", "full")
    )


def cache_key(store) -> str:
    """The cache's exchange key for a store: its exchange id, marked when on a testnet so
    testnet candles never mix with real ones."""
    return store.exchange_id + ("-sandbox" if store.sandbox else "")


class FeedCacheLink:
    """What one feed reads from and writes to a :class:`HistoryCache`.

    ``cached(since_ms, until_ms)`` returns the cached closed rows from ``since_ms`` and where
    fetching must resume; ``add(row)`` buffers a delivered candle, ``flush(now_ms)`` writes the
    buffer with its coverage (everything from the resume point to the last delivered candle:
    the feed delivers every candle the venue has, so holes are real omissions).
    """

    def __init__(
        self, cache: HistoryCache, key: str, symbol: str, timeframe: str, flush_every: int = 500
    ) -> None:
        self.cache = cache
        self.key, self.symbol, self.timeframe = key, symbol, timeframe
        self.tf = parse_tf(timeframe)
        self.flush_every = flush_every
        self._rows: list[list] = []
        self._since: int | None = None

    def cached(self, since_ms: int, until_ms: int | None) -> tuple[list[list], int]:
        rows = self.cache.read(self.key, self.symbol, self.timeframe, since_ms, until_ms)
        end = self.cache.covered_until(self.key, self.symbol, self.timeframe, since_ms)
        if not rows or end is None:
            self._since = since_ms
            return [], since_ms
        resume = max(end, self.tf.close_of(int(rows[-1][0])))
        self._since = resume
        return rows, resume

    def add(self, row: list, now_ms: int) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.flush_every:
            self.flush(now_ms)

    def flush(self, now_ms: int) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        until = self.tf.close_of(int(rows[-1][0]))
        self.cache.write(
            self.key,
            self.symbol,
            self.timeframe,
            rows,
            now_ms,
            since_ms=self._since,
            until_ms=until,
        )
        self._since = until
