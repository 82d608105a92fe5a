"""R-peak detection on raw multi-lead ECG and EC57-style beat matching.

Each lead is searched by sleepecg's detector (a Pan-Tompkins variant whose integration and
adaptive thresholds run in C; ``heartbeats``), then the leads are fused. Picked with numbers: the 44
non-paced MIT-BIH records streamed as 10 s segments through ``QrsTracker``, CPU time per segment:

=====================================  =========  =========  =============
detector                                Se (%)     +P (%)     ms / segment
=====================================  =========  =========  =============
wfdb ``gqrs`` + corrections, lead 0     99.81      99.86      33.5
sleepecg 0.6 C, lead 0, raw             99.26      98.26      0.24
sleepecg 0.6 C + corrections, lead 0    99.45      98.97      1.0
neurokit2 0.2.13 ``neurokit``, lead 0   98.72      98.08      1.7
sleepecg 0.6 C, both leads fused        99.80      99.82      1.55
=====================================  =========  =========  =============

The first and last rows are ``biofo bench qrs`` (one run, the two side by side record by record,
on an otherwise idle machine). The others were measured with the same replay while choosing, on a
machine where ``gqrs`` took 21.3 ms.
sleepecg is the fastest maintained detector measured and, fused over two leads, the most accurate
of the compiled ones; it does not yet reach ``gqrs``'s figures.
``detect_heartbeats`` band-passes each lead with ``sosfiltfilt`` (which solves for its initial
state on every call) before its C steps; ``heartbeats`` takes that band from one
``zero_phase_filter`` call for all leads instead, the same beats at a quarter less CPU. The
zero-phase filters (two bands, two leads) are now about 30 % of the time and the fusion about a
quarter; sleepecg using the 8-20 Hz band below, to save one of the filters, lost 0.06 points of Se.
The corrections and the fusion are vectorised.

Corrections, fitted on the 44 records' lead 0 with ``gqrs`` and kept for sleepecg:

- each detection is moved to the largest absolute value of the 8-20 Hz band-passed lead in
  [-15 ms, +70 ms] around it (sleepecg marks some wide QRS complexes up to 150 ms early, record 231);
- of two detections closer than 400 ms, one whose band-passed amplitude is below 0.3 times the
  other's is dropped (tall P and T waves, record 108); of two closer than 200 ms, the smaller.

Both polarities: each lead is also searched on its negative (``turned_beats``), and a beat found
there far from every other is added if its size reaches ``TURNED_RATIO`` of theirs. On the 44
records this ratio at 0.35 / 0.5 / 0.7 gave 392 / 403 / 413 errors (missed + false) against 434
without, but 3 115 / 3 051 / 2 979 against 3 013 under electrode motion at 12 dB: 0.7 is the value
that also cut errors on every variant checked (leads swapped 566 to 531, 128 Hz 546 to 499,
broadband noise at 12 dB 758 to 712, inverted 528 to 504).

Lead fusion (a flat, saturated or noisy lead must not cost beats):

- a lead whose peak-to-peak is under 10 µV, or that sits on its own extreme value for 2 % of the
  chunk (a clipped amplifier), is not searched; with one lead left, its beats are the answer;
- each lead is turned so that its QRS complexes point the same way whatever the electrode order
  (``orientation``), and searched;
- detections of the two leads within 100 ms of each other are one confirmed beat (at the first
  lead's position). Each lead's weight is its SNR: the median band-passed amplitude of its
  confirmed beats over the 95th percentile of its band-passed signal away from them (noise alone
  scores about 0.8; real MIT-BIH leads 2.2 at their 1st percentile, 11.9 at the median). With
  fewer than ``MIN_COMMON`` detections in common, the lead that found more alone is the answer;
- every candidate gets a score, the SNR-weighted mean over the leads of its band-passed amplitude
  relative to that lead's median confirmed beat (capped at ``SCORE_CAP``). Confirmed beats need
  ``CONFIRMED_SCORE``; beats only one lead found need ``ACCEPT_SCORE``, or ``NEAR_SCORE`` within
  ``NEAR_S`` of a confirmed beat (where P and T waves sit). A beat only one lead found is vetoed
  where the other lead's SNR is over ``VETO_SNR_RATIO`` times its own and the other lead's
  band-passed amplitude there is under ``VETO_LEVEL`` times that lead's noise level, while it shows
  the confirmed beats on either side at ``VETO_SHOWN`` of their median size or more: a noisy lead
  adds no beats that a cleaner lead does not show at all (records 103 and 200), and a lead whose
  QRS fades for a few seconds vetoes nothing (record 208);
- the 400 ms rule above runs once more on the merged list, on the fused scores (an artefact on one
  lead must not replace a beat that the other shows, record 200), and of two merged beats closer
  than ``MERGED_REFRACTORY_S`` (230 ms: a rhythm faster than 260 per minute, ventricular flutter,
  is counted at half its rate) the weaker goes: on the 44 records no two reference beats are
  closer than 250 ms, while tall P waves 180-220 ms before their QRS (record 108) and noise (105)
  pass the 200 ms refractory. 200 / 220 / 230 / 250 ms gave 194 / 198 / 199 / 208 missed and
  218 / 192 / 183 / 166 false beats; 230 ms is the longest that keeps the Se target, so it is
  fitted. It also cut errors (missed + false, 44 records, through
  ``bench.robustness``) on every two-lead variant checked: leads swapped 529 to 517, 128 Hz 499 to
  465, 500 Hz 513 to 481, inverted 503 to 473, gain x0.5 503 to 473, mains 50 Hz 534 to 495,
  broadband noise at 12 dB 712 to 641, electrode motion at 12 dB 2 979 to 2 579 (there 46 more
  missed, 446 fewer false). Within each lead a like rule (250 ms, the weaker under 0.8 of the
  other) lost beats of the clean record 116 (2 missed became 6), so the leads keep 200 ms;
- on every path (one lead, leads disagreeing, fused), an extra beat goes: one weaker than
  ``EXTRA_RATIO`` times both its neighbours, which are no more than ``EXTRA_SPAN`` median RR
  intervals apart (``_drop_extra``; noise bursts and T waves between two beats, records 105, 108).

The fusion constants were fitted on the 44 records (so ``biofo bench qrs`` is a training figure
for them); ``biofo bench robustness`` shows whether they hold for other devices. The veto, the
score-based merge, ``MIN_COMMON`` and the extra-beat rule were each kept only because they also
cut errors on the device variants of all 44 records (leads swapped, 128 Hz, electrode-motion and
broadband noise at 12 dB): with all four, for example, electrode motion at 12 dB gives 2 647 false
beats where the fusion without them gave 4 527, at 366 missed beats against 605.

``QrsTracker`` runs ``detect_r_peaks`` on a stream: each time on the signal not yet searched plus
the 3 s before it, accepting only peaks at least 200 ms after the last one it reported and at least
``MARGIN_S`` before the end of the available signal (those wait for more context). Thresholds are
re-learnt on every chunk, so nothing but positions has to be carried across segments.
"""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sleepecg._heartbeat_detection import _squared_moving_integration, _thresholding

from signals.filters import butter_sos, zero_phase_filter

QRS_BAND_HZ = (8.0, 20.0)
SLEEPECG_BAND_HZ = (5.0, 30.0)  # detect_heartbeats' own band-pass, order 2
SLEEPECG_INTEGRATION_S = 0.15
PAN_TOMPKINS_DERIVATIVE = np.array([-1.0, -2.0, 0.0, 2.0, 1.0])
SNAP_WINDOW_S = (-0.015, 0.07)
AMPLITUDE_HALF_WIDTH_S = 0.028
T_WAVE_S = 0.40
T_WAVE_RATIO = 0.3
REFRACTORY_S = 0.2
MATCH_WINDOW_S = 0.15  # EC57 beat-matching tolerance
FLAT_MV = 0.01
CLIPPED_FRACTION = 0.02
PAIR_S = 0.10
SCORE_CAP = 1.5
ACCEPT_SCORE = 0.3
CONFIRMED_SCORE = 0.1
NEAR_S = 0.4
NEAR_SCORE = 0.6
MERGED_T_WAVE_RATIO = 0.3
MERGED_REFRACTORY_S = 0.23
MIN_COMMON = 2
VETO_SNR_RATIO = 1.5
VETO_LEVEL = 0.2
VETO_SHOWN = 0.5
EXTRA_SPAN = 1.2
EXTRA_RATIO = 0.8
TURNED_HALF_WIDTH_S = 0.06
TURNED_RATIO = 0.7

Detector = Callable[[np.ndarray, float], np.ndarray]


def searchable(lead: np.ndarray) -> bool:
    """False for a lead that is flat or clipped at an amplifier rail for part of the chunk."""
    low, high = float(lead.min()), float(lead.max())
    if high - low < FLAT_MV:
        return False
    at_rail = max(np.count_nonzero(lead == low), np.count_nonzero(lead == high))
    return at_rail < CLIPPED_FRACTION * lead.size


def _clamp(index: np.ndarray, high: int) -> np.ndarray:
    """``np.clip(index, 0, high)``, without ``np.clip``'s argument checks (7 % of a segment's
    detection time when the fusion called it)."""
    return np.minimum(np.maximum(index, 0), high)


def _around(signal: np.ndarray, peaks: np.ndarray, half: int) -> np.ndarray:
    """(peaks, 2 half + 1): ``signal`` within ``half`` samples of each peak (the edge sample repeats)."""
    return signal[_clamp(peaks[:, None] + np.arange(-half, half + 1), signal.size - 1)]


def _amplitudes(band: np.ndarray, peaks: np.ndarray, half: int) -> np.ndarray:
    """The largest value of ``band`` within ``half`` samples of each peak."""
    if peaks.size == 0:
        return np.zeros(0)
    return _around(band, peaks, half).max(axis=1)


def corrected_peaks(band: np.ndarray, raw: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Detections moved to the band-passed peak, T waves and doubles dropped; with amplitudes."""
    if raw.size == 0:
        return raw.astype(np.int64), np.zeros(0)
    before, after = (int(round(edge * fs)) for edge in SNAP_WINDOW_S)
    peaks = np.unique(_snap(band, raw, before, after))
    amplitude = _amplitudes(band, peaks, int(round(AMPLITUDE_HALF_WIDTH_S * fs)))
    kept = _drop_secondary(peaks, amplitude, fs)
    return kept, amplitude[np.searchsorted(peaks, kept)]


def orientation(signed_band: np.ndarray, fs: float) -> float:
    """-1 or 1: the factor that turns a lead so that most of its QRS complexes point down,
    whatever its electrodes' order (``signed_band`` is the lead band-passed).

    sleepecg looks for positive peaks of its filtered signal, so an inverted electrode would
    change what it finds. The vote is the sign of the band-passed signal at its largest absolute
    value in each second: beats are the majority of those, and a minority of ectopic beats of the
    other polarity does not flip it; a lead and its negative come out turned alike. Which way to
    turn was measured (44 records, 10 s segments): main deflection down 99.79 / 99.78 % (Se / +P),
    up 99.66 / 99.67 (sleepecg on the rectified band instead, measured with an earlier fusion, was
    0.11 / 0.02 points below down).
    """
    step = int(round(fs))
    blocks = signed_band[: signed_band.size // step * step].reshape(-1, step)
    peaks = blocks[np.arange(blocks.shape[0]), np.argmax(np.abs(blocks), axis=1)]
    vote = np.sum(np.sign(peaks)) or np.sign(peaks[np.argmax(np.abs(peaks))])
    return -1.0 if vote >= 0 else 1.0


def heartbeats(
    lead: np.ndarray, filtered: np.ndarray, fs: float, both_ways: bool = False
) -> np.ndarray:
    """``sleepecg.detect_heartbeats(lead, fs)``, given ``filtered``: ``lead`` through its 5-30 Hz
    band-pass, forward and backward. With ``both_ways``, plus the beats of the other polarity it
    passes over (``turned_beats``).

    The steps after that filter are sleepecg's own (the five-point derivative, then its C
    integration and thresholding); the filter is ``zero_phase_filter``, run once for all leads of a
    chunk, because ``sosfiltfilt`` solving for its initial state on every call was a third of the
    detector's time. Like sleepecg, a lead that starts flat is searched from its first non-flat
    sample (quantised ECG often repeats its first value, about one lead in seven per chunk); the
    band from that sample on is taken from ``filtered`` rather than filtered again, which finds the
    same beats as sleepecg (``tests/test_qrs.py``) at a tenth less CPU per chunk.
    """
    first = 0
    if lead[1] == lead[0]:
        moved = np.flatnonzero(lead != lead[0])
        if moved.size == 0:
            raise ValueError("the ECG lead is flat")
        first = int(moved[0])
        filtered = filtered[first:]
    filtered = np.ascontiguousarray(filtered, dtype=np.float64)
    derivative = np.correlate(filtered, PAN_TOMPKINS_DERIVATIVE, mode="same")
    integrated = _squared_moving_integration(derivative, int(SLEEPECG_INTEGRATION_S * fs))
    found = np.flatnonzero(_thresholding(filtered, integrated, fs)).astype(np.int64)
    if both_ways:
        # The squared derivative is the same for the signal and its negative.
        other = np.flatnonzero(_thresholding(-filtered, integrated, fs)).astype(np.int64)
        found = np.union1d(found, turned_beats(filtered, found, other, fs))
    return found + first


def turned_beats(filtered: np.ndarray, found: np.ndarray, other: np.ndarray, fs: float) -> np.ndarray:
    """Of the beats ``other`` found on the negative of ``filtered``, those a search of ``filtered``
    itself (``found``) passed over.

    sleepecg accepts a QRS only at a positive peak of its filtered signal, so on a single lead
    whose beats point both ways (record 106: bigeminy, normal and ventricular beats opposite on
    MLII) it finds one kind only. A beat of the negative more than ``PAIR_S`` from every beat found
    is kept if its peak-to-peak in the filtered signal (within ``TURNED_HALF_WIDTH_S``) reaches
    ``TURNED_RATIO`` of the found beats' median, which P and T waves do not.
    """
    if found.size == 0 or other.size == 0:
        return np.zeros(0, dtype=np.int64)
    nearest = _clamp(np.searchsorted(found, other), found.size - 1)
    gap = np.minimum(np.abs(other - found[nearest]), np.abs(other - found[np.maximum(nearest - 1, 0)]))
    other = other[gap > PAIR_S * fs]
    if other.size == 0:
        return other
    half = int(round(TURNED_HALF_WIDTH_S * fs))
    size = _peak_to_peak(filtered, other, half)
    return other[size >= TURNED_RATIO * _percentile(_peak_to_peak(filtered, found, half), 50.0)]


def _peak_to_peak(signal: np.ndarray, peaks: np.ndarray, half: int) -> np.ndarray:
    window = _around(signal, peaks, half)
    return window.max(axis=1) - window.min(axis=1)


def detect_lead(
    lead: np.ndarray, signed_band: np.ndarray, sleepecg_band: np.ndarray, fs: float
) -> tuple[np.ndarray, np.ndarray]:
    """R peaks of one lead and their band-passed amplitudes."""
    sign = orientation(signed_band, fs)
    raw = heartbeats(sign * lead, sign * sleepecg_band, fs, both_ways=True)  # the filter is linear
    return corrected_peaks(np.abs(signed_band), raw, fs)


def detect_r_peaks(leads: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in a (leads, n) or (n,) ECG chunk in mV, fused over the leads."""
    x = np.atleast_2d(np.asarray(leads, dtype=np.float64))
    if x.shape[1] < int(fs):
        return np.zeros(0, dtype=np.int64)
    live = [k for k in range(x.shape[0]) if searchable(x[k])]
    if not live:
        return np.zeros(0, dtype=np.int64)
    signed_band = zero_phase_filter(x[live], butter_sos(fs, *QRS_BAND_HZ))
    sleepecg_band = zero_phase_filter(x[live], butter_sos(fs, *SLEEPECG_BAND_HZ))
    found = [
        detect_lead(x[k], signed_band[i], sleepecg_band[i], fs) for i, k in enumerate(live)
    ]
    band = np.abs(signed_band)
    if len(found) == 1:
        return _drop_extra(*found[0])
    return _fuse(found[:2], band[:2], fs)


def _fuse(
    found: list[tuple[np.ndarray, np.ndarray]], band: np.ndarray, fs: float
) -> np.ndarray:
    """One beat list from two leads' detections (see the module docstring)."""
    pairs = match_pairs(found[0][0], found[1][0], int(round(PAIR_S * fs)))
    if pairs.shape[0] < MIN_COMMON:
        # The leads disagree (one common beat may be chance). A noisy lead would still share a few
        # beats with a clean one, so the lead that failed found few: spikes over a quiet lead,
        # whose SNR looks high. Keep the lead that found more.
        return _drop_extra(*found[int(np.argmax([peaks.size for peaks, _ in found]))])
    confirmed = [np.zeros(peaks.size, dtype=bool) for peaks, _ in found]
    for lead in (0, 1):
        confirmed[lead][pairs[:, lead]] = True
    scale = [_percentile(amplitude[confirmed[lead]], 50.0) for lead, (_, amplitude) in enumerate(found)]
    weight = np.array([_snr(band[lead], found[lead][0][confirmed[lead]], scale[lead], fs) for lead in (0, 1)])
    candidates = np.concatenate([found[0][0][pairs[:, 0]]] + [found[lead][0][~confirmed[lead]] for lead in (0, 1)])
    confirmed_beats = candidates[: pairs.shape[0]]
    nearest = np.searchsorted(confirmed_beats, candidates)
    gap = np.minimum(
        np.abs(candidates - confirmed_beats[np.maximum(nearest - 1, 0)]),
        np.abs(confirmed_beats[np.minimum(nearest, confirmed_beats.size - 1)] - candidates),
    )
    needed = np.where(gap < NEAR_S * fs, NEAR_SCORE, ACCEPT_SCORE)
    needed[: pairs.shape[0]] = CONFIRMED_SCORE
    half = int(round(AMPLITUDE_HALF_WIDTH_S * fs))
    relative = np.array([_amplitudes(band[lead], candidates, half) / scale[lead] for lead in (0, 1)])
    score = (weight[:, None] * np.minimum(relative, SCORE_CAP)).sum(axis=0) / max(weight.sum(), 1e-9)
    lead_of = np.repeat([0, 0, 1], [pairs.shape[0]] + [peaks.size - pairs.shape[0] for peaks, _ in found])
    other = 1 - lead_of
    # Where the other lead is the cleaner one and shows nothing, one lead's beat is its noise;
    # unless the other lead has lost the QRS here too (it barely shows the confirmed beats around).
    shown_around = np.maximum(
        relative[other, np.maximum(nearest - 1, 0)], relative[other, np.minimum(nearest, confirmed_beats.size - 1)]
    )
    vetoed = (
        (weight[other] > VETO_SNR_RATIO * weight[lead_of])
        & (relative[other, np.arange(candidates.size)] * weight[other] < VETO_LEVEL)
        & (shown_around >= VETO_SHOWN)
    )
    vetoed[: pairs.shape[0]] = False
    accepted = (score >= needed) & ~vetoed
    beats, first = np.unique(candidates[accepted], return_index=True)
    strength = score[accepted][first]
    kept = _drop_secondary(beats, strength, fs, MERGED_T_WAVE_RATIO, MERGED_REFRACTORY_S)
    return _drop_extra(kept, strength[np.searchsorted(beats, kept)])


def _drop_extra(beats: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Remove extra beats: each beat weaker than ``EXTRA_RATIO`` times both its neighbours whose
    neighbours are no more than ``EXTRA_SPAN`` median RR intervals apart.

    A real premature beat is followed by a pause (compensatory after a PVC, shorter after an APC),
    so with its neighbours it spans well over one RR interval; a noise burst or a T wave between two
    beats does not move them. An interpolated PVC (no pause) that is also the weakest is lost.
    """
    if beats.size < 4:
        return beats
    span = beats[2:] - beats[:-2]
    extra = (span < EXTRA_SPAN * _percentile(np.diff(beats), 50.0)) & (
        strength[1:-1] < EXTRA_RATIO * np.minimum(strength[:-2], strength[2:])
    )
    return np.delete(beats, 1 + np.flatnonzero(extra))


def _snr(band: np.ndarray, beats: np.ndarray, level: float | np.ndarray, fs: float) -> float:
    """A lead's beat amplitude over its 95th-percentile band-passed level away from the beats."""
    if beats.size == 0:
        return 0.0
    level = float(np.median(level)) if np.ndim(level) else float(level)
    half = int(round(PAIR_S * fs))
    # samples within ``half`` of a beat: +1 where a beat's span opens, -1 past where it closes
    edges = np.bincount(_clamp(beats - half, band.size), minlength=band.size + 1)
    edges -= np.bincount(np.minimum(beats + half + 1, band.size), minlength=band.size + 1)
    away = np.cumsum(edges[: band.size]) == 0
    if not away.any() or level <= 0.0:
        return 0.0
    return level / max(_percentile(band[away], 95.0), 1e-9)


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) from a partial sort.

    The same number at a fifth of the cost on a 14 s chunk, where ``np.percentile``'s generality
    (axes, methods, weights) costs more than the partition itself."""
    rank = q / 100.0 * (values.size - 1)
    below = int(np.floor(rank))
    above = min(below + 1, values.size - 1)
    ordered = np.partition(values, (below, above))
    low, high, t = float(ordered[below]), float(ordered[above]), rank - below
    # numpy's interpolation, from the nearer end, so that the result is the same to the last bit
    return high - (high - low) * (1.0 - t) if t >= 0.5 else low + (high - low) * t


def _snap(band: np.ndarray, points: np.ndarray, before: int, after: int) -> np.ndarray:
    """Each point moved to the largest ``band`` value in [point + before, point + after)."""
    lo = _clamp(points + before, band.size - 1)
    hi = np.maximum(np.minimum(points + after, band.size), lo + 1)
    window = lo[:, None] + np.arange(max(after - before, 1))
    values = np.where(window < hi[:, None], band[np.minimum(window, band.size - 1)], -np.inf)
    return lo + np.argmax(values, axis=1)


def _drop_secondary(
    peaks: np.ndarray,
    amplitude: np.ndarray,
    fs: float,
    ratio: float = T_WAVE_RATIO,
    refractory_s: float = REFRACTORY_S,
) -> np.ndarray:
    """Remove T waves and spikes that sit next to a clearly larger beat, and the smaller of two
    beats closer than ``refractory_s``."""
    t_wave, refractory = T_WAVE_S * fs, refractory_s * fs
    position, height = peaks.tolist(), amplitude.tolist()
    kept: list[int] = []
    for k in range(len(position)):
        if kept:
            prev = kept[-1]
            gap = position[k] - position[prev]
            if gap < refractory or (
                gap < t_wave and min(height[k], height[prev]) < ratio * max(height[k], height[prev])
            ):
                if height[k] > height[prev]:
                    kept[-1] = k
                continue
        kept.append(k)
    return peaks[kept]


class QrsTracker:
    """Incremental detection over a growing signal, without reporting a beat twice."""

    LOOKBACK_S = 3.0
    MARGIN_S = 1.0

    def __init__(self, fs: float, detect: Detector = detect_r_peaks) -> None:
        self.fs = float(fs)
        self.detect = detect  # not part of state(): a stream always continues with the daemon's detector
        self.scanned_to = 0  # absolute index up to which the signal has been searched
        self.last_r: int | None = None

    @property
    def lookback(self) -> int:
        """Samples before ``scanned_to`` the caller must keep for the next ``scan``."""
        return int(round(self.LOOKBACK_S * self.fs))

    def scan(self, leads: np.ndarray, leads_start: int, final: bool = False) -> list[int]:
        """New R peaks (absolute indices) in ``leads`` (leads, n), whose first sample is ``leads_start``."""
        leads = np.atleast_2d(leads)
        end = leads_start + leads.shape[1]
        limit = end if final else end - int(round(self.MARGIN_S * self.fs))
        if limit <= self.scanned_to:
            return []
        lo = max(leads_start, self.scanned_to - self.lookback)
        peaks = np.asarray(self.detect(leads[:, lo - leads_start :], self.fs), dtype=np.int64) + lo
        refractory = REFRACTORY_S * self.fs
        new: list[int] = []
        for p in peaks.tolist():
            # A beat the detector reports only once it sees what follows may lie before scanned_to:
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
    """(k, 2) index pairs (reference, detected), one-to-one, closest pairs matched first; in
    reference order."""
    reference = np.asarray(reference, dtype=np.int64)
    detected = np.asarray(detected, dtype=np.int64)
    lo = np.searchsorted(detected, reference - tolerance, side="left")
    hi = np.searchsorted(detected, reference + tolerance, side="right")
    reach = hi - lo
    single = reach == 1
    if np.all(reach <= 1) and np.all(np.diff(lo[single]) > 0):
        # No detection is within reach of two references, nor two of one: nothing to choose.
        return np.stack([np.flatnonzero(single), lo[single]], axis=1)
    ref_idx = np.repeat(np.arange(reference.size), reach)
    det_idx = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)] or [np.zeros(0, int)])
    distance = np.abs(reference[ref_idx] - detected[det_idx])
    used_ref = np.zeros(reference.size, dtype=bool)
    used_det = np.zeros(detected.size, dtype=bool)
    pairs = []
    ref_list, det_list = ref_idx.tolist(), det_idx.tolist()
    for k in np.argsort(distance, kind="stable").tolist():
        r, d = ref_list[k], det_list[k]
        if not used_ref[r] and not used_det[d]:
            used_ref[r] = used_det[d] = True
            pairs.append((r, d))
    pairs.sort()
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
