"""Jetson INA3221 meters on fake sysfs trees with the real JetPack 4 and JetPack 5/6 layouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import fake_sysfs
from app.energy.ina3221 import hwmon_meter, hwmon_rails, iio_meter, iio_rails


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nano_iio_rails_are_read_in_milliwatts(tmp_path: Path) -> None:
    fake_sysfs.jetson_nano(tmp_path)
    rails = iio_rails(tmp_path)
    assert [rail.name for rail in rails] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert [rail.watts() for rail in rails] == pytest.approx([3.1, 0.08, 0.275])


def test_nano_iio_integrates_the_total_rail_with_the_trapezoid_rule(tmp_path: Path) -> None:
    device = fake_sysfs.jetson_nano(tmp_path)
    clock = FakeClock()
    with iio_meter(tmp_path, sample_hz=0, clock=clock) as meter:
        assert (meter.source, meter.rail) == ("ina3221-iio", "POM_5V_IN")
        assert "POM_5V_IN" in meter.total and "whole-module" in meter.total
        fake_sysfs.set_iio_power(device, 0, 5000, 1020)  # 3.1 W -> 5.1 W
        clock.now = 2.0
        assert meter.joules() == pytest.approx((3.1 + 5.1) / 2 * 2.0)
        with meter.measure() as block:
            fake_sysfs.set_iio_power(device, 0, 5000, 1420)  # 5.1 W -> 7.1 W
            clock.now = 3.0
        assert block.joules == pytest.approx((5.1 + 7.1) / 2 * 1.0)
        assert block.duration_s == pytest.approx(1.0)
        assert (block.source, block.rail) == ("ina3221-iio", "POM_5V_IN")
        assert meter.rail_joules()["POM_5V_GPU"] == pytest.approx(0.08 * 3.0)


def test_orin_nano_hwmon_multiplies_millivolts_by_milliamps_and_skips_the_shunt_sum(
    tmp_path: Path,
) -> None:
    fake_sysfs.orin_nano(tmp_path)
    rails = hwmon_rails(tmp_path)
    assert [rail.name for rail in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert [rail.watts() for rail in rails] == pytest.approx([7.7, 0.56, 1.08])


def test_orin_nano_total_is_vdd_in(tmp_path: Path) -> None:
    device = fake_sysfs.orin_nano(tmp_path)
    clock = FakeClock()
    with hwmon_meter(tmp_path, sample_hz=0, clock=clock) as meter:
        assert (meter.source, meter.rail) == ("ina3221-hwmon", "VDD_IN")
        with meter.measure() as block:
            fake_sysfs.set_hwmon(device, 1, 5000, 2000)  # VDD_IN 7.7 W -> 10 W
            clock.now = 0.5
            meter.sample()
            clock.now = 1.5
        assert block.joules == pytest.approx((7.7 + 10.0) / 2 * 0.5 + 10.0 * 1.0)


def test_agx_orin_without_vdd_in_sums_the_connected_rails(tmp_path: Path) -> None:
    first, second = fake_sysfs.agx_orin(tmp_path)
    clock = FakeClock()
    with hwmon_meter(tmp_path, sample_hz=0, clock=clock) as meter:
        names = ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
        assert meter.rail == "+".join(names)
        assert "sum of rails" in meter.total and "2.28" in meter.total
        watts = 19.96 * 0.4 + 19.96 * 0.1 + 5.0 * 0.5 + 5.0 * 0.08
        fake_sysfs.set_hwmon(second, 2, 5000, 280)  # VDDQ_VDD2_1V8AO 0.4 W -> 1.4 W
        clock.now = 2.0
        assert sorted(meter.rail_joules()) == sorted(names)
        assert meter.joules() == pytest.approx(watts * 2.0 + 1.0 / 2 * 2.0)


def test_sampling_thread_integrates_while_the_caller_waits(tmp_path: Path) -> None:
    fake_sysfs.orin_nano(tmp_path)
    meter = hwmon_meter(tmp_path, sample_hz=100)
    with meter.measure() as block:
        time.sleep(0.3)
    meter.close()
    samples_at_close = meter.samples
    time.sleep(0.05)
    assert samples_at_close >= 10
    assert meter.samples == samples_at_close
    # Constant power makes the trapezoid exact: energy = power x the time between the samples at
    # the block's ends, which differs from the block's own clock by the time of one read.
    assert block.joules == pytest.approx(7.7 * block.duration_s, rel=1e-2)


def test_unreadable_rail_file_says_how_to_fix_it(tmp_path: Path) -> None:
    device = fake_sysfs.orin_nano(tmp_path)
    (device / "curr1_input").chmod(0o000)
    script = (
        "import sys\n"
        "from app.energy.ina3221 import hwmon_meter\n"
        "from app.energy.meter import MeterUnavailable\n"
        "try:\n"
        "    hwmon_meter(sys.argv[1], sample_hz=0)\n"
        "except MeterUnavailable as error:\n"
        "    print(error)\n"
    )
    done = fake_sysfs.run_unprivileged(script, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert str(device / "curr1_input") in done.stdout and "chmod a+r" in done.stdout
