"""Which meter detection picks, the BIOFO_ENERGY override, and ``biofo energy probe``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import fake_sysfs
from app.cli import main
from app.energy import SOURCES, MeterUnavailable, choose_meter, detect_meter, probe


@pytest.fixture(autouse=True)
def _no_energy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BIOFO_ENERGY", "BIOFO_ENERGY_HZ", "BIOFO_ESTIMATE_WATTS"):
        monkeypatch.delenv(name, raising=False)


def _orin_and_rapl(root: Path) -> None:
    fake_sysfs.orin_nano(root)
    fake_sysfs.rapl(root, [1_000_000])


@pytest.mark.parametrize(
    ("build", "source", "rail"),
    [
        (fake_sysfs.jetson_nano, "ina3221-iio", "POM_5V_IN"),
        (fake_sysfs.orin_nano, "ina3221-hwmon", "VDD_IN"),
        (
            fake_sysfs.agx_orin,
            "ina3221-hwmon",
            "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO",
        ),
        (_orin_and_rapl, "ina3221-hwmon", "VDD_IN"),
        (lambda root: fake_sysfs.rapl(root, [1_000_000]), "rapl", "package-0"),
        (lambda root: None, "estimate", "cpu-time"),
    ],
)
def test_detection_prefers_jetson_then_rapl_then_estimate(
    tmp_path: Path, build: Callable[[Path], object], source: str, rail: str
) -> None:
    build(tmp_path)
    with detect_meter(sysfs_root=tmp_path) as meter:
        assert (meter.source, meter.rail) == (source, rail)


def test_nvml_is_tried_before_rapl(tmp_path: Path) -> None:
    fake_sysfs.nvidia_gpu(tmp_path)
    fake_sysfs.rapl(tmp_path, [1_000_000])
    meter, skipped = choose_meter(sysfs_root=tmp_path)
    meter.close()
    # This machine has no NVIDIA driver, so NVML fails to start (or is not installed) and the
    # reason is kept.
    assert meter.source == "rapl"
    assert list(skipped) == ["ina3221-hwmon", "ina3221-iio", "nvml"]
    assert "nvidia-ml-py" in skipped["nvml"] or "NVML" in skipped["nvml"]


def test_named_meter_overrides_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _orin_and_rapl(tmp_path)
    monkeypatch.setenv("BIOFO_ENERGY", "rapl")
    with detect_meter(sysfs_root=tmp_path) as meter:
        assert meter.source == "rapl"
    with detect_meter("estimate", sysfs_root=tmp_path) as meter:
        assert meter.source == "estimate"
    with detect_meter("ina3221", sysfs_root=tmp_path) as meter:
        assert meter.source == "ina3221-hwmon"


def test_named_meter_that_cannot_run_is_an_error(tmp_path: Path) -> None:
    fake_sysfs.orin_nano(tmp_path)
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        detect_meter("rapl", sysfs_root=tmp_path)
    with pytest.raises(ValueError, match="BIOFO_ENERGY"):
        detect_meter("wattmeter", sysfs_root=tmp_path)


def test_sampling_rate_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sysfs.orin_nano(tmp_path)
    monkeypatch.setenv("BIOFO_ENERGY_HZ", "50")
    with detect_meter(sysfs_root=tmp_path) as meter:
        assert "sampled at 50 Hz" in meter.total
    monkeypatch.setenv("BIOFO_ENERGY_HZ", "0")
    with pytest.raises(ValueError, match="BIOFO_ENERGY_HZ"):
        detect_meter(sysfs_root=tmp_path)


def test_probe_reads_each_rail_of_a_jetson(tmp_path: Path) -> None:
    fake_sysfs.orin_nano(tmp_path)
    result = probe(seconds=0.3, sysfs_root=tmp_path)
    assert (result["source"], result["rail"]) == ("ina3221-hwmon", "VDD_IN")
    assert result["watts"] == pytest.approx(7.7, rel=1e-2)
    assert result["rails"] == pytest.approx(
        {"VDD_IN": 7.7, "VDD_CPU_GPU_CV": 0.56, "VDD_SOC": 1.08}, rel=1e-2
    )


def test_probe_on_this_machine_through_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["energy", "probe", "--seconds", "0.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["source"] in SOURCES
    assert result["watts"] >= 0
    assert result["seconds"] >= 0.3
    assert set(result["rail"].split("+")) <= set(result["rails"])
