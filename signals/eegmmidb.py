"""Seizure-free scalp EEG: PhysioNet's EEG Motor Movement/Imagery Database (eegmmidb).

Files are ``SNNN/SNNNRMM.edf`` under ``eeg-healthy/``: 64 referential channels named as the EDF
writes them (``Fp1.``, ``T7..``), 160 Hz. ``R01``/``R02`` are 1-minute eyes-open/eyes-closed
baselines, ``R03`` and later are motor task runs with movement, blink and muscle artefacts.
No seizure anywhere, so every window's reference class is ``background``.
"""

from __future__ import annotations

import re
from pathlib import Path

from signals.datafiles import DataMissingError, eeg_healthy_dir

_RUN = re.compile(r"^(S\d{3})(R\d{2})\.edf$", re.IGNORECASE)


def is_run(path: str | Path) -> bool:
    """True for an eegmmidb file name (``S001R03.edf``)."""
    return _RUN.match(Path(path).name) is not None


def subject_of(path: str | Path) -> str:
    """``.../S001R03.edf`` -> ``S001``."""
    match = _RUN.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not an eegmmidb run (SNNNRMM.edf)")
    return match.group(1).upper()


def run_of(path: str | Path) -> str:
    """``.../S001R03.edf`` -> ``R03``."""
    subject_of(path)
    return _RUN.match(Path(path).name).group(2).upper()  # type: ignore[union-attr]


def is_task_run(path: str | Path) -> bool:
    """Motor task runs (R03 on) carry movement artefacts; R01 and R02 are resting baselines."""
    return int(run_of(path)[1:]) >= 3


def staged_runs() -> list[Path]:
    """Every staged run, sorted by subject and run."""
    runs = sorted(path for path in eeg_healthy_dir().glob("S*/S*R*.edf") if is_run(path))
    if not runs:
        raise DataMissingError(f"no eegmmidb runs (SNNN/SNNNRMM.edf) under {eeg_healthy_dir()}")
    return runs
