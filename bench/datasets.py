"""Feature tables for the benchmarks, cached on disk.

Tables come from ``signals.ecg_features.beat_table`` (reference R peaks) and
``signals.eeg_features.window_table`` (staged CHB-MIT crops): the exact features the daemon
computes. Computing all 44 MIT-BIH records takes minutes, so each table is kept as an ``.npz``
under ``BIOFO_CACHE`` (default ``~/.cache/biofo``), keyed by a hash of the feature code and the
data files, so a change to either recomputes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from signals import ecg_features, eeg_features
from signals.chbmit import read_crops
from signals.datafiles import require
from signals.ecg_features import DEFAULT_WINDOW, BeatTable, BeatWindow, beat_table
from signals.eeg_features import FeatureConfig, WindowTable, window_table

_CODE = (ecg_features.__file__, eeg_features.__file__)


def cache_dir() -> Path:
    folder = Path(os.environ.get("BIOFO_CACHE", Path.home() / ".cache" / "biofo")).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _key(name: str, files: Sequence[Path]) -> Path:
    digest = hashlib.sha256()
    for path in [*map(Path, _CODE), *files]:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return cache_dir() / f"{name}-{digest.hexdigest()[:16]}.npz"


def _variant(name: str, config: object, default: object) -> str:
    """Cache name of a table computed with a non-default window or feature configuration."""
    if config == default:
        return name
    return f"{name}-{hashlib.sha256(repr(config).encode()).hexdigest()[:8]}"


def beats(record: str, window: BeatWindow = DEFAULT_WINDOW) -> BeatTable:
    """``beat_table(record, window)``, from the cache when it is there."""
    files = [require(f"mitdb/{record}.{ext}") for ext in ("hea", "dat", "atr")]
    path = _key(_variant(f"mitdb-{record}", window, DEFAULT_WINDOW), files)
    if path.exists():
        with np.load(path) as stored:
            return BeatTable(**{field: stored[field] for field in BeatTable._fields})
    table = beat_table(record, window)
    np.savez(path, **table._asdict())
    return table


def beats_of(records: Sequence[str], window: BeatWindow = DEFAULT_WINDOW) -> BeatTable:
    """The beats of several records, concatenated in the given order."""
    parts = [beats(record, window) for record in records]
    return BeatTable(*(np.concatenate([getattr(p, f) for p in parts]) for f in BeatTable._fields))


def _patient_windows(patient: str, config: FeatureConfig) -> WindowTable:
    name = _variant(f"chbmit-{patient}", config, FeatureConfig())
    path = _key(name, [require("chbmit/crops.csv")])
    fields = WindowTable.__dataclass_fields__
    if path.exists():
        with np.load(path) as stored:
            return WindowTable(**{name: stored[name] for name in fields})
    table = window_table([patient], config)
    np.savez(path, **{name: getattr(table, name) for name in fields})
    return table


def crop_windows(
    patients: Sequence[str] | None = None, config: FeatureConfig | None = None
) -> WindowTable:
    """``window_table`` of the staged crops of these patients (default: all) with these features
    (default: the daemon's), patient by patient from the cache when it is there."""
    names = patients if patients is not None else sorted({row.patient for row in read_crops()})
    parts = [_patient_windows(name, config or FeatureConfig()) for name in names]
    return WindowTable(
        **{name: np.concatenate([getattr(p, name) for p in parts])
           for name in WindowTable.__dataclass_fields__}
    )
