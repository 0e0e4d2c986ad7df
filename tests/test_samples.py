"""Every sample runs offline for a few live bars, exits 0 and prints the bars it got.

The samples run as users run them: ``python samples/<name>.py`` in a subprocess (with
ResourceWarnings as errors; forked from a warm interpreter, tests/warmpython.py), all at
once so the module takes as long as the slowest one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import warmpython

# one worker runs the whole module: its module fixture starts every run at once
pytestmark = pytest.mark.xdist_group("samples")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
BARS = 2
LIVE = re.compile(r"^live\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s", re.M)

RUNS = {
    "live_sma.py": [],
    "live_sma_websocket": ["--mode", "websocket"],
    "backtest_then_live.py": ["--history", "200"],
    "multi_symbol.py": [],
    "two_stores.py": [],
    "resample_live.py": [],
    "pandas_sweep.py": ["--history", "600"],
    "rehearse.py": ["--warmup", "30"],
    "ticks_and_bars.py": ["--seconds", "2"],
    "live_broker.py": [],
}


def _script(run: str) -> Path:
    return SAMPLES / (run if run.endswith(".py") else run.rsplit("_", 1)[0] + ".py")


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


@pytest.fixture(scope="module")
def results():
    """Start every run at once; collect them lazily, one per test."""
    procs = {
        run: warmpython.Popen(
            [
                sys.executable,
                "-W",
                "error::ResourceWarning",
                str(_script(run)),
                "--bars",
                str(BARS),
                *args,
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run, args in RUNS.items()
    }
    done: dict[str, tuple[int, str, str]] = {}

    def get(run: str) -> tuple[int, str, str]:
        if run not in done:
            proc = procs[run]
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"{run} did not finish in 120 s\n{out}\n{err}")
            done[run] = (proc.returncode, out, err)
        return done[run]

    yield get
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _check(get, run: str) -> list[tuple[str, datetime]]:
    code, out, err = get(run)
    assert code == 0, f"{run} exited {code}\n{out}\n{err}"
    assert "Traceback" not in err and "ResourceWarning" not in err, err
    return [(name, datetime.fromisoformat(ts)) for name, ts in LIVE.findall(out)]


def test_live_broker_trades_and_matches_the_exchange_ledger(results):
    bars = _check(results, "live_broker.py")
    assert len(bars) == BARS
    out = results("live_broker.py")[1]
    assert "order  BUY Completed" in out
    assert "broker: 2 orders, 2 fills" in out  # the buy, and the sell sent on the last bar
    assert "exchange ledger: 2 orders, 2 fills, BTC 0," in out
    assert "broker matches the exchange ledger: yes" in out


def test_every_sample_is_covered():
    assert {_script(r).name for r in RUNS} == {p.name for p in SAMPLES.glob("*.py")}


@pytest.mark.parametrize(
    "run", ["live_sma.py", "live_sma_websocket", "backtest_then_live.py", "pandas_sweep.py"]
)
def test_single_feed_samples_print_consecutive_live_bars(results, run):
    bars = _check(results, run)
    assert len(bars) == BARS
    times = [t for _, t in bars]
    assert all((b - a).total_seconds() == 1 for a, b in zip(times, times[1:], strict=False))


def test_backtest_then_live_backtests_first(results):
    code, out, _ = results("backtest_then_live.py")
    assert code == 0
    match = re.search(r"^backtest: (\d+) bars", out, re.M)
    assert match and int(match.group(1)) > 150
    assert out.index("backtest:") < out.index("status")


def test_pandas_sweep_backtests_every_pair_on_one_frame_then_goes_live(results):
    code, out, _ = results("pandas_sweep.py")
    assert code == 0
    match = re.search(r"^history: (\d+) bars", out, re.M)
    assert match and int(match.group(1)) == 600
    assert len(re.findall(r"^sweep ", out, re.M)) == 9
    assert out.index("best:") < out.index("status")


def test_rehearse_runs_live_on_the_history_and_matches_its_backtest(results):
    bars = _check(results, "rehearse.py")
    code, out, _ = results("rehearse.py")
    # the websocket feed may report LIVE just before the warmup's last bar
    assert BARS <= len(bars) <= BARS + 1
    times = [t for _, t in bars]
    assert all((b - a).total_seconds() == 60 for a, b in zip(times, times[1:], strict=False))
    backtest = re.search(r"^backtest: (\d+) bars", out, re.M)
    rehearsal = re.search(r"^rehearsal: (\d+) bars", out, re.M)
    assert backtest and rehearsal and backtest.group(1) == rehearsal.group(1)
    assert "same bars and trades as the backtest: True" in out


@pytest.mark.parametrize("run", ["multi_symbol.py", "two_stores.py"])
def test_multi_feed_samples_print_live_bars_for_every_feed(results, run):
    bars = _check(results, run)
    per_feed = Counter(name for name, _ in bars)
    expected = 3 if run == "multi_symbol.py" else 2
    assert len(per_feed) == expected, per_feed
    assert all(n >= BARS for n in per_feed.values()), per_feed


def test_resampled_bars_are_whole_five_second_bars_stamped_at_close(results):
    bars = _check(results, "resample_live.py")
    assert len(bars) == BARS
    assert all(t.second % 5 == 0 for _, t in bars)
    assert (bars[1][1] - bars[0][1]).total_seconds() == 5


@pytest.mark.parametrize("script", sorted(p.name for p in SAMPLES.glob("*.py")))
def test_help(script):
    proc = warmpython.run(
        [sys.executable, str(SAMPLES / script), "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--bars" in proc.stdout and "--exchange" in proc.stdout


def test_bars_built_from_ticks_are_whole_bars_stamped_at_close(results):
    bars = _check(results, "ticks_and_bars.py")
    assert len(bars) == BARS
    assert all(t.second % 2 == 0 and t.microsecond == 0 for _, t in bars)
    assert (bars[1][1] - bars[0][1]).total_seconds() == 2
    _, out, _ = results("ticks_and_bars.py")
    match = re.search(r"^done: (\d+) ticks", out, re.M)
    assert match and int(match.group(1)) > 4 * BARS  # 4 to 12 trades a second locally
