"""Timeframe arithmetic and the backtrader <-> ccxt bar-size mapping."""

from datetime import datetime, timezone

import backtrader as bt
import ccxt
import pytest

from backtrader_ccxt.errors import ConfigurationError, UnsupportedTimeframeError
from backtrader_ccxt.timeframes import (
    Timeframe,
    by_duration,
    from_backtrader,
    parse,
    resolve,
    to_backtrader,
)

DAY = 86_400_000
BINANCE = ccxt.binance().timeframes  # built from the class description, no network


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def valid_choices(message: str) -> set[str]:
    return set(message.split("valid choices: ", 1)[1].split("; ", 1)[0].split(", "))


def listed_choices(message: str) -> list[str]:
    return message.split("valid choices: ", 1)[1].split("; ", 1)[0].split(", ")


@pytest.mark.parametrize(
    "text, length",
    [
        ("1s", 1_000),
        ("15m", 15 * 60_000),
        ("4h", 4 * 3_600_000),
        ("3d", 3 * DAY),
        ("1w", 7 * DAY),
        ("1M", 30 * DAY),
        ("1y", 365 * DAY),
    ],
)
def test_nominal_length(text, length):
    assert parse(text).ms == length


@pytest.mark.parametrize("text", ["1s", "5m", "1h", "1d", "1w"])
def test_fixed_close_is_open_plus_length(text):
    tf = parse(text)
    open_ms = ms(2024, 3, 10, 0, 0)
    assert tf.close_of(open_ms) == open_ms + tf.ms
    assert not tf.is_calendar


@pytest.mark.parametrize(
    "text, opened, closed",
    [
        ("1M", (2023, 1, 1), (2023, 2, 1)),
        ("1M", (2023, 2, 1), (2023, 3, 1)),  # 28 days
        ("1M", (2024, 2, 1), (2024, 3, 1)),  # 29 days, leap year
        ("1M", (2024, 1, 31), (2024, 2, 29)),  # month end clamps to a leap February
        ("1M", (2023, 1, 31), (2023, 2, 28)),
        ("1M", (2023, 12, 1), (2024, 1, 1)),  # December -> January of the next year
        ("3M", (2023, 11, 1), (2024, 2, 1)),
        ("1y", (2023, 1, 1), (2024, 1, 1)),
        ("1y", (2024, 2, 29), (2025, 2, 28)),
    ],
)
def test_calendar_close(text, opened, closed):
    tf = parse(text)
    assert tf.is_calendar
    assert tf.close_of(ms(*opened)) == ms(*closed)


def test_months_of_a_leap_year_add_up_to_366_days():
    tf = parse("1M")
    t = ms(2024, 1, 1)
    lengths = []
    for _ in range(12):
        nxt = tf.close_of(t)
        lengths.append((nxt - t) // DAY)
        t = nxt
    assert t == ms(2025, 1, 1)
    assert lengths == [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


@pytest.mark.parametrize("text", ["1s", "1m", "15m", "4h", "1d", "3d", "1w", "1M", "3M", "1y"])
def test_parse_round_trips_the_ccxt_string(text):
    tf = parse(text)
    assert tf.ccxt == text
    assert str(tf) == text


def test_parse_fields():
    assert parse("15m") == Timeframe(15, "m")
    assert parse("1M") == Timeframe(1, "M")  # month, not minute
    assert parse("1M") != parse("1m")


@pytest.mark.parametrize(
    "bad", ["", "m", "1", "0m", "-1m", "1.5h", "1x", "1H", " 1m", "1 m", "1mm", "h1", None, 5]
)
def test_parse_rejects_bad_strings(bad):
    with pytest.raises(UnsupportedTimeframeError) as info:
        parse(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    "timeframe, compression, expected",
    [
        (bt.TimeFrame.Seconds, 1, "1s"),
        (bt.TimeFrame.Minutes, 1, "1m"),
        (bt.TimeFrame.Minutes, 15, "15m"),
        (bt.TimeFrame.Minutes, 60, "1h"),
        (bt.TimeFrame.Minutes, 240, "4h"),
        (bt.TimeFrame.Minutes, 1440, "1d"),
        (bt.TimeFrame.Days, 1, "1d"),
        (bt.TimeFrame.Days, 3, "3d"),
        (bt.TimeFrame.Days, 7, "1w"),
        (bt.TimeFrame.Weeks, 1, "1w"),
        (bt.TimeFrame.Months, 1, "1M"),
    ],
)
def test_from_backtrader_on_binance(timeframe, compression, expected):
    assert from_backtrader(timeframe, compression, BINANCE).ccxt == expected


@pytest.mark.parametrize(
    "timeframe, compression, expected",
    [
        (bt.TimeFrame.Seconds, 120, "2m"),
        (bt.TimeFrame.Minutes, 90, "90m"),
        (bt.TimeFrame.Minutes, 120, "2h"),
        (bt.TimeFrame.Days, 14, "2w"),
        (bt.TimeFrame.Months, 12, "1y"),
        (bt.TimeFrame.Years, 2, "2y"),
    ],
)
def test_from_backtrader_without_an_exchange_prefers_the_largest_unit(
    timeframe, compression, expected
):
    assert from_backtrader(timeframe, compression).ccxt == expected


def test_from_backtrader_falls_back_to_a_spelling_the_exchange_has():
    # Years 1 is '1y' first, '12M' second; an exchange with only '12M' gets that one.
    assert from_backtrader(bt.TimeFrame.Years, 1, {"12M": "12M"}).ccxt == "12M"


def test_seconds_that_make_whole_hours_map_to_hours():
    # 3600 seconds is exactly one hour, which binance offers as '1h'.
    assert from_backtrader(bt.TimeFrame.Seconds, 3600, BINANCE).ccxt == "1h"


@pytest.mark.parametrize(
    "timeframe, compression, name, spelled",
    [
        (bt.TimeFrame.Minutes, 2, "Minutes", "'2m'"),
        (bt.TimeFrame.Seconds, 5, "Seconds", "'5s'"),
        (bt.TimeFrame.Days, 2, "Days", "'2d'"),
        (bt.TimeFrame.Years, 1, "Years", "'1y'"),
    ],
)
def test_unsupported_size_names_the_value_and_the_choices(timeframe, compression, name, spelled):
    with pytest.raises(UnsupportedTimeframeError) as info:
        from_backtrader(timeframe, compression, BINANCE)
    msg = str(info.value)
    assert name in msg
    assert f"compression {compression} " in msg
    assert spelled in msg
    assert valid_choices(msg) == set(BINANCE)


@pytest.mark.parametrize("compression", [0, -1, True, 1.5, "1"])
def test_bad_compression(compression):
    with pytest.raises(UnsupportedTimeframeError) as info:
        from_backtrader(bt.TimeFrame.Minutes, compression, BINANCE)
    assert repr(compression) in str(info.value)


@pytest.mark.parametrize("timeframe", [bt.TimeFrame.Ticks, bt.TimeFrame.NoTimeFrame, 99])
def test_bad_backtrader_timeframe(timeframe):
    with pytest.raises(UnsupportedTimeframeError) as info:
        from_backtrader(timeframe, 1, BINANCE)
    msg = str(info.value)
    named = {bt.TimeFrame.Ticks: "bt.TimeFrame.Ticks", bt.TimeFrame.NoTimeFrame: "NoTimeFrame"}
    assert named.get(timeframe, repr(timeframe)) in msg
    assert valid_choices(msg) == {
        f"bt.TimeFrame.{n}" for n in ("Seconds", "Minutes", "Days", "Weeks", "Months", "Years")
    }


def test_the_error_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        from_backtrader(bt.TimeFrame.Minutes, 7, BINANCE)
    with pytest.raises(ValueError):
        from_backtrader(bt.TimeFrame.Minutes, 7, BINANCE)


@pytest.mark.parametrize("text", sorted(BINANCE))
def test_to_backtrader_round_trips_every_binance_timeframe(text):
    tf = parse(text)
    assert from_backtrader(*to_backtrader(tf), BINANCE) == tf


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30s", (bt.TimeFrame.Seconds, 30)),
        ("5m", (bt.TimeFrame.Minutes, 5)),
        ("4h", (bt.TimeFrame.Minutes, 240)),
        ("1d", (bt.TimeFrame.Days, 1)),
        ("2w", (bt.TimeFrame.Weeks, 2)),
        ("3M", (bt.TimeFrame.Months, 3)),
        ("1y", (bt.TimeFrame.Years, 1)),
    ],
)
def test_to_backtrader(text, expected):
    assert to_backtrader(parse(text)) == expected


def test_resolve_accepts_a_ccxt_string():
    assert resolve("4h", None, BINANCE) == Timeframe(4, "h")
    assert resolve("2m", None) == Timeframe(2, "m")  # no exchange to check against


def test_resolve_rejects_a_string_the_exchange_lacks():
    with pytest.raises(UnsupportedTimeframeError) as info:
        resolve("2m", None, BINANCE)
    msg = str(info.value)
    assert "'2m'" in msg
    assert valid_choices(msg) == set(BINANCE)


def test_resolve_rejects_a_malformed_string():
    with pytest.raises(UnsupportedTimeframeError):
        resolve("one minute", None, BINANCE)


def test_resolve_accepts_backtrader_sizes():
    assert resolve(bt.TimeFrame.Minutes, 60, BINANCE) == Timeframe(1, "h")
    with pytest.raises(UnsupportedTimeframeError):
        resolve(bt.TimeFrame.Minutes, 2, BINANCE)


def test_open_of_is_the_calendar_exact_inverse_of_close_of():
    from datetime import datetime, timezone

    from backtrader_ccxt.timeframes import parse

    def ms(*args):
        return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)

    month = parse("1M")
    assert month.open_of(ms(2024, 4, 1)) == ms(2024, 3, 1)  # March has 31 days, not 30
    assert month.open_of(ms(2024, 3, 1)) == ms(2024, 2, 1)  # a leap February
    assert parse("1y").open_of(ms(2025, 1, 1)) == ms(2024, 1, 1)
    for tf in ("1s", "15m", "4h", "1w", "1M", "3M"):
        t = parse(tf)
        assert t.open_of(t.close_of(ms(2023, 1, 1))) == ms(2023, 1, 1)


def test_ticks_says_what_the_package_offers_instead():
    with pytest.raises(UnsupportedTimeframeError) as info:
        from_backtrader(bt.TimeFrame.Ticks, 1, BINANCE)
    msg = str(info.value)
    assert "Ticks" in msg and "candles" in msg and "resampledata" in msg
    assert "1s, 1m, 3m" in msg  # the venue's sizes, shortest first


@pytest.mark.parametrize(
    "call",
    [
        lambda: resolve("2m", None, BINANCE),
        lambda: from_backtrader(bt.TimeFrame.Minutes, 7, BINANCE),
    ],
)
def test_choices_are_listed_by_duration_with_a_resample_hint(call):
    with pytest.raises(UnsupportedTimeframeError) as info:
        call()
    msg = str(info.value)
    listed = listed_choices(msg)
    assert listed == sorted(listed, key=lambda t: parse(t).ms)
    assert listed[:3] == ["1s", "1m", "3m"] and listed[-1] == "1M"
    assert "cerebro.resampledata" in msg


def test_by_duration_puts_unparseable_names_last():
    assert by_duration(["1d", "12h", "1M", "15m", "odd", "1m"]) == [
        "1m",
        "15m",
        "12h",
        "1d",
        "1M",
        "odd",
    ]
