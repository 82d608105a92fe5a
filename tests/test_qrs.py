"""R-peak detection against the MIT-BIH reference beats, and the EC57 matching rules."""

from __future__ import annotations

import numpy as np
import pytest

from signals.ecg_features import EcgStream
from signals.mitbih import read_record
from signals.qrs import match_beats, match_pairs


def test_matching_is_one_to_one_within_150_ms() -> None:
    """A formula check on hand-made positions (samples at 360 Hz, 150 ms = 54 samples)."""
    reference = np.array([1000, 1300, 1600, 2500])
    detected = np.array([1010, 1020, 1354, 1655, 3000])
    pairs = match_pairs(reference, detected, 54)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (1, 2)]  # 1020 is a second hit on 1000
    match = match_beats(reference, detected, 360.0)
    assert (match.tp, match.fn, match.fp) == (2, 2, 3)
    assert match.sensitivity == 0.5 and match.ppv == 0.4
    # Excluded intervals drop beats on both sides; score_from counts only what follows it.
    assert match_beats(reference, detected, 360.0, exclude=((1500, 3100),)) == match_beats(
        reference[:2], detected[:3], 360.0
    )
    late = match_beats(reference, detected, 360.0, score_from=1500)
    assert (late.tp, late.fn, late.fp) == (0, 2, 2)


@pytest.mark.parametrize("name", ["105", "108", "203", "222"])
def test_streamed_detection_on_hard_records(name: str) -> None:
    """Minutes 5-10 of records with noise (105), tall P waves (108), multiform PVCs (203) and
    nodal rhythm with atrial flutter (222), sent as 10 s segments: Se and +P >= 99 %."""
    record = read_record(name)
    lo, hi = 300 * 360, 600 * 360
    stream, beats = EcgStream(), []
    for start in range(lo, hi, 3600):
        beats += stream.push(record.signal[:, start : start + 3600], 360.0, start / 360.0)
    beats += stream.flush()
    detected = np.rint(np.array([b.offset_s for b in beats]) * 360).astype(np.int64)
    reference = record.beat_samples[(record.beat_samples >= lo) & (record.beat_samples < hi)]
    # The first second of a stream is skipped, as gqrs needs a beat before it reports one.
    match = match_beats(reference, detected, 360.0, exclude=record.flutter, score_from=lo + 360)
    assert match.reference > 250
    assert match.sensitivity >= 0.99 and match.ppv >= 0.99
