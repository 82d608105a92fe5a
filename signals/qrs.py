"""R-peak detection on raw ECG and EC57-style beat matching.

Detection is ``wfdb.processing.gqrs_detect`` (a port of PhysioNet's gqrs) followed by two
corrections measured on MIT-BIH:

- gqrs marks a point about 35 ms before the reference R annotation. Each detection is moved to
  the largest absolute value of the 8-20 Hz band-passed signal in [-15 ms, +70 ms] around it;
  on the 44 non-paced records that puts 96 % of matched beats within 2 samples of the reference.
- gqrs sometimes also reports the T wave (record 113) or a noise spike next to a beat. Of two
  detections closer than 400 ms, one whose band-passed amplitude is below 0.3 times the other's
  is dropped; of two closer than 200 ms, the smaller is dropped.

``QrsTracker`` runs the same ``detect_r_peaks`` on a stream: each time on the signal not yet
searched plus the 3 s before it, accepting only peaks at least 200 ms after the last one it
reported and at least ``MARGIN_S`` before the end of the available signal (those wait for more
context). Each call re-learns gqrs's thresholds on its chunk, so the stream costs about twice
the whole-record detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wfdb.processing import gqrs_detect

from signals.filters import butter_sos, zero_phase_filter

QRS_BAND_HZ = (8.0, 20.0)
SNAP_WINDOW_S = (-0.015, 0.07)
AMPLITUDE_HALF_WIDTH_S = 0.028
T_WAVE_S = 0.40
T_WAVE_RATIO = 0.3
REFRACTORY_S = 0.2
MATCH_WINDOW_S = 0.15  # EC57 beat-matching tolerance


def detect_r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in one ECG lead (mV), sorted and unique."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < int(fs):
        return np.zeros(0, dtype=np.int64)
    raw = np.asarray(gqrs_detect(sig=x, fs=fs), dtype=np.int64)
    if raw.size == 0:
        return raw
    band = np.abs(zero_phase_filter(x, butter_sos(fs, *QRS_BAND_HZ)))
    before, after = (int(round(edge * fs)) for edge in SNAP_WINDOW_S)
    peaks = np.unique(_snap(band, raw, before, after))
    half = int(round(AMPLITUDE_HALF_WIDTH_S * fs))
    amplitude = np.array([band[max(p - half, 0) : p + half + 1].max() for p in peaks])
    return _drop_secondary(peaks, amplitude, fs)


def _snap(band: np.ndarray, points: np.ndarray, before: int, after: int) -> np.ndarray:
    snapped = np.empty_like(points)
    for k, p in enumerate(points):
        lo = min(max(p + before, 0), band.size - 1)
        hi = max(min(p + after, band.size), lo + 1)
        snapped[k] = lo + int(np.argmax(band[lo:hi]))
    return snapped


def _drop_secondary(peaks: np.ndarray, amplitude: np.ndarray, fs: float) -> np.ndarray:
    """Remove T waves and spikes that sit next to a clearly larger beat."""
    t_wave, refractory = T_WAVE_S * fs, REFRACTORY_S * fs
    kept: list[int] = []
    for k in range(peaks.size):
        if kept:
            prev = kept[-1]
            gap = peaks[k] - peaks[prev]
            if gap < refractory or (
                gap < t_wave
                and min(amplitude[k], amplitude[prev])
                < T_WAVE_RATIO * max(amplitude[k], amplitude[prev])
            ):
                if amplitude[k] > amplitude[prev]:
                    kept[-1] = k
                continue
        kept.append(k)
    return peaks[kept]


class QrsTracker:
    """Incremental detection over a growing signal, without reporting a beat twice."""

    LOOKBACK_S = 3.0
    MARGIN_S = 1.0

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self.scanned_to = 0  # absolute index up to which the signal has been searched
        self.last_r: int | None = None

    @property
    def lookback(self) -> int:
        """Samples before ``scanned_to`` the caller must keep for the next ``scan``."""
        return int(round(self.LOOKBACK_S * self.fs))

    def scan(self, lead: np.ndarray, lead_start: int, final: bool = False) -> list[int]:
        """New R peaks (absolute indices) in ``lead``, whose first sample is ``lead_start``."""
        end = lead_start + lead.size
        limit = end if final else end - int(round(self.MARGIN_S * self.fs))
        if limit <= self.scanned_to:
            return []
        lo = max(lead_start, self.scanned_to - self.lookback)
        peaks = detect_r_peaks(lead[lo - lead_start :], self.fs) + lo
        refractory = REFRACTORY_S * self.fs
        new: list[int] = []
        for p in peaks.tolist():
            # A beat gqrs reports only once it sees what follows may lie before scanned_to:
            # anything after the last reported beat (and not a second hit on it) is new.
            if p >= limit or (self.last_r is not None and p - self.last_r < refractory):
                continue
            new.append(p)
            self.last_r = p
        self.scanned_to = limit
        return new

    def state(self) -> dict[str, object]:
        return {"fs": self.fs, "scanned_to": self.scanned_to, "last_r": self.last_r}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> QrsTracker:
        made = cls(float(state["fs"]))
        made.scanned_to = int(state["scanned_to"])
        made.last_r = None if state["last_r"] is None else int(state["last_r"])
        return made


@dataclass(frozen=True)
class BeatMatch:
    """Counts from one-to-one matching of detected beats against reference beats."""

    tp: int
    fn: int
    fp: int

    @property
    def reference(self) -> int:
        return self.tp + self.fn

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    def __add__(self, other: BeatMatch) -> BeatMatch:
        return BeatMatch(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)


def match_pairs(reference: np.ndarray, detected: np.ndarray, tolerance: int) -> np.ndarray:
    """(k, 2) index pairs (reference, detected), one-to-one, closest pairs first."""
    reference = np.asarray(reference, dtype=np.int64)
    detected = np.asarray(detected, dtype=np.int64)
    lo = np.searchsorted(detected, reference - tolerance, side="left")
    hi = np.searchsorted(detected, reference + tolerance, side="right")
    ref_idx = np.repeat(np.arange(reference.size), hi - lo)
    det_idx = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)] or [np.zeros(0, int)])
    distance = np.abs(reference[ref_idx] - detected[det_idx])
    used_ref = np.zeros(reference.size, dtype=bool)
    used_det = np.zeros(detected.size, dtype=bool)
    pairs = []
    for k in np.argsort(distance, kind="stable"):
        r, d = ref_idx[k], det_idx[k]
        if not used_ref[r] and not used_det[d]:
            used_ref[r] = used_det[d] = True
            pairs.append((r, d))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def match_beats(
    reference: np.ndarray,
    detected: np.ndarray,
    fs: float,
    exclude: tuple[tuple[int, int], ...] = (),
    score_from: int = 0,
) -> BeatMatch:
    """EC57 beat-by-beat comparison with a 150 ms window.

    Beats inside an ``exclude`` interval (ventricular flutter, which EC57 leaves out of QRS
    detection scoring) are removed from both sides. Matching uses every beat; only beats at or
    after ``score_from`` are counted (EC57 skips each record's first 5 min).
    """
    reference = _outside(np.sort(np.asarray(reference, dtype=np.int64)), exclude)
    detected = _outside(np.sort(np.asarray(detected, dtype=np.int64)), exclude)
    pairs = match_pairs(reference, detected, int(round(MATCH_WINDOW_S * fs)))
    ref_hit = np.zeros(reference.size, dtype=bool)
    det_hit = np.zeros(detected.size, dtype=bool)
    ref_hit[pairs[:, 0]] = True
    det_hit[pairs[:, 1]] = True
    scored_ref = reference >= score_from
    scored_det = detected >= score_from
    return BeatMatch(
        tp=int(np.sum(ref_hit & scored_ref)),
        fn=int(np.sum(~ref_hit & scored_ref)),
        fp=int(np.sum(~det_hit & scored_det)),
    )


def _outside(samples: np.ndarray, intervals: tuple[tuple[int, int], ...]) -> np.ndarray:
    keep = np.ones(samples.size, dtype=bool)
    for start, end in intervals:
        keep &= (samples < start) | (samples > end)
    return samples[keep]
