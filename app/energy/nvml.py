"""NVIDIA GPU energy from NVML's total-energy counter (``nvidia-ml-py``, the ``nvml`` extra).

``nvmlDeviceGetTotalEnergyConsumption`` returns millijoules since the driver was loaded, on Volta
and newer GPUs. The counter updates every 20-100 ms, so blocks shorter than about a second read
coarsely. Jetson's integrated GPU has no NVML: the INA3221 backend measures there.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

from app.energy.meter import Clock, Meter, MeterUnavailable

GPU_PROC_DIR = "proc/driver/nvidia/gpus"


def _gpus_present(root: Path) -> bool:
    gpus = root / GPU_PROC_DIR
    return gpus.is_dir() and any(gpus.iterdir())


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as error:
        raise MeterUnavailable(
            "an NVIDIA GPU is present but nvidia-ml-py is not installed: pip install 'biofo[nvml]'"
        ) from error


class NvmlMeter(Meter):
    source = "nvml"

    def __init__(self, root: str | Path = "/", clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        root = Path(root)
        if not _gpus_present(root):
            raise MeterUnavailable(f"no NVIDIA GPU driver found (nothing in {root / GPU_PROC_DIR})")
        self._nvml = _import_pynvml()
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as error:
            raise MeterUnavailable(f"NVML did not start: {error}") from error
        try:
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._start_mj = self._read_mj()
        except self._nvml.NVMLError as error:
            self._nvml.nvmlShutdown()
            raise MeterUnavailable(
                f"NVML has no total-energy counter here (it needs a Volta or newer GPU): {error}"
            ) from error
        if count == 0:
            self._nvml.nvmlShutdown()
            raise MeterUnavailable("NVML started but reports no GPU")
        self._open = True
        self._names = [f"gpu{i}" for i in range(count)]
        self.rail = "+".join(self._names)
        self.total = (
            f"board energy of GPU(s) {self.rail} from NVML's total-energy counter (updated every "
            f"20-100 ms); not the CPU, memory or the rest of the machine; whole-GPU energy, so a "
            f"block's joules include other processes using the GPU meanwhile"
        )

    def _read_mj(self) -> list[int]:
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    def rail_joules(self) -> dict[str, float]:
        now = self._read_mj()
        return {n: (b - a) / 1e3 for n, a, b in zip(self._names, self._start_mj, now, strict=True)}

    def joules(self) -> float:
        return sum(self.rail_joules().values())

    def close(self) -> None:
        if self._open:
            self._nvml.nvmlShutdown()
            self._open = False
