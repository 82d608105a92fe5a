"""Energy meters: cumulative joules since start, the source's name, the rail, and what "total"
covers.

    meter = detect_meter()            # or detect_meter("rapl"); BIOFO_ENERGY picks one too
    with meter.measure() as m:
        learner.learn(x, y)
    m.joules, m.duration_s, m.source, m.rail, m.total
    meter.close()

Backends, one module each: ``ina3221`` (Jetson power rails, JetPack 4 IIO and JetPack 5/6
hwmon), ``nvml`` (NVIDIA GPUs), ``rapl`` (Intel CPU packages) and ``estimate`` (CPU time times
configured watts, when nothing can be read). ``detect`` chooses; ``probe`` is ``biofo energy
probe``.
"""

from __future__ import annotations

from app.energy.detect import SOURCES, choose_meter, detect_meter
from app.energy.estimate import DEFAULT_ESTIMATE_WATTS, EstimateMeter
from app.energy.ina3221 import Ina3221Meter
from app.energy.meter import Measurement, Meter, MeterUnavailable
from app.energy.nvml import NvmlMeter
from app.energy.probe import probe
from app.energy.rapl import RaplMeter

__all__ = [
    "DEFAULT_ESTIMATE_WATTS",
    "SOURCES",
    "EstimateMeter",
    "Ina3221Meter",
    "Measurement",
    "Meter",
    "MeterUnavailable",
    "NvmlMeter",
    "RaplMeter",
    "choose_meter",
    "detect_meter",
    "probe",
]
