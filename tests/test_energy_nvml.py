"""NVML meter against a stand-in for ``pynvml`` (this machine has no NVIDIA GPU): the counter is
millijoules since driver load, one per GPU, and pre-Volta GPUs have none."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import fake_sysfs
from app.energy.meter import MeterUnavailable
from app.energy.nvml import NvmlMeter


class NVMLError(Exception):
    pass


def _fake_pynvml(counters_mj: list[int], supported: bool = True) -> types.SimpleNamespace:
    state = types.SimpleNamespace(started=False)

    def total_energy(handle: int) -> int:
        if not supported:
            raise NVMLError("Not Supported")
        return counters_mj[handle]

    return types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: setattr(state, "started", True),
        nvmlShutdown=lambda: setattr(state, "started", False),
        nvmlDeviceGetCount=lambda: len(counters_mj),
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        state=state,
    )


def test_sums_the_gpus_counters_in_joules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sysfs.nvidia_gpu(tmp_path)
    counters = [5_000_000, 7_000_000]
    pynvml = _fake_pynvml(counters)
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    meter = NvmlMeter(tmp_path)
    assert (meter.source, meter.rail) == ("nvml", "gpu0+gpu1")
    with meter.measure() as block:
        counters[0] += 1500
        counters[1] += 250
    assert block.joules == pytest.approx(1.75)
    assert meter.rail_joules() == pytest.approx({"gpu0": 1.5, "gpu1": 0.25})
    meter.close()
    assert pynvml.state.started is False


def test_gpu_without_energy_counter_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sysfs.nvidia_gpu(tmp_path)
    pynvml = _fake_pynvml([0], supported=False)
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    with pytest.raises(MeterUnavailable, match="Volta or newer"):
        NvmlMeter(tmp_path)
    assert pynvml.state.started is False


def test_no_gpu_driver_is_unavailable_without_importing_nvml(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="no NVIDIA GPU driver"):
        NvmlMeter(tmp_path)
