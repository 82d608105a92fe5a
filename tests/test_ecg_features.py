"""ECG beat features: the live stream and the offline table agree, on real MIT-BIH records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signals.ecg_features import (
    ECG_FEATURE_DIM,
    RR_FEATURES,
    EcgStream,
    beat_table,
    feature_names,
)
from signals.mitbih import read_record
from signals.qrs import match_beats
from signals.replay import ecg_requests
from signals.resample import map_indices, resample

RR = {name: 78 + k for k, name in enumerate(RR_FEATURES)}


def restarted(stream: EcgStream) -> EcgStream:
    """What a daemon restart does: the state goes through JSON and back."""
    return EcgStream.from_state(json.loads(json.dumps(stream.state())))


@pytest.fixture(scope="module")
def record_100():
    return read_record("100")


@pytest.fixture(scope="module")
def table_100():
    return beat_table("100")


def test_layout() -> None:
    names = feature_names()
    assert ECG_FEATURE_DIM == len(names) == 2 * 39 + 7
    assert names[0] == "lead0_bin0" and names[39] == "lead1_bin0" and names[78:] == RR_FEATURES


def test_streamed_segments_give_the_offline_table_features() -> None:
    """Record 208 as 10 s device requests with the reference R peaks, the stream restarted from
    its JSON state before every request, against ``beat_table`` (one push of the whole record)."""
    table = beat_table("208")
    assert table.X.shape == (2955, ECG_FEATURE_DIM) and table.X.dtype == np.float32
    stream, beats = EcgStream(), []
    for body in ecg_requests("208", segment_s=10.0, include_r_peaks=True):
        stream = restarted(stream)
        samples, r_peaks = np.asarray(body["samples"]), np.asarray(body["r_peaks"])
        beats += stream.push(samples, body["fs"], body["start"], r_peaks)
    # Beats wait for their next R and 1 s of signal after them: the record's last second waits.
    assert len(beats) == np.sum(table.r_sample[:-1] + 360 <= 650000)
    beats += stream.flush()
    np.testing.assert_allclose(np.stack([b.features for b in beats]), table.X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([b.offset_s for b in beats], table.time_s, rtol=0, atol=1e-9)


def test_a_beat_waits_for_its_next_r_and_one_second_of_signal(record_100) -> None:
    reference = record_100.beat_samples
    in_segment = reference[reference < 3600]
    stream = EcgStream()
    beats = stream.push(record_100.signal[:, :3600], 360.0, 0.0, in_segment)
    expected = [r for r, nxt in zip(in_segment, in_segment[1:]) if r + 360 <= 3600]
    assert np.allclose([b.offset_s * 360 for b in beats], expected)
    assert len(expected) < len(in_segment)
    held = stream.state()["pending"]
    assert held == [int(r) for r in in_segment[len(expected) :]]


def test_context_and_rr_features_of_a_beat(record_100, table_100) -> None:
    reference = record_100.beat_samples
    k = int(np.searchsorted(reference, 100 * 360))
    r = int(reference[k])
    given = reference[reference < r + 720]
    beats = EcgStream().push(record_100.signal[:, : r + 720], 360.0, 0.0, given)
    beat = beats[k]
    assert beat.context.shape == (2, 1080) and beat.context_r_index == 720
    assert np.array_equal(beat.context, record_100.signal[:, r - 720 : r + 360].astype(np.float32))
    assert beats[0].context_r_index == reference[0]  # cut at the start of the stream
    prev_rr, next_rr = np.diff(reference[k - 1 : k + 2]) / 360.0
    local = np.mean(np.diff(reference[k - 10 : k + 1]) / 360.0)
    mean = np.mean(np.diff(reference[: k + 1]) / 360.0)
    x = table_100.X[k]
    assert x[RR["rr_prev_s"]] == pytest.approx(prev_rr)
    assert x[RR["rr_next_s"]] == pytest.approx(next_rr)
    assert x[RR["rr_local_s"]] == pytest.approx(local) and x[RR["rr_mean_s"]] == pytest.approx(mean)
    assert x[RR["rr_prev_over_local"]] == pytest.approx(prev_rr / local)
    first = table_100.X[0]  # no previous beat: previous RR is taken equal to the next one
    first_rr = (reference[1] - reference[0]) / 360.0
    assert first[RR["rr_prev_s"]] == first[RR["rr_next_s"]] == pytest.approx(first_rr)


def test_rr_ratios_separate_premature_s_beats_from_n() -> None:
    table = beat_table("220")  # 1954 N and 94 A beats
    ratio = table.X[:, RR["rr_prev_over_local"]]
    n, s = ratio[table.y == 0], ratio[table.y == 1]
    assert np.median(s) < 0.75 and 0.97 < np.median(n) < 1.03
    assert np.mean(s < 0.9) > 0.9 and np.mean(n < 0.9) < 0.01


def test_detected_beats_survive_restarts_and_match_the_reference(record_100) -> None:
    x = record_100.signal[:, : 360 * 120]
    plain, restarting = EcgStream(), EcgStream()
    a, b = [], []
    for lo in range(0, x.shape[1], 3600):
        a += plain.push(x[:, lo : lo + 3600], 360.0, lo / 360.0)
        restarting = restarted(restarting)
        b += restarting.push(x[:, lo : lo + 3600], 360.0, lo / 360.0)
    assert [u.offset_s for u in a] == [v.offset_s for v in b]
    assert np.array_equal(np.stack([u.features for u in a]), np.stack([v.features for v in b]))
    detected = np.rint(np.array([u.offset_s for u in a]) * 360).astype(int)
    reference = record_100.beat_samples[record_100.beat_samples <= detected[-1] + 54]
    # Scored from 1 s on: gqrs does not report the beat at 0.2 s, before it has seen a full one.
    match = match_beats(reference, detected, 360.0, score_from=360)
    assert match.fn == 0 and match.fp == 0 and match.tp >= 140


@pytest.mark.parametrize("fs", [128.0, 250.0])
def test_other_device_rates(record_100, fs: float) -> None:
    """A 128 or 250 Hz device: R peaks it sends land within one of its samples of the
    reference; R peaks the stream detects match the reference beat for beat."""
    device = resample(record_100.signal[:, : 360 * 60], 360.0, fs)
    reference = record_100.beat_samples[record_100.beat_samples < 360 * 60]
    device_r = map_indices(reference, 360.0, fs)
    step = int(10 * fs)
    given, detected = EcgStream(), EcgStream()
    with_r, without_r = [], []
    for lo in range(0, device.shape[1], step):
        part = device[:, lo : lo + step]
        inside = device_r[(device_r >= lo) & (device_r < lo + part.shape[1])] - lo
        with_r += given.push(part, fs, lo / fs, inside)
        without_r += detected.push(part, fs, lo / fs)
    times = np.array([b.offset_s for b in with_r])
    assert np.max(np.abs(times - reference[: times.size] / 360.0)) <= 1.0 / fs
    found = np.rint(np.array([b.offset_s for b in without_r]) * 360).astype(int)
    match = match_beats(reference[reference <= found[-1] + 54], found, 360.0, score_from=360)
    assert match.fn == 0 and match.fp == 0 and match.tp >= 65


def test_single_lead_device_gets_a_flat_second_lead(record_100, table_100) -> None:
    reference = record_100.beat_samples[record_100.beat_samples < 3600 * 3]
    beats = EcgStream().push(record_100.signal[:1, : 3600 * 3], 360.0, 0.0, reference)
    features = np.stack([b.features for b in beats])
    assert np.all(features[:, 39:78] == 0)
    assert np.array_equal(features[:, :39], table_100.X[: len(beats), :39])
    assert np.array_equal(features[:, 78:], table_100.X[: len(beats), 78:])


def test_gap_starts_a_new_run_and_overlap_is_refused(record_100) -> None:
    reference = record_100.beat_samples
    first = reference[reference < 3600]
    second = reference[(reference >= 7200) & (reference < 10800)]
    stream = EcgStream()
    before = stream.push(record_100.signal[:, :3600], 360.0, 0.0, first)
    after = stream.push(record_100.signal[:, 7200:10800], 360.0, 20.0, second - 7200)
    flushed = after[: len(first) - len(before)]
    assert np.allclose([b.offset_s for b in before + flushed], first / 360.0)
    last = flushed[-1].features
    assert last[RR["rr_next_s"]] == last[RR["rr_prev_s"]]  # next RR unknown at the gap
    new_run = after[len(flushed) :]
    assert np.allclose([b.offset_s for b in new_run], second[: len(new_run)] / 360.0)
    assert new_run[0].features[RR["rr_prev_s"]] == new_run[0].features[RR["rr_next_s"]]
    with pytest.raises(ValueError, match="before the previous one ended"):
        stream.push(record_100.signal[:, 9000:9360], 360.0, 25.0)
