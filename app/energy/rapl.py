"""Intel RAPL package energy from the powercap sysfs interface.

Each top-level zone ``sys/class/powercap/intel-rapl:<K>`` whose ``name`` starts with
``package`` is one CPU socket; its ``energy_uj`` is a cumulative counter in microjoules that
wraps to zero after ``max_energy_range_uj``. Sub-zones (``intel-rapl:<K>:<J>``: core, uncore,
dram) and ``psys`` are not summed in: the figure is the CPU packages only.

A background poll keeps the wrap-around unambiguous: at most one wrap may happen between two
readings, and the smallest range seen (~262 kJ) lasts over 20 minutes even at 200 W.

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694, "PLATYPUS").
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.energy.meter import Clock, Meter, MeterUnavailable, Poller

POWERCAP = "sys/class/powercap"
POLL_S = 10.0
_TOP_LEVEL_ZONE = re.compile(r"intel-rapl:\d+")


@dataclass(frozen=True)
class Zone:
    name: str
    energy_uj: Path
    max_range_uj: int

    def read_uj(self) -> int:
        try:
            return int(self.energy_uj.read_text())
        except PermissionError as error:
            raise MeterUnavailable(
                f"RAPL counter {self.energy_uj} is readable by root only (Linux >= 5.10, "
                f"CVE-2020-8694) and this process runs as uid {os.getuid()}. Run as root, or "
                f"allow reading: 'sudo chmod o+r {self.energy_uj}' (until reboot), or add "
                f"'mode class/powercap/{self.energy_uj.parent.name}/energy_uj = 0444' to "
                f"/etc/sysfs.conf (package sysfsutils)"
            ) from error


def package_zones(root: Path) -> list[Zone]:
    zones = []
    for zone_dir in sorted((root / POWERCAP).glob("intel-rapl:*")):
        if not _TOP_LEVEL_ZONE.fullmatch(zone_dir.name):
            continue
        name = (zone_dir / "name").read_text().strip()
        if name.startswith("package"):
            max_range = int((zone_dir / "max_energy_range_uj").read_text())
            zones.append(Zone(name, zone_dir / "energy_uj", max_range))
    return zones


class RaplMeter(Meter):
    source = "rapl"

    def __init__(
        self, root: str | Path = "/", poll_s: float = POLL_S, clock: Clock = time.monotonic
    ) -> None:
        """``root`` holds ``sys/``; ``poll_s`` <= 0 means no background poll (tests drive the
        counters themselves)."""
        super().__init__(clock)
        root = Path(root)
        self._zones = package_zones(root)
        if not self._zones:
            raise MeterUnavailable(f"no RAPL package zone under {root / POWERCAP}")
        self.rail = "+".join(zone.name for zone in self._zones)
        self.total = (
            f"CPU package energy of {self.rail} (cores, caches, uncore, integrated graphics; not "
            f"DRAM, disks or the rest of the machine) from the RAPL counter; whole-package "
            f"energy, so a block's joules include every other process running meanwhile"
        )
        self._lock = threading.Lock()
        self._last_uj = [zone.read_uj() for zone in self._zones]
        self._energy_uj = [0] * len(self._zones)
        self._poller = Poller(self.update, poll_s, name="energy-rapl") if poll_s > 0 else None

    def update(self) -> None:
        """Read the counters and add what they advanced, across a wrap if there was one."""
        with self._lock:
            for i, zone in enumerate(self._zones):
                now = zone.read_uj()
                last = self._last_uj[i]
                self._energy_uj[i] += now - last if now >= last else zone.max_range_uj - last + now
                self._last_uj[i] = now

    def rail_joules(self) -> dict[str, float]:
        self.update()
        with self._lock:
            pairs = zip(self._zones, self._energy_uj, strict=True)
            return {zone.name: uj / 1e6 for zone, uj in pairs}

    def joules(self) -> float:
        return sum(self.rail_joules().values())

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
