"""The estimate meter against its formula: thread CPU seconds x configured watts."""

from __future__ import annotations

import threading
import time

import pytest

from app.energy.estimate import DEFAULT_ESTIMATE_WATTS, EstimateMeter


def _burn(cpu_s: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < cpu_s:
        sum(i * i for i in range(1000))


@pytest.fixture(autouse=True)
def _no_configured_watts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIOFO_ESTIMATE_WATTS", raising=False)


def test_block_energy_is_thread_cpu_time_times_watts() -> None:
    meter = EstimateMeter(watts=2.0)
    before = time.thread_time()
    with meter.measure() as block:
        _burn(0.15)
    after = time.thread_time()
    assert block.source == "estimate" and "not a measurement" in block.total
    assert block.joules / 2.0 >= 0.15
    # The meter's own readings lie inside [before, after].
    assert block.joules / 2.0 <= after - before


def test_other_threads_cpu_is_not_counted() -> None:
    meter = EstimateMeter(watts=2.0)
    worker = threading.Thread(target=_burn, args=(0.15,))
    with meter.measure() as block:
        worker.start()
        worker.join()
    assert block.duration_s >= 0.15
    assert block.joules < 2.0 * 0.02


def test_cumulative_joules_are_process_cpu_time_times_watts() -> None:
    before = time.process_time()
    meter = EstimateMeter(watts=3.0)
    _burn(0.1)
    reading = meter.joules()
    after = time.process_time()
    assert 3.0 * 0.1 <= reading <= 3.0 * (after - before)


def test_watts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EstimateMeter().watts == DEFAULT_ESTIMATE_WATTS
    monkeypatch.setenv("BIOFO_ESTIMATE_WATTS", "2.5")
    meter = EstimateMeter()
    assert meter.watts == 2.5 and "2.5 W" in meter.total
    monkeypatch.setenv("BIOFO_ESTIMATE_WATTS", "-1")
    with pytest.raises(ValueError, match="BIOFO_ESTIMATE_WATTS"):
        EstimateMeter()
