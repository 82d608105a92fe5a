"""Beat templates: online grouping of ECG beats by morphology and RR, as Holter review uses them.

Method (leader clustering, one pass, in arrival order, nothing revisited): each template keeps the
running mean of its members' waveform features (both leads, ``ECG_LEADS`` × bins of the stored
beat features) and an RR group. A new beat joins the template of its RR group whose mean waveform
has the highest Pearson correlation with the beat's, if that correlation reaches ``THRESHOLD``;
otherwise it starts a new template. RR group: *premature* when the previous RR is below
``PREMATURE_RATIO`` of the local mean RR (the shape of an S beat is normal, its timing is not), else
*regular*. Correlation ignores amplitude, so wide ventricular beats and narrow ones separate while a
drifting baseline gain does not split a template.

``THRESHOLD`` was fitted on the first 5 minutes of the DS1 records other than 208 (reference R peaks,
``python -m bench.templates_fit``): the lowest value (fewest templates) whose member purity (beats
whose AAMI class is their template's majority class) reached 99 % overall and 97 % over the non-N
beats: 99.88 % and 97.8 % at 0.90, 19.8 templates per record; the table is in
``bench/results/templates_fit.md``.
``PREMATURE_RATIO`` is the usual prematurity criterion, not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from signals.ecg_features import DEFAULT_WINDOW, ECG_LEADS, RR_FEATURES

THRESHOLD = 0.90
PREMATURE_RATIO = 0.85
WAVE_DIM = ECG_LEADS * DEFAULT_WINDOW.points
_RR_PREV_OVER_LOCAL = WAVE_DIM + RR_FEATURES.index("rr_prev_over_local")


def rr_group(features: np.ndarray) -> str:
    return "premature" if float(features[_RR_PREV_OVER_LOCAL]) < PREMATURE_RATIO else "regular"


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
    """``add(key, features)`` assigns one beat and returns its template's index."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.templates: list[Template] = []
        self._units: list[np.ndarray] = []  # unit-norm mean of each template, kept current

    def add(self, key: int, features: np.ndarray) -> int:
        wave = np.asarray(features[:WAVE_DIM], dtype=np.float64)
        group = rr_group(features)
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
