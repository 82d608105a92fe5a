"""The fallback when no power sensor can be read: CPU time times a configured power.

Formula, for a ``with meter.measure()`` block run in one thread:

    joules = (thread_cpu_s(end) - thread_cpu_s(start)) * watts

where ``thread_cpu_s`` is ``time.thread_time()`` (user + system CPU seconds of the calling
thread) and ``watts`` is ``BIOFO_ESTIMATE_WATTS``. The cumulative ``joules()`` uses the process's
CPU seconds since the meter started (``time.process_time()``, all threads) times the same watts.

The default, 0.7 W, is the power of one busy CPU core of the Jetson Orin family (Cortex-A78AE on
the T234 SoC), because thread CPU time counts one core's busy time. It is derived, not measured:
a stress test posted on NVIDIA's developer forum ("Maximum power consumption bounds for Orin
AGX") read about 5.6 W on the CPU rail with 8 cores busy in the AGX Orin 30 W mode (1.7 GHz),
i.e. about 0.7 W per core, and 1.6 W with 4 cores at 1.1 GHz (0.4 W per core); the Orin Nano runs
the same core at up to 1.5 GHz, so 0.7 W rounds up. It leaves out memory, the SoC, idle power and
everything on the board.

Limits: work handed to other threads (for example torch's intra-op pool) is not counted by the
thread formula; set ``torch.set_num_threads(1)`` or read the cumulative ``joules()``. Inside an
asyncio block it counts whatever else the event loop ran meanwhile.
"""

from __future__ import annotations

import os
import time

from app.energy.meter import Clock, Meter

DEFAULT_ESTIMATE_WATTS = 0.7
WATTS_VARIABLE = "BIOFO_ESTIMATE_WATTS"


def configured_watts() -> float:
    text = os.environ.get(WATTS_VARIABLE)
    if text is None:
        return DEFAULT_ESTIMATE_WATTS
    try:
        watts = float(text)
    except ValueError:
        watts = float("nan")
    if not watts > 0:
        raise ValueError(f"{WATTS_VARIABLE} must be a positive number of watts, got {text!r}")
    return watts


class EstimateMeter(Meter):
    source = "estimate"
    rail = "cpu-time"

    def __init__(self, watts: float | None = None, clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.watts = configured_watts() if watts is None else watts
        self.total = (
            f"estimate, not a measurement: CPU seconds of the measuring thread x {self.watts:g} W "
            f"({WATTS_VARIABLE}); no power sensor was read"
        )
        self._start_cpu_s = time.process_time()

    def joules(self) -> float:
        return (time.process_time() - self._start_cpu_s) * self.watts

    def _block_joules(self) -> float:
        return time.thread_time() * self.watts
