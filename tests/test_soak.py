"""The CI version of the randomized fault soak (tests/soak.py has the long one)."""

from __future__ import annotations

import pytest
from feedtools import PROTOCOLS
from soak import FAULT_WEIGHTS, FaultSchedule, soak

from backtrader_ccxt.localexchange import LocalExchange

#: the soak's speed off the real clock: the whole soak scaled (tests/soak.py --speed), at a
#: speed where the scaled stall watchdog (0.4 s) and reconnect backoff (20-200 ms) stay well
#: above what a loaded 2-core machine delays a frame by
SOAK_SPEED = 2.5


@pytest.mark.parametrize(
    "protocol, speed",
    [
        # one soak on the real clock: the schedule against real-time sockets, pings, watchdog
        pytest.param(PROTOCOLS[0], 1.0, marks=pytest.mark.realtime, id=PROTOCOLS[0]),
        *(pytest.param(p, SOAK_SPEED, marks=pytest.mark.slow) for p in PROTOCOLS[1:]),
    ],
)
def test_short_soak_loses_duplicates_and_corrupts_nothing(protocol, speed):
    result = soak(bars=25, symbols=3, seed=20261121, protocol=protocol, speed=speed)
    print(result.report())
    assert result.details == []
    assert result.ok
    assert result.delivered >= 3 * 25
    # the schedule really hit the exchange: several kinds, and REST faults in the backfill
    applied = {k for k, v in result.faults.items() if v}
    assert len(applied) >= 5, result.faults
    assert result.faults["rest_429"] + result.faults["rest_5xx"] >= 1
    assert result.store_stats["reconnects"] >= 1
    for statuses in result.statuses.values():
        assert statuses[:2] == ["DELAYED", "LIVE"]
        # every break was reported, and every break but one at the very end was recovered
        breaks = [i for i, s in enumerate(statuses) if s == "CONNBROKEN"]
        assert breaks, statuses
        for i in breaks[:-1]:
            assert statuses[i + 1] == "LIVE", statuses


def test_every_fault_kind_of_the_schedule_is_known_to_the_exchange():
    """Guards the soak itself: each scheduled kind maps to a real fault control."""
    import random

    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=10) as ex:
        schedule = FaultSchedule(ex, random.Random(1), ["BTC/USDT"])
        for kind in FAULT_WEIGHTS:
            schedule.apply(kind)
        assert set(schedule.scheduled) == set(FAULT_WEIGHTS)
        ex.faults.clear()


@pytest.mark.slow
def test_short_soak_in_the_rest_modes_with_exactbars_1():
    """The REST faults of the schedule against three polled feeds in one exactbars=1
    cerebro, in both REST modes (the WebSocket faults find no socket to hit)."""
    for mode in ("polling", "threaded"):
        result = soak(bars=15, symbols=3, seed=20261201, mode=mode, exactbars=1, speed=SOAK_SPEED)
        assert result.details == [], (mode, result.details)
        assert result.ok, mode
        assert result.delivered >= 3 * 15
        assert result.faults["rest_429"] + result.faults["rest_5xx"] >= 1
