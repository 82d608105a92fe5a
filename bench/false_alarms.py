"""False alarms on seizure-free EEG (eegmmidb: healthy adults, referential, 160 Hz).

Each staged run is streamed as a device sends it (``signals.replay.eeg_requests``: 2 s segments,
the EDF's own channel names and rate) through the daemon's own extraction (``app.extraction
.extract``: referential -> double banana, 160 -> 256 Hz, features, stream state carried from
segment to segment), so the features a model scores here are the ones the daemon would compute.
A false alarm is a detection event under SzCORE event scoring (``signals.scoring``: events
closer than 90 s merged, longer than 300 s split) against a reference with no seizure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.modalities import MODALITIES, Segment, extract
from signals import eegmmidb
from signals.eeg_features import EEG_BANDS_HZ, EEG_WINDOW_S, FeatureConfig
from signals.replay import eeg_requests
from signals.scoring import event_scores, window_mask


@dataclass(frozen=True)
class SeizureFreeRun:
    name: str  # "S003R03"
    task: bool  # a motor task run (movement, blink and muscle artefacts), not a resting baseline
    duration_s: float  # signal streamed
    features: np.ndarray  # float32 (windows, dim), as the daemon extracted them


def stream_run(path: Any) -> SeizureFreeRun:
    """One run through the daemon's extractor, segment by segment."""
    state: dict[str, Any] | None = None
    features: list[np.ndarray] = []
    duration_s = 0.0
    for body in eeg_requests(path):
        samples = np.asarray(body["samples"], dtype=np.float64)
        eeg = MODALITIES["eeg"]
        samples = samples * eeg.units[body.get("units") or eeg.default_units]
        out = extract(state, Segment("eeg", samples, body["fs"], body["start"], tuple(body["channels"])))
        if out.missing_channels:
            raise ValueError(f"{path}: could not derive {', '.join(out.missing_channels)}")
        state = out.state
        features += [window.features for window in out.windows]
        duration_s += samples.shape[1] / body["fs"]
    return SeizureFreeRun(
        name=f"{eegmmidb.subject_of(path)}{eegmmidb.run_of(path)}",
        task=eegmmidb.is_task_run(path),
        duration_s=duration_s,
        features=np.stack(features).astype(np.float32),
    )


def staged_runs() -> list[SeizureFreeRun]:
    return [stream_run(path) for path in eegmmidb.staged_runs()]


def count(run: SeizureFreeRun, alarm: np.ndarray) -> int:
    """SzCORE false positives of per-window alarms over a run with no seizure."""
    if len(alarm) != len(run.features):
        raise ValueError(f"{run.name}: {len(alarm)} alarm flags for {len(run.features)} windows")
    reference = np.zeros(int(round(run.duration_s)), dtype=bool)
    hypothesis = window_mask(alarm, EEG_WINDOW_S, 1.0, run.duration_s)
    return event_scores(reference, hypothesis, 1.0).false_positives


def _figures(
    total: int, hours: float, runs: dict[str, int], alarm_windows: int, windows: int
) -> dict[str, Any]:
    return {
        "false_alarms": total,
        "hours": hours,
        "alarm_windows": alarm_windows,
        "windows": windows,
        "fp_per_hour": total / hours if hours else None,
        "fp_per_24h": total / hours * 24.0 if hours else None,
        "runs_with_alarms": runs,
    }


def summary(runs: list[SeizureFreeRun], alarms: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """False alarms per hour over the runs (each run's per-window alarms), which runs raised
    them, and how many windows were in alarm."""
    counts = {run.name: count(run, alarms[run.name]) for run in runs}
    return _figures(
        sum(counts.values()),
        sum(run.duration_s for run in runs) / 3600.0,
        {name: n for name, n in counts.items() if n},
        sum(int(np.sum(alarms[run.name])) for run in runs),
        sum(len(run.features) for run in runs),
    )


def pooled(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Summaries of several models over the same runs, pooled: all alarms over all hours streamed."""
    runs: dict[str, int] = {}
    for part in parts:
        for name, n in part["runs_with_alarms"].items():
            runs[name] = runs.get(name, 0) + n
    return _figures(
        sum(part["false_alarms"] for part in parts),
        sum(part["hours"] for part in parts),
        dict(sorted(runs.items())),
        sum(part["alarm_windows"] for part in parts),
        sum(part["windows"] for part in parts),
    )


def band_profile(features: np.ndarray) -> dict[str, Any]:
    """The mean spectrum of windows of band-power features (``signals.eeg_features``), over every
    channel: ``log_power`` per band, and ``relative``, each window's log powers minus their mean
    over the bands. The relative profile is the spectrum's shape, which a gain cannot change: it
    shows whether seizure-free EEG looks like the background a model was trained on."""
    config = FeatureConfig()
    current = features[:, -config.window_dim:].reshape(len(features), -1, len(EEG_BANDS_HZ)).astype(np.float64)
    relative = current - current.mean(axis=2, keepdims=True)
    return {
        "windows": len(features),
        "bands_hz": [list(band) for band in EEG_BANDS_HZ],
        "log_power": current.mean(axis=(0, 1)).round(3).tolist(),
        "relative": relative.mean(axis=(0, 1)).round(3).tolist(),
    }
