"""Fake sysfs trees with the real layouts of the Jetson power monitors and Intel RAPL.

File names, folder names and units follow the kernel drivers (``ina3221x`` IIO on JetPack 4,
``ina3221`` hwmon on JetPack 5/6, powercap ``intel-rapl``); the readings are plausible values
chosen for the tests, not recordings. Tests change a reading by writing the file again, as the
driver would between two reads.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

IIO = "sys/bus/i2c/drivers/ina3221x"
HWMON = "sys/bus/i2c/drivers/ina3221"
POWERCAP = "sys/class/powercap"
RAPL_MAX_RANGE_UJ = 262143328850
REPO = Path(__file__).resolve().parents[1]
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def _driver_files(driver: Path) -> None:
    for name in ("bind", "unbind", "uevent"):
        write(driver / name, "")


def set_iio_power(device: Path, index: int, voltage_mv: int, current_ma: int) -> None:
    write(device / f"in_voltage{index}_input", voltage_mv)
    write(device / f"in_current{index}_input", current_ma)
    write(device / f"in_power{index}_input", voltage_mv * current_ma // 1000)


def jetson_nano(root: Path) -> Path:
    """Jetson Nano, JetPack 4: one monitor at 6-0040, rails POM_5V_IN (total), GPU, CPU."""
    _driver_files(root / IIO)
    device = root / IIO / "6-0040" / "iio:device0"
    write(device / "name", "ina3221x")
    for index, (rail, current_ma) in enumerate(
        [("POM_5V_IN", 620), ("POM_5V_GPU", 16), ("POM_5V_CPU", 55)]
    ):
        write(device / f"rail_name_{index}", rail)
        set_iio_power(device, index, 5000, current_ma)
        write(device / f"warn_current_limit_{index}", "32760 ma")
        write(device / f"crit_current_limit_{index}", "32760 ma")
    write(device / "running_mode", 1)
    return device


def set_hwmon(device: Path, index: int, voltage_mv: int, current_ma: int) -> None:
    write(device / f"in{index}_input", voltage_mv)
    write(device / f"curr{index}_input", current_ma)


def _hwmon_device(root: Path, bus_address: str, hwmon: str, rails: list[tuple[str, int, int]]
                  ) -> Path:
    device = root / HWMON / bus_address / "hwmon" / hwmon
    write(device / "name", "ina3221")
    for index, (label, voltage_mv, current_ma) in enumerate(rails, start=1):
        write(device / f"in{index}_label", label)
        write(device / f"in{index}_enable", 1)
        set_hwmon(device, index, voltage_mv, current_ma)
        write(device / f"curr{index}_max", 32760)
        write(device / f"curr{index}_crit", 32760)
        write(device / f"curr{index}_max_alarm", 0)
        write(device / f"curr{index}_crit_alarm", 0)
        write(device / f"in{index + 3}_input", current_ma // 200)  # shunt voltage, no label
    write(device / "in7_label", "sum of shunt voltages")
    write(device / "in7_input", sum(current_ma for _, _, current_ma in rails) // 200)
    write(device / "curr4_crit", 65528)
    write(device / "curr4_crit_alarm", 0)
    write(device / "samples", 512)
    write(device / "update_interval", 140)
    return device


def orin_nano(root: Path) -> Path:
    """Jetson Orin Nano, JetPack 6: one monitor, VDD_IN (total), VDD_CPU_GPU_CV, VDD_SOC."""
    _driver_files(root / HWMON)
    return _hwmon_device(
        root, "1-0040", "hwmon3",
        [("VDD_IN", 5000, 1540), ("VDD_CPU_GPU_CV", 5000, 112), ("VDD_SOC", 5000, 216)],
    )


def agx_orin(root: Path) -> list[Path]:
    """Jetson AGX Orin, JetPack 6: two monitors, no VDD_IN, unconnected channels labelled NC."""
    _driver_files(root / HWMON)
    return [
        _hwmon_device(
            root, "1-0040", "hwmon1",
            [("VDD_GPU_SOC", 19960, 400), ("VDD_CPU_CV", 19960, 100), ("VIN_SYS_5V0", 5000, 500)],
        ),
        _hwmon_device(
            root, "1-0041", "hwmon2",
            [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 80), ("NC", 0, 0)],
        ),
    ]


def rapl(root: Path, packages: list[int]) -> list[Path]:
    """Intel RAPL: one ``package-K`` zone per counter value given (µJ), each with core, uncore
    and dram sub-zones, plus a ``psys`` zone that must not be counted."""
    powercap = root / POWERCAP
    write(powercap / "intel-rapl" / "enabled", 1)
    zones = []
    for k, energy_uj in enumerate(packages):
        zone = powercap / f"intel-rapl:{k}"
        write(zone / "name", f"package-{k}")
        write(zone / "energy_uj", energy_uj)
        write(zone / "max_energy_range_uj", RAPL_MAX_RANGE_UJ)
        write(zone / "enabled", 1)
        write(zone / "constraint_0_name", "long_term")
        write(zone / "constraint_0_power_limit_uw", 65000000)
        for j, sub in enumerate(("core", "uncore", "dram")):
            write(powercap / f"intel-rapl:{k}:{j}" / "name", sub)
            write(powercap / f"intel-rapl:{k}:{j}" / "energy_uj", 123456789)
            write(powercap / f"intel-rapl:{k}:{j}" / "max_energy_range_uj", RAPL_MAX_RANGE_UJ)
        zones.append(zone)
    psys = powercap / f"intel-rapl:{len(packages)}"
    write(psys / "name", "psys")
    write(psys / "energy_uj", 987654321)
    write(psys / "max_energy_range_uj", RAPL_MAX_RANGE_UJ)
    return zones


def nvidia_gpu(root: Path) -> Path:
    """What the NVIDIA driver shows in procfs for one GPU."""
    gpu = root / "proc/driver/nvidia/gpus/0000:01:00.0"
    write(gpu / "information", "Model: \t\t NVIDIA RTX A2000")
    return gpu


def _without_file_permission_override() -> None:
    # Root reads any file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; dropping both from the
    # bounding set before exec gives the child the permission checks an unprivileged user gets.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_unprivileged(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script that imports the project, with the file permissions a daemon running
    as an ordinary user sees (so a mode-000 file is unreadable even when the tests run as root)."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, timeout=60,
        preexec_fn=_without_file_permission_override if os.geteuid() == 0 else None,
    )
