"""History as pandas DataFrames: conversion, CSV/Parquet files, and the ``PandasData`` bridge.

One frame layout everywhere: a UTC tz-aware ``DatetimeIndex`` (millisecond unit, as ccxt's
times) and float columns ``open, high, low, close, volume``. The index is each candle's
**close** time by default, as the feeds stamp bars, and is named ``close_time``; with
``stamp="open"`` it is the open time (ccxt's own convention) and named ``open_time``. The
name travels into CSV and Parquet files, so a file says which convention it holds.

pandas (and pyarrow or fastparquet for Parquet) is an optional extra: a live bot does not
need it, and it is a large install. Without it these functions raise
:class:`MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import backtrader as bt

from .errors import ConfigurationError
from .timeframes import Timeframe, to_backtrader
from .timeframes import parse as parse_tf

if TYPE_CHECKING:  # pragma: no cover - for type hints only
    import pandas as pd

    from .cache import HistoryCache
    from .store import CCXTStore

__all__ = [
    "COLUMNS",
    "FORMATS",
    "FrameData",
    "STAMPS",
    "MissingDependencyError",
    "export_frame",
    "export_target",
    "frame_to_rows",
    "history_frame",
    "pandas_feed",
    "read_frame",
    "rows_to_frame",
    "to_pandas_data",
]

#: the frame's columns, in order
COLUMNS = ("open", "high", "low", "close", "volume")
#: what the index can hold: the candle's close time (as the feeds stamp bars) or open time
STAMPS = ("close", "open")
#: file formats of :func:`export_frame` / :func:`read_frame`, by file suffix
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_INDEX_NAMES = {"close": "close_time", "open": "open_time"}
_EPOCH = datetime(1970, 1, 1)


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Also an ``ImportError``, so ``except ImportError`` around an optional feature works.
    """

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def _pandas(purpose: str):
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs pandas, which is not installed: "
            'pip install "backtrader-ccxt[pandas]"',
            "pandas",
        ) from None
    return pd


def _parquet_engine() -> str:
    for engine in ("pyarrow", "fastparquet"):
        try:
            __import__(engine)
        except ImportError:
            continue
        return engine
    raise MissingDependencyError(
        "Parquet files need pyarrow (or fastparquet), which is not installed: "
        'pip install "backtrader-ccxt[parquet]"',
        "parquet",
    )


def _check_stamp(stamp: str) -> str:
    if stamp not in STAMPS:
        raise ConfigurationError(f"stamp must be one of {', '.join(STAMPS)}, got {stamp!r}")
    return stamp


def _tf(timeframe: str | Timeframe) -> Timeframe:
    return timeframe if isinstance(timeframe, Timeframe) else parse_tf(timeframe)


# -- conversion (pure) -----------------------------------------------------------------------


def rows_to_frame(
    rows: Iterable[Sequence], timeframe: str | Timeframe, *, stamp: str = "close"
) -> pd.DataFrame:
    """ccxt rows ``[open_ms, o, h, l, c, v]`` (as :meth:`HistoryCache.read` returns them) as
    a DataFrame: UTC index at each candle's close (``stamp="close"``, the default, as the
    feeds stamp bars) or open (``stamp="open"``), float columns ``open .. volume``."""
    pd = _pandas("a DataFrame")
    tf = _tf(timeframe)
    _check_stamp(stamp)
    rows = list(rows)
    opens = [int(r[0]) for r in rows]
    times = [tf.close_of(t) for t in opens] if stamp == "close" else opens
    index = pd.DatetimeIndex(
        pd.to_datetime(times, unit="ms", utc=True), name=_INDEX_NAMES[stamp]
    ).as_unit("ms")
    values = {
        col: [float(r[i + 1]) if len(r) > i + 1 and r[i + 1] is not None else 0.0 for r in rows]
        for i, col in enumerate(COLUMNS)
    }
    return pd.DataFrame(values, index=index, columns=list(COLUMNS), dtype="float64")


def _stamp_of(frame: pd.DataFrame) -> str:
    name = frame.index.name
    for stamp, index_name in _INDEX_NAMES.items():
        if name == index_name:
            return stamp
    raise ConfigurationError(
        f"the frame's index is named {name!r}; expected {_INDEX_NAMES['close']!r} (close "
        f"stamps) or {_INDEX_NAMES['open']!r} (open stamps), as rows_to_frame makes it"
    )


def frame_to_rows(frame: pd.DataFrame, timeframe: str | Timeframe) -> list[list]:
    """The ccxt rows ``[open_ms, o, h, l, c, v]`` of a frame made by :func:`rows_to_frame`
    (either stamp; the index name says which)."""
    pd = _pandas("a DataFrame")
    tf = _tf(timeframe)
    stamp = _stamp_of(frame)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"the frame lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ConfigurationError("the frame's index must be a tz-aware DatetimeIndex (UTC)")
    times = index.as_unit("ms").asi8.tolist()  # epoch ms, whatever the frame's unit
    opens = [tf.open_of(t) for t in times] if stamp == "close" else times
    cols = [frame[c].astype("float64").tolist() for c in COLUMNS]
    return [[t, *vals] for t, *vals in zip(opens, *cols, strict=True)]


# -- files -----------------------------------------------------------------------------------


def _format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ConfigurationError(f"format must be one of csv, parquet, got {fmt!r}")
        implied = FORMATS.get(path.suffix.lower())
        if implied is not None and implied != fmt:
            raise ConfigurationError(
                f"{str(path)!r} names a {implied} file but the format is {fmt}; valid "
                f"choices: a {fmt} suffix, or no format (taken from the suffix)"
            )
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ConfigurationError(
            f"cannot tell the file format of {str(path)!r} from its suffix; valid choices: "
            f"{', '.join(FORMATS)} (or give the format)"
        )
    return found


def export_target(path: str | os.PathLike, fmt: str | None = None) -> tuple[Path, str]:
    """The file and format :func:`export_frame` would write, checked before any work: a
    bad format is a :class:`~.errors.ConfigurationError`, a missing pandas or Parquet
    engine a :class:`MissingDependencyError`."""
    path = Path(path).expanduser()
    fmt = _format(path, fmt)
    _pandas("exporting a DataFrame")
    if fmt == "parquet":
        _parquet_engine()
    return path, fmt


def export_frame(frame: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write a frame to CSV or Parquet (``fmt``, default from the suffix: ``.csv``,
    ``.parquet``/``.pq``), atomically (a temporary file renamed into place). Returns the
    path. :func:`read_frame` reads it back exactly."""
    pd = _pandas("exporting a DataFrame")
    path = Path(path).expanduser()
    fmt = _format(path, fmt)
    engine = _parquet_engine() if fmt == "parquet" else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "csv":
            # ISO 8601 in UTC; floats in Python's shortest round-trip repr
            import numpy as np

            index = frame.index
            naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
            whole = bool(((index.microsecond == 0) & (index.nanosecond == 0)).all())
            # numpy's vectorised ISO text: strftime per row is 20x slower on a year of 1m
            text = np.datetime_as_string(naive.to_numpy(), unit="s" if whole else "us")
            out = frame.set_axis(pd.Index([t + "Z" for t in text], name=index.name))
            out.to_csv(tmp)
        else:
            frame.to_parquet(tmp, engine=engine)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_frame(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read a file written by :func:`export_frame` (or laid out the same way) back into the
    same frame: UTC millisecond index, float64 columns."""
    pd = _pandas("reading a DataFrame")
    path = Path(path).expanduser()
    fmt = _format(path, fmt)
    if fmt == "parquet":
        frame = pd.read_parquet(path, engine=_parquet_engine())
    else:
        kwargs: dict[str, Any] = {}
        if int(pd.__version__.split(".")[0]) < 3:
            kwargs["float_precision"] = "round_trip"  # pandas 3 parses exactly by default
        frame = pd.read_csv(path, index_col=0, **kwargs)
        frame.index = pd.to_datetime(frame.index, utc=True, format="ISO8601")
    frame.index = pd.DatetimeIndex(frame.index, name=frame.index.name).tz_convert("UTC")
    frame.index = frame.index.as_unit("ms")
    return frame.astype("float64")


# -- from an exchange ------------------------------------------------------------------------


def _to_ms(dt: datetime) -> int:
    """Naive datetimes are UTC (the feeds' convention); aware ones are converted."""
    if not isinstance(dt, datetime):
        raise ConfigurationError(f"expected a datetime, got {dt!r}")
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return int((dt - _EPOCH) / timedelta(milliseconds=1))


def history_frame(
    store: CCXTStore,
    symbol: str,
    timeframe: str,
    fromdate: datetime | None = None,
    todate: datetime | None = None,
    *,
    bars: int | None = None,
    cache: HistoryCache | str | os.PathLike | None = None,
    stamp: str = "close",
) -> pd.DataFrame:
    """The closed candles a ``historical=True`` feed with the same arguments delivers, as a
    DataFrame (see :func:`rows_to_frame`).

    ``fromdate`` / ``todate`` are the first and last bar's **close** time, as for the feed
    (naive = UTC); ``bars=N`` instead of ``fromdate``: the last N closed candles. Fetched
    through ``cache`` (a :class:`~.cache.HistoryCache` or a path: only what it lacks is
    fetched, and kept) or, without one, through a temporary cache. The store is started
    (markets, clock), not stopped: it may be shared.
    """
    from .cache import cache_key
    from .download import download

    _pandas("a DataFrame")  # fail before any request
    _check_stamp(stamp)
    if (fromdate is None) == (bars is None):
        raise ConfigurationError("give exactly one of fromdate and bars")
    store.start()
    tf = store.resolve_timeframe(timeframe, 1)
    since = None if fromdate is None else tf.open_of(_to_ms(fromdate))
    until = None if todate is None else tf.open_of(_to_ms(todate)) + 1
    with _open_cache(cache) as hc:
        result = download(store, hc, symbol, tf.ccxt, since, until, bars=bars)
        rows = hc.read(cache_key(store), result.symbol, tf.ccxt, result.since_ms, until)
    return rows_to_frame(rows, tf, stamp=stamp)


class _open_cache:
    """The given cache (left open), a cache opened from a path (closed), or a temporary one
    (deleted)."""

    def __init__(self, cache) -> None:
        self.given = cache
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._owned = None

    def __enter__(self):
        from .cache import HistoryCache

        if isinstance(self.given, HistoryCache):
            return self.given
        if self.given is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="backtrader-ccxt-")
            path = self._tmp.name
        elif isinstance(self.given, str | os.PathLike):
            path = self.given
        else:
            raise ConfigurationError(
                f"cache must be a HistoryCache, a path or None, got {type(self.given).__name__}"
            )
        self._owned = HistoryCache(path)
        return self._owned

    def __exit__(self, *exc) -> None:
        if self._owned is not None:
            self._owned.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class FrameData(bt.feeds.PandasData):
    """A ``bt.feeds.PandasData`` over a frame of this module's layout, made by
    :func:`to_pandas_data`. It reads the frame's columns once, as lists: backtrader's own
    ``_load`` looks every value up with ``DataFrame.iloc``, which doubles a backtest's time."""

    def start(self) -> None:
        super().start()
        frame = self.p.dataname
        index = frame.index.tz_convert("UTC").tz_localize(None)  # naive UTC, as the feeds
        self._stamps = [bt.date2num(t) for t in index.to_pydatetime()]
        self._columns = [
            (getattr(self.lines, name), frame[name].to_numpy(dtype="float64").tolist())
            for name in COLUMNS
        ]

    def _load(self) -> bool:
        self._idx += 1
        i = self._idx
        if i >= len(self._stamps):
            return False
        for line, values in self._columns:
            line[0] = values[i]
        self.lines.datetime[0] = self._stamps[i]
        return True


def to_pandas_data(frame: pd.DataFrame, timeframe: str | Timeframe, **params: Any) -> FrameData:
    """A ``bt.feeds.PandasData`` over a frame of :func:`rows_to_frame`'s layout, with
    backtrader's timeframe and compression set from ``timeframe``. An open-stamped frame is
    re-stamped at the close first (backtrader stamps bars at their close). ``params`` go to
    ``PandasData`` (``name``, ``fromdate``, ...)."""
    pd = _pandas("bt.feeds.PandasData")
    tf = _tf(timeframe)
    if _stamp_of(frame) != "close":
        frame = rows_to_frame(frame_to_rows(frame, tf), tf, stamp="close")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ConfigurationError("the frame's index must be a DatetimeIndex")
    bt_tf, compression = to_backtrader(tf)
    params.setdefault("timeframe", bt_tf)
    params.setdefault("compression", compression)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"the frame lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    return FrameData(dataname=frame, openinterest=None, **params)


def pandas_feed(
    store: CCXTStore,
    symbol: str,
    timeframe: str,
    fromdate: datetime | None = None,
    todate: datetime | None = None,
    *,
    bars: int | None = None,
    cache: HistoryCache | str | os.PathLike | None = None,
    **params: Any,
) -> FrameData:
    """One call from an exchange to a fast ``bt.feeds.PandasData`` backtest: the bars are
    the ones ``store.getdata(dataname=symbol, timeframe=timeframe, fromdate=fromdate,
    todate=todate, historical=True, cache=cache)`` delivers, same stamps, same values.

    ``params`` go to ``PandasData`` (``name`` defaults to the symbol).
    """
    frame = history_frame(
        store, symbol, timeframe, fromdate, todate, bars=bars, cache=cache, stamp="close"
    )
    params.setdefault("name", symbol)
    return to_pandas_data(frame, store.resolve_timeframe(timeframe, 1), **params)
