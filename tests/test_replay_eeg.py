"""Replaying a real CHB-MIT crop as device requests, and the labels a clinician would give."""

from __future__ import annotations

import json

import numpy as np

from signals import chbmit
from signals.eeg_features import EegStream, edf_windows
from signals.replay import eeg_requests, eeg_window_label, segment_bounds


def test_segment_bounds_tile_without_drift() -> None:
    bounds = list(segment_bounds(2560, 256.0, 0.3))  # 76.8 samples per segment
    assert len(bounds) == 34 and bounds[0] == (0, 77) and bounds[-1] == (2534, 2560)
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:]))
    assert [hi for _, hi in bounds[:-1]] == [round(k * 76.8) for k in range(1, 34)]


def test_eeg_requests_replay_to_the_offline_windows() -> None:
    row = next(row for row in chbmit.read_crops() if row.record == "chb01_26")
    bodies = list(eeg_requests(row.after60_file, segment_s=3.0))
    assert len(bodies) == 34  # 101 s in 3 s segments
    first = bodies[0]
    assert first["patient_id"] == "chb01" and first["modality"] == "eeg" and first["units"] == "uV"
    assert first["channels"].count("T8-P8") == 2 and len(first["samples"]) == 23
    assert [body["start"] for body in bodies[:3]] == [0.0, 3.0, 6.0]
    json.dumps(first)  # a JSON body as sent

    stream, windows = EegStream(), []
    for body in bodies:
        samples = np.asarray(body["samples"])
        windows += stream.push(samples, body["fs"], body["channels"], body["start"]).windows
    offline, offsets = edf_windows(row.after60_file)
    assert np.array_equal(np.stack([w.features for w in windows]), offline)

    labels = [eeg_window_label(row.after60_file, offset) for offset in offsets]
    assert row.after60_ictal_s == 41.0
    assert labels[:20] == ["seizure"] * 20
    assert labels[20] == "seizure"  # [40, 42) is half ictal
    assert labels[21:] == ["background"] * (len(offsets) - 21)
    assert eeg_window_label(row.seizure_file, 98.0) == "seizure"
    assert next(eeg_requests(row.seizure_file, patient_id="bed-7"))["patient_id"] == "bed-7"
