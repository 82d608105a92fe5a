"""A real recording turned into the requests a bedside device would send.

Each request body is one ``POST /v1/windows`` segment; ``start`` is seconds since the stream
began (the recording's first sample), samples are physical values at the recording's own rate.
``segment_bodies`` builds the bodies for any modality; ``ecg_requests`` and ``eeg_requests`` read
a recording and call it. The ``*_reference`` objects give the class a clinician replaying the
recording would assign, from the reference annotations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from signals import chbmit, eegmmidb
from signals.aami import AAMI_CLASSES
from signals.eeg_features import EEG_CLASSES, EEG_WINDOW_S, window_class, window_ictal_fraction
from signals.mitbih import read_record
from signals.qrs import MATCH_WINDOW_S

EEG_SEGMENT_S = 2.0
ECG_SEGMENT_S = 10.0


class ReferenceLabels(Protocol):
    def label_at(self, offset_s: float) -> str | None:
        """The reference class of the beat or window at ``offset_s``, None if there is none."""


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


def segment_bodies(
    samples: np.ndarray,
    fs: float,
    channels: Sequence[str],
    *,
    patient_id: str,
    modality: str,
    units: str,
    segment_s: float,
    minutes: float | None = None,
    r_peaks: np.ndarray | None = None,
) -> Iterator[dict]:
    """``POST /v1/windows`` bodies for consecutive segments of a (channels, n) signal.

    ``minutes`` stops after that much signal. ``r_peaks`` (sample indices in the whole signal)
    are split with the samples, each body getting its own relative to its first sample.
    """
    n_samples = samples.shape[1]
    if minutes is not None:
        n_samples = min(n_samples, int(round(minutes * 60.0 * fs)))
    for lo, hi in segment_bounds(n_samples, fs, segment_s):
        body = {
            "patient_id": patient_id,
            "modality": modality,
            "fs": fs,
            "channels": list(channels),
            "start": lo / fs,
            "samples": samples[:, lo:hi].tolist(),
            "units": units,
        }
        if r_peaks is not None:
            inside = r_peaks[(r_peaks >= lo) & (r_peaks < hi)]
            body["r_peaks"] = (inside - lo).astype(int).tolist()
        yield body


def ecg_requests(
    record_name: str,
    segment_s: float = ECG_SEGMENT_S,
    patient_id: str | None = None,
    minutes: float | None = None,
    include_r_peaks: bool = False,
) -> Iterator[dict]:
    """``POST /v1/windows`` bodies for a MIT-BIH record (mV, MLII first), in order.

    Devices normally leave R-peak detection to the daemon; ``include_r_peaks`` adds the
    reference beats' positions to each body instead."""
    record = read_record(record_name)
    return segment_bodies(
        record.signal,
        record.fs,
        record.leads,
        patient_id=patient_id or f"mitdb-{record_name}",
        modality="ecg",
        units="mV",
        segment_s=segment_s,
        minutes=minutes,
        r_peaks=record.beat_samples if include_r_peaks else None,
    )


class EcgReference:
    """The AAMI class of the reference beat nearest a time, if one is within 150 ms."""

    def __init__(self, record_name: str) -> None:
        record = read_record(record_name)
        self.times_s = record.beat_times_s
        self.classes = record.beat_classes

    def label_at(self, offset_s: float) -> str | None:
        k = int(np.searchsorted(self.times_s, offset_s))
        near = [i for i in (k - 1, k) if 0 <= i < self.times_s.size]
        if not near:
            return None
        best = min(near, key=lambda i: abs(self.times_s[i] - offset_s))
        if abs(self.times_s[best] - offset_s) > MATCH_WINDOW_S:
            return None
        return AAMI_CLASSES[int(self.classes[best])]


def ecg_reference(record_name: str) -> EcgReference:
    return EcgReference(record_name)


def eeg_requests(
    edf_path: str | Path,
    segment_s: float = EEG_SEGMENT_S,
    patient_id: str | None = None,
    minutes: float | None = None,
) -> Iterator[dict]:
    """``POST /v1/windows`` bodies for a CHB-MIT or eegmmidb EDF file, in order.

    Channel names are the EDF header's own (CHB-MIT's duplicate ``T8-P8``, eegmmidb's
    referential ``Fp1.``), at the file's own rate, as a device would send them; the daemon
    maps them onto the canonical montage."""
    recording = chbmit.read_edf(edf_path)
    yield from segment_bodies(
        recording.samples_uv,
        recording.fs,
        recording.labels,
        patient_id=patient_id or eeg_patient_of(recording.path),
        modality="eeg",
        units="uV",
        segment_s=segment_s,
        minutes=minutes,
    )


def eeg_patient_of(edf_path: str | Path) -> str:
    """``chbNN`` for a CHB-MIT file, the subject (``S001``) for an eegmmidb run."""
    return eegmmidb.subject_of(edf_path) if eegmmidb.is_run(edf_path) else chbmit.patient_of(str(edf_path))


@lru_cache(maxsize=64)
def _ictal_intervals(edf_path: str) -> tuple[chbmit.Interval, ...]:
    return chbmit.ictal_intervals(edf_path)


def eeg_window_label(edf_path: str | Path, offset_s: float, window_s: float = EEG_WINDOW_S) -> str:
    """The class a clinician replaying ``edf_path`` gives the window starting ``offset_s`` into
    it: from crops.csv for a staged crop, from the patient's summary for a full-database file.
    Post-ictal windows are ``background``."""
    fraction = window_ictal_fraction(_ictal_intervals(str(edf_path)), offset_s, window_s)
    return EEG_CLASSES[window_class(fraction)]


class EegReference:
    """The class of the window starting at a time, from the file's seizure intervals."""

    def __init__(self, edf_path: str | Path, window_s: float = EEG_WINDOW_S) -> None:
        self.edf_path = str(edf_path)
        self.window_s = window_s

    def label_at(self, offset_s: float) -> str | None:
        return eeg_window_label(self.edf_path, offset_s, self.window_s)


class SeizureFreeReference:
    """A recording with no seizure in it (eegmmidb): every window is ``background``."""

    def label_at(self, offset_s: float) -> str | None:
        return EEG_CLASSES[0]


def eeg_reference(edf_path: str | Path) -> ReferenceLabels:
    """The window classes of an EEG file: its seizure intervals (CHB-MIT), or none (eegmmidb)."""
    return SeizureFreeReference() if eegmmidb.is_run(edf_path) else EegReference(edf_path)
