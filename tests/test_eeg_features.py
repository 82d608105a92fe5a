"""EEG windows and features on the staged CHB-MIT crops: stream == offline, labels, signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import signal

from signals import chbmit
from signals.eeg_features import (
    EEG_CLASSES,
    EEG_FEATURE_DIM,
    EegStream,
    FeatureConfig,
    WindowTable,
    edf_windows,
    window_table,
)


@pytest.fixture(scope="module")
def crops() -> dict[str, chbmit.CropRow]:
    return {row.record: row for row in chbmit.read_crops()}


@pytest.fixture(scope="module")
def table() -> WindowTable:
    return window_table()


def push_in_segments(
    stream: EegStream, samples: np.ndarray, fs: float, channels: list[str], segment_s: float
) -> list:
    windows = []
    step = int(round(segment_s * fs))
    for lo in range(0, samples.shape[1], step):
        windows += stream.push(samples[:, lo : lo + step], fs, channels, lo / fs).windows
    return windows


def test_stream_in_3s_segments_equals_window_table(crops, table: WindowTable) -> None:
    row = crops["chb01_21"]  # 93 s: 46 windows, 1 s left over
    recording = chbmit.read_edf(row.after60_file)
    windows = push_in_segments(
        EegStream(), recording.samples_uv, 256.0, list(recording.channels), 3.0
    )
    rows = (table.record == "chb01_21") & (table.crop == "after60")
    assert len(windows) == rows.sum() == 46
    assert np.array_equal(np.stack([w.features for w in windows]), table.X[rows])
    assert (
        [w.offset_s for w in windows]
        == table.offset_s[rows].tolist()
        == [2.0 * k for k in range(46)]
    )
    assert windows[5].samples.shape == (18, 512)
    assert windows[0].features.dtype == np.float32 and windows[0].features.shape == (
        EEG_FEATURE_DIM,
    )


def test_state_round_trip_continues_bit_for_bit(crops) -> None:
    recording = chbmit.read_edf(crops["chb01_18"].seizure_file)
    names = list(recording.channels)
    whole = EegStream().push(recording.samples_uv, 256.0, names, 10.0).windows
    stream, windows = EegStream(), []
    for lo in range(0, recording.samples_uv.shape[1], 700):  # segments not aligned to windows
        stream = EegStream.from_state(json.loads(json.dumps(stream.state())))
        windows += stream.push(
            recording.samples_uv[:, lo : lo + 700], 256.0, names, 10.0 + lo / 256
        ).windows
    assert len(windows) == len(whole) == 45
    assert windows[0].offset_s == 10.0
    assert np.array_equal(
        np.stack([w.features for w in windows]), np.stack([w.features for w in whole])
    )


def test_device_at_another_rate_is_resampled_to_the_same_windows(crops) -> None:
    recording = chbmit.read_edf(crops["chb01_03"].seizure_file)
    native, _ = edf_windows(crops["chb01_03"].seizure_file)
    names = list(recording.labels)
    for fs in (200.0, 500.0):
        device = signal.resample_poly(recording.samples_uv, int(fs), 256, axis=1)
        whole = EegStream().push(device, fs, names, 0.0).windows
        segmented = push_in_segments(EegStream(), device, fs, names, 1.5)
        # The newest input samples wait for the filter's future half, so window 20 of a
        # 40 s crop is not complete yet.
        assert len(whole) == len(segmented) == 19
        assert np.array_equal(
            np.stack([w.samples for w in segmented]), np.stack([w.samples for w in whole])
        )
        features = np.stack([w.features for w in segmented])
        # Log band powers below 25 Hz survive the round trip 256 -> fs -> 256 Hz.
        assert np.abs(features[1:] - native[1:19]).max() < 0.02


def test_gap_restarts_the_grid_and_overlap_is_rejected(crops) -> None:
    recording = chbmit.read_edf(crops["chb01_15"].seizure_file)
    names = list(recording.channels)
    stream = EegStream()
    first = stream.push(recording.samples_uv[:, :1000], 256.0, names, 0.0)
    assert not first.restarted and len(first.windows) == 1
    resumed = stream.push(recording.samples_uv[:, 2000:3100], 256.0, names, 2000 / 256)
    assert resumed.restarted
    assert [w.offset_s for w in resumed.windows] == [2000 / 256, 2000 / 256 + 2.0]
    with pytest.raises(ValueError, match="already has data"):
        stream.push(recording.samples_uv[:, :10], 256.0, names, 5.0)
    with pytest.raises(ValueError, match="channels"):
        stream.push(recording.samples_uv[:3, :10], 256.0, names, 3100 / 256)


def test_window_labels_follow_crops_csv(table: WindowTable) -> None:
    seizure = table.crop == "seizure"
    assert (table.y[seizure] == EEG_CLASSES.index("seizure")).all()
    for index, row in enumerate(chbmit.read_crops()):  # a record can hold two seizures
        after = (table.seizure == index) & (table.crop == "after60")
        assert set(table.record[after]) == {row.record}
        offsets, labels = table.offset_s[after], table.y[after]
        assert len(offsets) == int(row.after60_s // 2)
        assert (labels[offsets >= row.after60_ictal_s] == EEG_CLASSES.index("background")).all()
        assert (labels[offsets + 2.0 <= row.after60_ictal_s] == EEG_CLASSES.index("seizure")).all()
    assert table.X.shape == (len(table.y), EEG_FEATURE_DIM)
    assert np.isfinite(table.X).all()


def test_band_powers_separate_seizure_from_post_ictal(table: WindowTable) -> None:
    """chb01: nearest class mean on the current window's standardised log band powers, trained
    on 4 seizures and tested on the other 3."""
    current = table.X[:, -FeatureConfig(stack=1).dim :].astype(np.float64)
    chb01 = table.patient == "chb01"
    post_ictal = (table.crop == "after60") & (table.ictal_fraction == 0)
    usable = chb01 & ((table.crop == "seizure") | post_ictal)
    seizures = sorted(set(table.seizure[chb01]))
    train = usable & np.isin(table.seizure, seizures[:4])
    test = usable & ~train
    mean, std = current[train].mean(axis=0), current[train].std(axis=0) + 1e-9
    z = (current - mean) / std
    centroids = np.stack([z[train & (table.y == k)].mean(axis=0) for k in (0, 1)])
    predicted = np.linalg.norm(z[test][:, None] - centroids[None], axis=2).argmin(axis=1)
    truth = table.y[test]
    recall = [(predicted[truth == k] == k).mean() for k in (0, 1)]
    assert min(recall) > 0.8, recall


def test_raw_variant_is_the_decimated_window(crops) -> None:
    config = FeatureConfig(kind="raw", stack=1)
    features, offsets = edf_windows(crops["chb01_04"].seizure_file, config)
    assert features.shape == (13, 18 * 128) and config.dim == 18 * 128
    recording = chbmit.read_edf(crops["chb01_04"].seizure_file)
    first = recording.samples_uv[recording.channels.index("FP1-F7"), 512:1024]
    assert np.allclose(features[1, :128], signal.resample_poly(first, 1, 4), atol=1e-3)
