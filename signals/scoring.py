"""Seizure detection scores: SzCORE event scoring (``timescoring``) and window-level helpers.

Event scoring always passes the SzCORE parameters explicitly, because ``timescoring``'s defaults
have changed between versions: the reference is extended 30 s before and 60 s after each
seizure, any overlap detects it, events closer than 90 s are merged and events longer than
300 s are split (in both reference and hypothesis). Label arrays are at ``fs`` Hz (SzCORE uses
1 Hz); ``window_mask`` turns per-window decisions into such an array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from timescoring.annotations import Annotation
from timescoring.scoring import EventScoring

SZCORE = MappingProxyType(
    {
        "toleranceStart": 30.0,
        "toleranceEnd": 60.0,
        "minOverlap": 0.0,
        "maxEventDuration": 300.0,
        "minDurationBetweenEvents": 90.0,
    }
)


def szcore_parameters() -> EventScoring.Parameters:
    return EventScoring.Parameters(**SZCORE)


@dataclass(frozen=True)
class EventScores:
    seizures: int  # reference events after SzCORE merging and splitting
    detected: int
    false_positives: int
    sensitivity: float | None
    precision: float | None
    f1: float | None
    fp_per_24h: float
    duration_s: float
    # One per annotated seizure (those closer than 90 s merged, long ones not split, so this can
    # be shorter than ``seizures``); None when missed.
    latencies_s: tuple[float | None, ...]

    @property
    def median_latency_s(self) -> float | None:
        found = [latency for latency in self.latencies_s if latency is not None]
        return float(np.median(found)) if found else None


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _events(mask: np.ndarray, fs: float) -> list[tuple[float, float]]:
    return list(Annotation(np.asarray(mask, dtype=bool), fs).events) if len(mask) else []


def _merge(events: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(events):
        if merged and start - merged[-1][1] < gap_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def detection_latencies(
    reference: np.ndarray, hypothesis: np.ndarray, fs: float
) -> tuple[float | None, ...]:
    """Seconds from each annotated onset to the first predicted event overlapping that seizure's
    SzCORE scoring interval ``[onset - 30 s, offset + 60 s]``; None if none does.

    Seizures closer than 90 s count as one, as in the event scoring. A prediction already on at
    the onset has latency 0 (it raised the alarm before the annotated onset)."""
    seizures = _merge(_events(reference, fs), SZCORE["minDurationBetweenEvents"])
    predicted = _events(hypothesis, fs)
    latencies: list[float | None] = []
    for onset, offset in seizures:
        lo, hi = onset - SZCORE["toleranceStart"], offset + SZCORE["toleranceEnd"]
        starts = [start for start, end in predicted if start < hi and end > lo]
        latencies.append(float(max(0.0, min(starts) - onset)) if starts else None)
    return tuple(latencies)


def event_scores(reference: np.ndarray, hypothesis: np.ndarray, fs: float = 1.0) -> EventScores:
    """SzCORE event scores of a binary hypothesis against a binary reference, both at ``fs``."""
    reference = np.asarray(reference, dtype=bool)
    hypothesis = np.asarray(hypothesis, dtype=bool)
    if reference.shape != hypothesis.shape or reference.ndim != 1 or not len(reference):
        raise ValueError(
            f"reference {reference.shape} and hypothesis {hypothesis.shape} must be equal, "
            "non-empty 1-D arrays"
        )
    scores = EventScoring(
        Annotation(reference, fs), Annotation(hypothesis, fs), szcore_parameters()
    )
    return EventScores(
        seizures=int(scores.refTrue),
        detected=int(scores.tp),
        false_positives=int(scores.fp),
        sensitivity=_number(scores.sensitivity),
        precision=_number(scores.precision),
        f1=_number(scores.f1),
        fp_per_24h=float(scores.fpRate),
        duration_s=len(reference) / fs,
        latencies_s=detection_latencies(reference, hypothesis, fs),
    )


def window_mask(
    values: np.ndarray, window_s: float, fs: float = 1.0, duration_s: float | None = None
) -> np.ndarray:
    """Per-window 0/1 decisions on a tiled grid -> a label array at ``fs`` (each window's value
    held over its span; the tail beyond the last window, up to ``duration_s``, is 0)."""
    values = np.asarray(values, dtype=bool)
    per_window = window_s * fs
    if abs(per_window - round(per_window)) > 1e-9 or round(per_window) < 1:
        raise ValueError(f"a {window_s} s window is not a whole number of samples at {fs} Hz")
    mask = np.repeat(values, int(round(per_window)))
    if duration_s is not None:
        total = int(round(duration_s * fs))
        mask = np.concatenate([mask, np.zeros(max(0, total - len(mask)), dtype=bool)])[:total]
    return mask


@dataclass(frozen=True)
class WindowScores:
    sensitivity: float | None  # seizure windows predicted seizure
    specificity: float | None  # background windows predicted background
    n_seizure: int
    n_background: int


def window_scores(y_true: np.ndarray, y_pred: np.ndarray) -> WindowScores:
    """Window-level sensitivity and specificity for class indices (1 = seizure, 0 = background)."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    return WindowScores(
        sensitivity=float((y_pred & y_true).sum() / positives) if positives else None,
        specificity=float((~y_pred & ~y_true).sum() / negatives) if negatives else None,
        n_seizure=positives,
        n_background=negatives,
    )
