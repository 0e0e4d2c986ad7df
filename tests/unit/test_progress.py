"""The feed's backfill report: progress at INFO on a long backfill, one WARNING when the
venue's history is shorter than asked. (Checked through the records' levels and arguments,
not their text.)"""

from __future__ import annotations

import logging

from backtrader_ccxt.progress import BackfillReport


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def records(caplog, level):
    return [r for r in caplog.records if r.name == "backtrader_ccxt.feed" and r.levelno == level]


def test_a_long_backfill_reports_progress_every_interval(caplog):
    clock = Clock()
    rep = BackfillReport("[x]", 0, 250_000_000, 250_000, True, every_s=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="backtrader_ccxt.feed"):
        for i in range(250_000):
            clock.t = i * 0.0002  # 50 s for the whole backfill
            rep.bar((i + 1) * 1000)
        rep.done()
    progress = records(caplog, logging.INFO)
    assert 4 <= len(progress) <= 5  # every 10 s, not every page nor every bar
    assert [r.args[1] for r in progress] == sorted(r.args[1] for r in progress)
    assert records(caplog, logging.WARNING) == []  # everything asked was delivered


def test_a_short_backfill_warns_once_with_asked_and_delivered(caplog):
    rep = BackfillReport("[x]", 0, 10**9, 100_000, True, clock=Clock())
    with caplog.at_level(logging.INFO, logger="backtrader_ccxt.feed"):
        for i in range(3000):
            rep.bar((i + 1) * 1000)
        rep.done()
        rep.done()
    (warning,) = records(caplog, logging.WARNING)
    assert warning.args[1:3] == (100_000, 3000)


def test_a_window_with_omitted_candles_is_not_a_shortfall(caplog):
    rep = BackfillReport("[x]", 0, 100_000, 100, False, clock=Clock())
    with caplog.at_level(logging.INFO, logger="backtrader_ccxt.feed"):
        for i in range(95):  # a few candles without trades left out by the venue
            rep.bar((i + 1) * 1000)
        rep.done()
    assert records(caplog, logging.WARNING) == []
