"""SzCORE event scoring and window metrics on hand-built label arrays (formula tests)."""

from __future__ import annotations

import numpy as np
import pytest

from signals.scoring import event_scores, window_mask, window_scores


def mask(duration_s: int, events: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros(duration_s, dtype=bool)
    for start, end in events:
        out[start:end] = True
    return out


def test_event_scoring_on_a_known_hypothesis() -> None:
    # Two hours at 1 Hz, three seizures.
    reference = mask(7200, [(100, 160), (2000, 2060), (5000, 5100)])
    hypothesis = mask(
        7200,
        [
            (110, 130),  # detects seizure 1, 10 s after onset
            (2080, 2090),  # after seizure 2 ended, inside the +60 s tolerance: detects it, 80 s
            (3000, 3010),  # false alarm
            (3500, 3505),  # false alarm: 490 s after the previous one, not merged
            (6000, 6400),  # 400 s: split at 300 s into two false alarms
        ],
    )
    scores = event_scores(reference, hypothesis, fs=1.0)
    assert (scores.seizures, scores.detected, scores.false_positives) == (3, 2, 4)
    assert scores.sensitivity == pytest.approx(2 / 3)
    assert scores.precision == pytest.approx(2 / 6)
    assert scores.f1 == pytest.approx(2 * 2 / (2 * 2 + 4 + 1))
    assert scores.fp_per_24h == pytest.approx(4 / (7200 / 86400))
    assert scores.latencies_s == (10.0, 80.0, None)
    assert scores.median_latency_s == 45.0


def test_event_scoring_tolerances_and_merging() -> None:
    reference = mask(3600, [(1000, 1040)])
    early = mask(3600, [(975, 980)])  # 25 s before onset: inside the 30 s tolerance
    too_early = mask(3600, [(960, 965)])  # 35 s before: a false alarm and a miss
    two_close = mask(3600, [(2000, 2005), (2080, 2085)])  # 75 s apart: merged, one false alarm
    assert event_scores(reference, early).detected == 1
    assert event_scores(reference, early).latencies_s == (0.0,)
    missed = event_scores(reference, too_early)
    assert (missed.detected, missed.false_positives, missed.latencies_s) == (0, 1, (None,))
    assert event_scores(reference, two_close).false_positives == 1
    silent = event_scores(reference, np.zeros(3600, dtype=bool))
    assert silent.precision is None and silent.sensitivity == 0.0 and silent.fp_per_24h == 0.0


def test_window_mask_and_window_scores() -> None:
    decisions = np.array([0, 1, 1, 0])
    assert window_mask(decisions, window_s=2.0, fs=1.0, duration_s=9.0).astype(int).tolist() == [
        0, 0, 1, 1, 1, 1, 0, 0, 0,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        window_mask(decisions, window_s=2.0, fs=0.3)
    scores = window_scores(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 1, 0]))
    assert (scores.sensitivity, scores.specificity) == (0.5, pytest.approx(2 / 3))
    assert window_scores(np.zeros(3), np.zeros(3)).sensitivity is None
