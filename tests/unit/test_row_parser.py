"""The one row parser (``bars.bar_from_row``): real rows pass, anything that is not a candle
is refused with the kind of fault, and the REST copy turns such a page into a retryable
error counted in the store's stats."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections import Counter
from pathlib import Path

import ccxt
import pytest

from backtrader_ccxt.bars import BAD_ROW_KINDS, BadRow, bar_from_row
from backtrader_ccxt.errors import is_retryable
from backtrader_ccxt.rest import BadRows, RestTarget, _copy
from backtrader_ccxt.timeframes import parse

M1 = parse("1m")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ohlcv" / "binance_data_vision"
# a real Binance 1m candle (BTCUSDT 2022-09-05 00:00), as ccxt returns it
REAL = [1662336000000, 19992.7, 20000.0, 19988.1, 19996.8, 482.638]


def real_rows(name: str = "BTCUSDT-1m-2022-09-05") -> list[list]:
    path = DATA / f"{name}.zip"
    if not path.is_file():
        pytest.skip(f"recorded market data not found at {path}")
    with zipfile.ZipFile(path) as z:
        text = z.read(f"{name}.csv").decode()
    return [r[:6] for r in csv.reader(io.StringIO(text)) if r and r[0].isdigit()]


@pytest.mark.parametrize("name", ["BTCUSDT-1m-2022-09-05", "BTCUSD_PERP-1m-2022-10-24"])
def test_every_recorded_binance_row_is_a_candle(name):
    rows = real_rows(name)  # the venue's own strings, as a cache or CSV would hold them
    bars = [bar_from_row(r, M1) for r in rows]
    assert len(bars) == 1440
    assert bars[0].open_ms == int(rows[0][0])
    assert bars[0].row() == [int(rows[0][0]), *map(float, rows[0][1:6])]


def test_a_real_row_and_its_forms():
    bar = bar_from_row(REAL, M1)
    assert bar.row() == REAL
    assert bar_from_row(tuple(REAL), M1) == bar
    assert bar_from_row([str(v) for v in REAL], M1) == bar
    assert bar_from_row([float(REAL[0]), *REAL[1:]], M1) == bar  # ms as a whole float
    assert bar_from_row(REAL[:5], M1).volume == 0.0  # mark/index candles: no volume
    assert bar_from_row([*REAL[:5], None], M1).volume == 0.0
    flat = [REAL[0], 5.0, 5.0, 5.0, 5.0, 0.0]  # a candle without trades
    assert bar_from_row(flat, M1).volume == 0.0


def variant(i: int, value) -> list:
    row = list(REAL)
    row[i] = value
    return row


BAD = {
    "shape": [None, [], "1662336000000,1,2,0.5,1.5", REAL[:4], 42],
    "time": [
        variant(0, None),
        variant(0, "soon"),
        variant(0, math.nan),
        variant(0, 1662336000000.5),
        variant(0, -60_000),
        variant(0, True),
    ],
    "misaligned": [variant(0, REAL[0] + 1), variant(0, REAL[0] + 30_000)],
    "price": [
        variant(1, None),  # the missing price older paths turned into 0.0
        variant(4, None),
        variant(2, "high"),
        variant(3, math.inf),
        variant(4, math.nan),
        variant(1, 0.0),
        variant(3, -1.0),
        variant(2, False),
    ],
    "range": [
        variant(2, 19900.0),  # high below low
        variant(1, 20001.0),  # open above high
        variant(4, 19900.0),  # close below low
        [REAL[0], 19992.7, 19988.1, 20000.0, 19996.8, 1.0],  # high and low swapped
    ],
    "volume": [variant(5, -1.0), variant(5, math.nan), variant(5, math.inf), variant(5, "many")],
}


@pytest.mark.parametrize(
    "kind, row", [(kind, row) for kind, rows in BAD.items() for row in rows], ids=repr
)
def test_a_row_that_is_not_a_candle_is_refused_with_its_kind(kind, row):
    with pytest.raises(BadRow) as info:
        bar_from_row(row, M1)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)  # what the stream path catches
    assert kind in BAD_ROW_KINDS


def test_alignment_is_checked_up_to_hourly_bars_only():
    off = REAL[0] + 60_000  # on the 1m grid, not on the 1h one
    with pytest.raises(BadRow):
        bar_from_row([off, *REAL[1:]], parse("1h"))
    # a daily candle on a venue whose day starts at 08:00 UTC is still a candle
    day = 1662336000000 + 8 * 3_600_000
    assert bar_from_row([day, *REAL[1:]], parse("1d")).open_ms == day


def test_rest_copy_refuses_a_page_with_a_bad_row_counts_it_and_logs_once(caplog):
    stats: Counter = Counter()
    target = RestTarget(symbol="BTC/USDT", tf=M1, stats=stats)
    good = [variant(0, REAL[0] + i * 60_000) for i in range(3)]
    assert _copy(good, target) == good
    page = [good[0], variant(4, None), good[2]]
    for _ in range(2):
        with pytest.raises(BadRows) as info:
            _copy(page, target)
    assert is_retryable(info.value)  # the page is refetched
    assert isinstance(info.value, ccxt.BadResponse)
    assert [b.kind for b in info.value.bad] == ["price"]
    assert stats["bad_rows"] == 2 and stats["bad_rows_price"] == 2
    assert target.reported == {"price"}  # the warning went out once for this feed and kind
