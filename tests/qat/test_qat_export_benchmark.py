"""benchmarks/qat_export.py's latency measurement: interleaved, rotated rounds, every call timed
on its own, so a burst of load spoils single calls that the minimum (or median) then discards.

A fake clock stands in for time.perf_counter: the test checks what is measured, not how fast."""
from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "qat_export.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("qat_export_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_call_is_timed_on_its_own_over_interleaved_rotated_rounds(bench, monkeypatch):
    clock = {"now": 0.0, "calls": 0}
    log = []

    def runner(name, ms_per_image):
        def run(x):
            clock["calls"] += 1
            burst = 0.5 if clock["calls"] % 7 == 0 else 0.0  # another process takes the core
            clock["now"] += ms_per_image * len(x) / 1e3 + burst
            log.append((name, len(x)))
        return run

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    runners = {"a": runner("a", 1.0), "b": runner("b", 0.5), "c": runner("c", 2.0)}
    calls = bench.interleaved_latency(runners, np.zeros((64, 3, 4, 4), np.float32), rounds=6, runs={1: 5, 64: 1})

    cost = {"a": {1: 1.0, 64: 64.0}, "b": {1: 0.5, 64: 32.0}, "c": {1: 2.0, 64: 128.0}}
    for name, per_batch in cost.items():
        for b, ms in per_batch.items():
            assert len(calls[name][b]) == 6 * (5 if b == 1 else 1)
            assert min(calls[name][b]) == pytest.approx(ms)  # the bursts are gone
            assert statistics.median(calls[name][b]) == pytest.approx(ms)
    assert max(max(calls[n][1]) for n in cost) > 500  # and were there: one call in 7 took 0.5 s longer
    timed = log[2 * len(runners):]  # after one warm-up call per model and batch size
    assert len(timed) == 6 * len(runners) * (5 + 1)
    firsts = [timed[r * len(runners) * 6][0] for r in range(6)]  # who starts each round
    assert firsts == ["a", "b", "c", "a", "b", "c"]
