"""R-peak detection through a real daemon, for a device unlike the MIT-BIH recorder."""

from __future__ import annotations

import numpy as np

from signals.mitbih import read_record
from signals.qrs import match_beats
from signals.replay import segment_bodies
from signals.resample import resample
from tests.test_daemon import post_all

DEVICE_FS = 128.0


def test_a_128_hz_device_without_r_peaks_keeps_se_and_ppv_above_99_percent(daemon) -> None:
    """Record 208 (PVCs, couplets, fusion beats), first 10 minutes resampled to 128 Hz and sent as
    10 s segments with no R peaks: the beats the daemon answers match the reference beats."""
    record = read_record("208")
    minutes = 10.0
    samples = resample(record.signal[:, : int(minutes * 60 * record.fs)], record.fs, DEVICE_FS)
    bodies = list(segment_bodies(
        samples, DEVICE_FS, list(record.leads), patient_id="bed-128", modality="ecg", units="mV",
        segment_s=10.0,
    ))
    assert bodies[0]["fs"] == DEVICE_FS and len(bodies[0]["samples"][0]) == 1280
    with daemon.client() as client:
        windows = post_all(client, bodies)
    detected = np.rint(np.array([w["offset_s"] for w in windows]) * record.fs).astype(np.int64)
    # The stream holds its last beat until the next one arrives: score up to the last answer.
    end = int(detected.max())
    reference = record.beat_samples[record.beat_samples <= end]
    match = match_beats(reference, detected, record.fs, exclude=record.flutter, score_from=int(record.fs))
    assert match.reference > 700
    assert match.sensitivity >= 0.99 and match.ppv >= 0.99, match
