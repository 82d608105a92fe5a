"""Beat templates: online grouping of ECG beats by morphology and RR, as Holter review uses them.

Method (leader clustering, one pass, in arrival order, nothing revisited): each template keeps the
running mean of its members' QRS waveforms (``qrs_wave``) and an RR group. A new beat joins the
template of its RR group whose mean waveform has the highest Pearson correlation with the beat's,
if that correlation reaches ``THRESHOLD``; otherwise it starts a new template. RR group:
*premature* when the previous RR is below ``PREMATURE_RATIO`` of the local mean RR (the shape of an
S beat is normal, its timing is not), else *regular*. Correlation ignores amplitude, so wide
ventricular beats and narrow ones separate while a drifting baseline gain does not split a template.

The waveform is the QRS complex alone at the full 360 Hz, both leads, from ``QRS_PRE_S`` before to
``QRS_POST_S`` after R, band-passed (0.5–40 Hz, zero phase: baseline wander and mains hum out, the
complex kept) from the beat's stored samples. The QRS is what tells a ventricular or fusion beat from
a normal one; the model's features (0.25 s before to 0.40 s after R, binned to 60 Hz) add P and T
waves and their noise. On the fit set below the QRS window is as pure with half the templates (at
0.96: 98.9 % non-N purity with 21.5 templates per record, against 43.2 with the features). The
bounds cover a normal QRS and most of a wide ventricular one; they were not tuned.

``THRESHOLD`` was fitted on the first 5 minutes of the DS1 records other than 208 (reference R peaks,
``python -m bench.templates_fit``): the value with the purest templates (most beats whose AAMI class
is their template's majority class) whose key presses, one per template and one to apply, stay
within a tenth of the beats, the template workflow's goal. A wrong template label is learned by
every beat of the template and replayed in rehearsal, so purity is worth every press the budget
allows. At 0.96: 99.94 % purity overall, 98.9 % over the non-N beats, 21.5 templates per record,
0.059 presses per beat; the table is in ``bench/results/templates_fit.md``.
``PREMATURE_RATIO`` is the usual prematurity criterion, not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from signals.ecg_features import DEFAULT_WINDOW, ECG_FS, ECG_LEADS, RR_FEATURES
from signals.filters import butter_sos, zero_phase_filter

THRESHOLD = 0.96
PREMATURE_RATIO = 0.85
QRS_PRE_S = 0.10
QRS_POST_S = 0.15
QRS_BAND_HZ = (0.5, 40.0)
_PRE = int(round(QRS_PRE_S * ECG_FS))
_POST = int(round(QRS_POST_S * ECG_FS))
_RR_PREV_OVER_LOCAL = ECG_LEADS * DEFAULT_WINDOW.points + RR_FEATURES.index("rr_prev_over_local")


def rr_group(features: np.ndarray) -> str:
    """The beat's RR group from its model features (``signals.ecg_features``)."""
    return "premature" if float(features[_RR_PREV_OVER_LOCAL]) < PREMATURE_RATIO else "regular"


def qrs_wave(samples: np.ndarray, r_index: int) -> np.ndarray:
    """Both leads' band-passed QRS, concatenated, from a beat's stored (2, n) samples at 360 Hz with
    R at ``r_index`` (a beat at the very start or end of a stream repeats its edge sample)."""
    filtered = zero_phase_filter(samples, butter_sos(ECG_FS, *QRS_BAND_HZ))
    lo, hi = r_index - _PRE, r_index + _POST
    part = filtered[:, max(lo, 0) : hi]
    before = max(-lo, 0)
    return np.pad(part, ((0, 0), (before, hi - lo - before - part.shape[1])), mode="edge").ravel()


def _unit(wave: np.ndarray) -> np.ndarray:
    """Centred and scaled to unit norm: the dot product of two is their Pearson correlation."""
    centred = wave - wave.mean()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 0 else centred


@dataclass
class Template:
    index: int
    rr_group: str
    total: np.ndarray  # sum of the members' waveforms
    members: list[int] = field(default_factory=list)

    @property
    def mean(self) -> np.ndarray:
        return self.total / len(self.members)


class TemplateClusterer:
    """``add(key, wave, group)`` assigns one beat (its ``qrs_wave`` and ``rr_group``) and returns its
    template's index."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.templates: list[Template] = []
        self._units: list[np.ndarray] = []  # unit-norm mean of each template, kept current

    def add(self, key: int, wave: np.ndarray, group: str) -> int:
        wave = np.asarray(wave, dtype=np.float64)
        unit = _unit(wave)
        best, best_r = None, self.threshold
        for template, mean_unit in zip(self.templates, self._units):
            if template.rr_group != group:
                continue
            r = float(unit @ mean_unit)
            if r >= best_r:
                best, best_r = template, r
        if best is None:
            best = Template(len(self.templates), group, np.zeros_like(wave))
            self.templates.append(best)
            self._units.append(unit)
        best.total += wave
        best.members.append(key)
        self._units[best.index] = _unit(best.mean)
        return best.index
