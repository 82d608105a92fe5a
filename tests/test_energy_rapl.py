"""Intel RAPL meter on fake powercap trees: package zones, wrap-around, root-only counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fake_sysfs
from app.energy.meter import MeterUnavailable
from app.energy.rapl import RaplMeter


def test_sums_package_zones_only(tmp_path: Path) -> None:
    package0, package1 = fake_sysfs.rapl(tmp_path, [10_000_000, 50_000_000])
    with RaplMeter(tmp_path, poll_s=0) as meter:
        assert (meter.source, meter.rail) == ("rapl", "package-0+package-1")
        assert "not DRAM" in meter.total
        fake_sysfs.write(package0 / "energy_uj", 12_500_000)
        fake_sysfs.write(package1 / "energy_uj", 51_000_000)
        fake_sysfs.write(tmp_path / fake_sysfs.POWERCAP / "intel-rapl:0:2" / "energy_uj", 999)
        assert meter.rail_joules() == pytest.approx({"package-0": 2.5, "package-1": 1.0})
        assert meter.joules() == pytest.approx(3.5)


def test_counter_wrap_is_added_across_the_range(tmp_path: Path) -> None:
    (package0,) = fake_sysfs.rapl(tmp_path, [fake_sysfs.RAPL_MAX_RANGE_UJ - 1_000_000])
    with RaplMeter(tmp_path, poll_s=0) as meter:
        with meter.measure() as block:
            fake_sysfs.write(package0 / "energy_uj", 2_500_000)  # wrapped past the maximum
        assert block.joules == pytest.approx(1.0 + 2.5)
        fake_sysfs.write(package0 / "energy_uj", 4_500_000)
        assert meter.joules() == pytest.approx(3.5 + 2.0)


def test_root_only_counter_is_reported_and_detection_falls_back(tmp_path: Path) -> None:
    (package0,) = fake_sysfs.rapl(tmp_path, [10_000_000])
    (package0 / "energy_uj").chmod(0o000)
    script = (
        "import json, sys\n"
        "from app.energy import RaplMeter, MeterUnavailable, choose_meter\n"
        "try:\n"
        "    RaplMeter(sys.argv[1], poll_s=0)\n"
        "    direct = None\n"
        "except MeterUnavailable as error:\n"
        "    direct = str(error)\n"
        "meter, skipped = choose_meter(None, sys.argv[1])\n"
        "print(json.dumps({'direct': direct, 'chosen': meter.source, 'skipped': skipped}))\n"
    )
    done = fake_sysfs.run_unprivileged(script, str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["direct"] is not None
    assert "root only" in result["direct"] and str(package0 / "energy_uj") in result["direct"]
    assert result["chosen"] == "estimate"
    assert result["skipped"]["rapl"] == result["direct"]


def test_no_package_zone_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        RaplMeter(tmp_path, poll_s=0)
