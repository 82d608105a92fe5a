"""``biofo energy probe``: which meter this machine gets, and what it reads right now."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from app.energy.detect import choose_meter

_TICK_S = 0.1


def probe(
    seconds: float = 5.0,
    progress: bool = False,
    preferred: str | None = None,
    sysfs_root: str | Path = "/",
) -> dict:
    """Average power over ``seconds`` of whatever the machine is doing, per rail and in total.

    ``watts`` is the meter's total; ``rails`` maps each rail to its own average. The estimate
    backend counts this thread's CPU time, and the probe only waits, so it reads close to zero:
    there is no sensor behind it.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    meter, skipped = choose_meter(preferred, sysfs_root)
    try:
        rails_before = meter.rail_joules()
        with meter.measure() as block:
            deadline = time.monotonic() + seconds
            with tqdm(total=round(seconds / _TICK_S), disable=not progress, unit="tick") as bar:
                while (left := deadline - time.monotonic()) > 0:
                    time.sleep(min(_TICK_S, left))
                    bar.update(1)
        rails_after = meter.rail_joules()
    finally:
        meter.close()
    return {
        "source": block.source,
        "rail": block.rail,
        "total": block.total,
        "seconds": block.duration_s,
        "joules": block.joules,
        "watts": block.joules / block.duration_s,
        "rails": {
            name: (rails_after[name] - rails_before[name]) / block.duration_s
            for name in rails_after
        },
        "skipped": skipped,
    }
