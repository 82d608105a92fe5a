"""A real recording turned into the requests a bedside device would send.

Each request body is one ``POST /v1/windows`` segment; ``start`` is seconds since the stream
began (the recording's first sample), samples are physical values at the recording's own rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from signals import chbmit
from signals.eeg_features import EEG_CLASSES, EEG_WINDOW_S, window_class, window_ictal_fraction

EEG_SEGMENT_S = 2.0


def segment_bounds(n_samples: int, fs: float, segment_s: float) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` sample ranges of consecutive segments of ``segment_s`` seconds covering
    ``n_samples``; the last one may be shorter. Boundaries are rounded from exact times, so
    segments of a non-integer number of samples do not drift."""
    if segment_s <= 0:
        raise ValueError(f"segment_s must be positive, not {segment_s}")
    index = 0
    lo = 0
    while lo < n_samples:
        index += 1
        hi = min(n_samples, int(round(index * segment_s * fs)))
        if hi > lo:
            yield lo, hi
        lo = hi


def eeg_requests(
    edf_path: str | Path, segment_s: float = EEG_SEGMENT_S, patient_id: str | None = None
) -> Iterator[dict]:
    """``POST /v1/windows`` bodies for a CHB-MIT EDF file, in order.

    Channel names are the EDF header's own (the duplicate ``T8-P8`` included), as a device
    would send them; the daemon maps them onto the canonical montage."""
    recording = chbmit.read_edf(edf_path)
    patient = patient_id or chbmit.patient_of(recording.path.name)
    for lo, hi in segment_bounds(recording.samples_uv.shape[1], recording.fs, segment_s):
        yield {
            "patient_id": patient,
            "modality": "eeg",
            "fs": recording.fs,
            "channels": list(recording.labels),
            "start": lo / recording.fs,
            "samples": recording.samples_uv[:, lo:hi].tolist(),
            "units": "uV",
        }


@lru_cache(maxsize=64)
def _ictal_intervals(edf_path: str) -> tuple[chbmit.Interval, ...]:
    return chbmit.ictal_intervals(edf_path)


def eeg_window_label(edf_path: str | Path, offset_s: float, window_s: float = EEG_WINDOW_S) -> str:
    """The class a clinician replaying ``edf_path`` gives the window starting ``offset_s`` into
    it: from crops.csv for a staged crop, from the patient's summary for a full-database file.
    Post-ictal windows are ``background``."""
    fraction = window_ictal_fraction(_ictal_intervals(str(edf_path)), offset_s, window_s)
    return EEG_CLASSES[window_class(fraction)]
