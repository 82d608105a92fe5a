"""Choosing the meter: the one named by ``BIOFO_ENERGY`` (or the caller), else the best available.

Automatic order: Jetson INA3221 (hwmon, then IIO) > NVML > RAPL > estimate. The on-module
monitors see the whole Jetson module, the widest view. NVML sees only the GPUs and RAPL only the
CPU packages; NVML comes first because a CUDA engine spends its energy there and NVML needs no
root. On a GPU machine whose learner runs on the CPU, set ``BIOFO_ENERGY=rapl``. The estimate
always works.

A named meter that cannot run is an error, not a silent fallback: whoever named it expects its
numbers. The reasons other meters were passed over are returned by ``choose_meter`` (``biofo
energy probe`` prints them) and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from app.energy.estimate import EstimateMeter
from app.energy.ina3221 import DEFAULT_SAMPLE_HZ, hwmon_meter, iio_meter
from app.energy.meter import Meter, MeterUnavailable
from app.energy.nvml import NvmlMeter
from app.energy.rapl import RaplMeter

log = logging.getLogger(__name__)

SOURCES = ("ina3221-iio", "ina3221-hwmon", "nvml", "rapl", "estimate")
PREFERENCE_VARIABLE = "BIOFO_ENERGY"
SAMPLE_HZ_VARIABLE = "BIOFO_ENERGY_HZ"
CHOICES: dict[str, tuple[str, ...]] = {
    "auto": ("ina3221-hwmon", "ina3221-iio", "nvml", "rapl", "estimate"),
    "ina3221": ("ina3221-hwmon", "ina3221-iio"),
    **{source: (source,) for source in SOURCES},
}


def configured_sample_hz() -> float:
    text = os.environ.get(SAMPLE_HZ_VARIABLE)
    if text is None:
        return DEFAULT_SAMPLE_HZ
    try:
        hz = float(text)
    except ValueError:
        hz = float("nan")
    if not hz > 0:
        raise ValueError(
            f"{SAMPLE_HZ_VARIABLE} must be a positive sampling rate in Hz, got {text!r}"
        )
    return hz


def _builders(root: Path, sample_hz: float) -> dict[str, Callable[[], Meter]]:
    return {
        "ina3221-hwmon": lambda: hwmon_meter(root, sample_hz),
        "ina3221-iio": lambda: iio_meter(root, sample_hz),
        "nvml": lambda: NvmlMeter(root),
        "rapl": lambda: RaplMeter(root),
        "estimate": EstimateMeter,
    }


def choose_meter(
    preferred: str | None = None, sysfs_root: str | Path = "/", sample_hz: float | None = None
) -> tuple[Meter, dict[str, str]]:
    """The meter, and for each backend tried before it, why it was not used.

    ``preferred`` (else ``BIOFO_ENERGY``, else ``auto``) is a source name, ``ina3221`` (either
    Jetson driver) or ``auto``. ``sysfs_root`` is the folder holding ``sys/`` and ``proc/``; tests
    point it at a fake tree.
    """
    name = preferred or os.environ.get(PREFERENCE_VARIABLE) or "auto"
    if name not in CHOICES:
        raise ValueError(
            f"unknown energy meter {name!r} ({PREFERENCE_VARIABLE}); choose one of "
            f"{', '.join(CHOICES)}"
        )
    hz = configured_sample_hz() if sample_hz is None else sample_hz
    builders = _builders(Path(sysfs_root), hz)
    skipped: dict[str, str] = {}
    for source in CHOICES[name]:
        try:
            meter = builders[source]()
        except MeterUnavailable as error:
            skipped[source] = str(error)
            continue
        log.info("energy meter: %s (%s); passed over: %s", meter.source, meter.rail, skipped)
        return meter, skipped
    raise MeterUnavailable(f"energy meter {name!r} cannot run here: " + "; ".join(
        f"{source}: {reason}" for source, reason in skipped.items()
    ))


def detect_meter(
    preferred: str | None = None, sysfs_root: str | Path = "/", sample_hz: float | None = None
) -> Meter:
    """The meter ``choose_meter`` picks. Close it (``meter.close()``) when done."""
    return choose_meter(preferred, sysfs_root, sample_hz)[0]
