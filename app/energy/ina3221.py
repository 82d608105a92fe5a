"""Jetson power rails from the on-module INA3221 monitors, integrated in a sampling thread.

Two kernel drivers expose the same chip:

- JetPack 4 (L4T R32), IIO driver ``ina3221x``:
  ``sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device<K>/in_power<N>_input`` in mW, named by
  ``rail_name_<N>``.
- JetPack 5/6 (L4T R35/R36), hwmon driver ``ina3221``:
  ``sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon<K>/in<N>_input`` (mV) and
  ``curr<N>_input`` (mA), named by ``in<N>_label``. The hwmon index changes between boards and
  boots, so it is globbed. Channel 7 ("sum of shunt voltages") and unconnected channels (labels
  containing "NC") are not rails.

"Total" is the module-input rail (``POM_5V_IN`` on the Nano, ``VDD_IN`` on Orin Nano/NX and
Xavier NX) when the board has one. AGX Orin has none, so there the total is the sum of the rails,
which covers less than the board draws from the wall. Either way it is whole-module power: the
joules of a measured block include everything else the module did meanwhile.

Energy is the trapezoid rule over samples taken at ``sample_hz`` by a background thread, plus one
sample taken whenever a reading is asked for, so a block's boundaries are sampled exactly.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from app.energy.meter import Clock, Meter, MeterUnavailable, Poller

IIO_DRIVER = "sys/bus/i2c/drivers/ina3221x"
HWMON_DRIVER = "sys/bus/i2c/drivers/ina3221"
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")
DEFAULT_SAMPLE_HZ = 20.0
SHUNT_SUM_LABEL = "sum of shunt voltages"


def _read_int(path: Path) -> int:
    # Some Jetson sysfs values carry a unit ("32760 ma"); the number comes first.
    return int(path.read_text().split()[0])


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: either a power file (mW) or a voltage (mV) and current (mA) pair."""

    name: str
    power_mw: Path | None = None
    voltage_mv: Path | None = None
    current_ma: Path | None = None

    def watts(self) -> float:
        if self.power_mw is not None:
            return _read_int(self.power_mw) / 1e3
        assert self.voltage_mv is not None and self.current_ma is not None
        return _read_int(self.voltage_mv) * _read_int(self.current_ma) / 1e6


def _device_dirs(root: Path, driver: str, pattern: str) -> list[Path]:
    return sorted(p for p in (root / driver).glob(pattern) if p.is_dir())


def iio_rails(root: Path) -> list[Rail]:
    """Rails of every ``ina3221x`` IIO device (JetPack 4)."""
    rails = []
    # TX2-era boards name the folder iio_device instead of iio:device<K>.
    dirs = _device_dirs(root, IIO_DRIVER, "*/iio:device*") + _device_dirs(
        root, IIO_DRIVER, "*/iio_device"
    )
    for device in dirs:
        for name_file in sorted(device.glob("rail_name_*")):
            index = name_file.name.removeprefix("rail_name_")
            power = device / f"in_power{index}_input"
            if power.exists():
                rails.append(Rail(name_file.read_text().strip(), power_mw=power))
    return rails


def hwmon_rails(root: Path) -> list[Rail]:
    """Rails of every ``ina3221`` hwmon device (JetPack 5 and 6)."""
    rails = []
    for device in _device_dirs(root, HWMON_DRIVER, "*/hwmon/hwmon*"):
        for label_file in sorted(device.glob("in*_label")):
            index = label_file.name.removeprefix("in").removesuffix("_label")
            label = label_file.read_text().strip()
            if label == SHUNT_SUM_LABEL or "NC" in label:
                continue
            enable = device / f"in{index}_enable"
            if enable.exists() and enable.read_text().strip() == "0":
                continue
            voltage, current = device / f"in{index}_input", device / f"curr{index}_input"
            if voltage.exists() and current.exists():
                rails.append(Rail(label, voltage_mv=voltage, current_ma=current))
    return rails


def _unique(rails: list[Rail]) -> list[Rail]:
    # Two monitors could report the same label; keep both, told apart by position.
    seen: dict[str, int] = {}
    unique = []
    for rail in rails:
        count = seen.get(rail.name, 0)
        seen[rail.name] = count + 1
        unique.append(rail if count == 0 else replace(rail, name=f"{rail.name}#{count + 1}"))
    return unique


class Ina3221Meter(Meter):
    def __init__(
        self,
        source: str,
        rails: list[Rail],
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Clock = time.monotonic,
    ) -> None:
        """``sample_hz`` <= 0 means no background thread: samples are taken only when a reading
        is asked for (exact for tests that drive the files and the clock themselves)."""
        super().__init__(clock)
        self.source = source
        self._rails = _unique(rails)
        names = [rail.name for rail in self._rails]
        self._total_rail = next((name for name in TOTAL_RAILS if name in names), None)
        sampling = f"{sample_hz:g} Hz" if sample_hz > 0 else "each reading"
        attribution = (
            f"whole-module power, so a block's joules include everything else running meanwhile; "
            f"sampled at {sampling}, trapezoid rule"
        )
        if self._total_rail is not None:
            self.rail = self._total_rail
            self.total = (
                f"{self._total_rail}: module input power (CPU, GPU, memory and SoC of the whole "
                f"module; not the carrier board or power supply); {attribution}"
            )
        else:
            self.rail = "+".join(names)
            self.total = (
                f"sum of rails {', '.join(names)}: this board has no module-input rail, and the "
                f"sum covers less than the board draws (one AGX Orin deployment measured wall "
                f"power at about 2.28 x this sum); {attribution}"
            )
        self._lock = threading.Lock()
        self._energy = {name: 0.0 for name in names}
        self._last_t = self._clock()
        self._last_w = self._read_watts()
        self.samples = 1
        self._poller = (
            Poller(self.sample, 1.0 / sample_hz, name=f"energy-{source}") if sample_hz > 0 else None
        )

    def _read_watts(self) -> dict[str, float]:
        try:
            return {rail.name: rail.watts() for rail in self._rails}
        except PermissionError as error:
            raise MeterUnavailable(
                f"{self.source}: {error.filename} is not readable by uid {os.getuid()}; make the "
                f"power-monitor files readable (sudo chmod a+r on them, until reboot) or run as "
                f"root"
            ) from error

    def sample(self) -> None:
        """Read every rail now and add the trapezoid since the previous sample."""
        with self._lock:
            now, watts = self._clock(), self._read_watts()
            dt = now - self._last_t
            for name, power in watts.items():
                self._energy[name] += 0.5 * (power + self._last_w[name]) * dt
            self._last_t, self._last_w = now, watts
            self.samples += 1

    def rail_joules(self) -> dict[str, float]:
        self.sample()
        with self._lock:
            return dict(self._energy)

    def joules(self) -> float:
        energy = self.rail_joules()
        if self._total_rail is not None:
            return energy[self._total_rail]
        return sum(energy.values())

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None


def iio_meter(
    root: str | Path = "/", sample_hz: float = DEFAULT_SAMPLE_HZ, clock: Clock = time.monotonic
) -> Ina3221Meter:
    rails = iio_rails(Path(root))
    if not rails:
        raise MeterUnavailable(f"no INA3221 IIO rails (JetPack 4) under {Path(root, IIO_DRIVER)}")
    return Ina3221Meter("ina3221-iio", rails, sample_hz, clock)


def hwmon_meter(
    root: str | Path = "/", sample_hz: float = DEFAULT_SAMPLE_HZ, clock: Clock = time.monotonic
) -> Ina3221Meter:
    rails = hwmon_rails(Path(root))
    if not rails:
        raise MeterUnavailable(
            f"no INA3221 hwmon rails (JetPack 5/6) under {Path(root, HWMON_DRIVER)}"
        )
    return Ina3221Meter("ina3221-hwmon", rails, sample_hz, clock)
