"""Replaying a MIT-BIH record as device requests, and labelling beats from its annotations."""

from __future__ import annotations

import json

import numpy as np

from signals.mitbih import read_record
from signals.replay import ecg_reference, ecg_requests


def test_ecg_requests_cover_the_record_in_order() -> None:
    record = read_record("100")
    bodies = list(ecg_requests("100", include_r_peaks=True))
    assert len(bodies) == 181  # 1805.6 s: 180 full 10 s segments and a last short one
    first = bodies[0]
    keys = {"patient_id", "modality", "fs", "channels", "start", "samples", "units", "r_peaks"}
    assert set(first) == keys
    assert first["patient_id"] == "mitdb-100" and first["modality"] == "ecg"
    assert first["units"] == "mV"
    assert first["fs"] == 360.0 and first["channels"] == ["MLII", "V5"]
    assert np.asarray(first["samples"]).shape == (2, 3600)
    assert [b["start"] for b in bodies[:3]] == [0.0, 10.0, 20.0]
    json.dumps(first)
    samples = np.concatenate([np.asarray(b["samples"]) for b in bodies], axis=1)
    assert np.array_equal(samples, record.signal)
    peaks = np.concatenate([np.asarray(b["r_peaks"]) + round(b["start"] * 360) for b in bodies])
    assert np.array_equal(peaks, record.beat_samples)
    assert "r_peaks" not in next(ecg_requests("100"))
    short = list(ecg_requests("208", minutes=1.0, patient_id="bed-3"))
    assert len(short) == 6 and short[0]["patient_id"] == "bed-3"


def test_reference_labels_within_150_ms() -> None:
    record = read_record("208")
    reference = ecg_reference("208")
    symbols = dict(zip(record.beat_samples.tolist(), record.beat_symbols))
    v = next(s for s, sym in symbols.items() if sym == "V")
    f = next(s for s, sym in symbols.items() if sym == "F")
    assert reference.label_at(v / 360.0 + 0.1) == "V"
    assert reference.label_at(f / 360.0 - 0.149) == "F"
    rr = np.diff(record.beat_samples)
    k = int(np.argmax(rr))  # the longest pause: its middle is far from any beat
    assert reference.label_at((record.beat_samples[k] + rr[k] / 2) / 360.0) is None
    labels = [reference.label_at(t) for t in record.beat_times_s]
    assert labels.count("V") == 992 and labels.count("F") == 373
