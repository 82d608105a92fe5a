"""Resampling device rates to 360 Hz: R peaks stay put, and streaming equals offline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signals.mitbih import read_record
from signals.resample import StreamResampler, map_indices, rational_ratio, resample

DEVICE_RATES = [250.0, 500.0, 128.0, 257.0]


@pytest.fixture(scope="module")
def record_100():
    return read_record("100")


def r_peak_positions(lead: np.ndarray, centres: np.ndarray, half: int) -> np.ndarray:
    """Largest deviation from the local median within +-half samples of each centre."""
    out = np.empty_like(centres)
    for k, c in enumerate(centres):
        lo = max(c - half, 0)
        part = lead[lo : c + half + 1]
        out[k] = lo + int(np.argmax(np.abs(part - np.median(part))))
    return out


def test_rational_ratios() -> None:
    ratios = [rational_ratio(fs, 360.0) for fs in DEVICE_RATES]
    assert ratios == [(36, 25), (18, 25), (45, 16), (360, 257)]
    up, down = rational_ratio(249.97, 360.0)  # not exact: the ratio is approximated
    assert down <= 1000 and abs(249.97 * up / down - 360.0) < 1e-3


@pytest.mark.parametrize("fs", DEVICE_RATES)
def test_round_trip_keeps_r_peaks_within_one_sample(record_100, fs: float) -> None:
    reference = record_100.beat_samples
    original = r_peak_positions(record_100.signal[0], reference, 15)
    device = resample(record_100.signal, 360.0, fs)
    assert device.shape[1] == int(np.ceil(650000 * fs / 360.0))
    back = resample(device, fs, 360.0)
    assert np.max(np.abs(r_peak_positions(back[0], reference, 15) - original)) <= 1
    mapped_back = map_indices(map_indices(reference, 360.0, fs), fs, 360.0)
    assert np.max(np.abs(mapped_back - reference)) <= 1
    # At the device rate the R peak sits at the mapped index (one device sample) for >= 99.9 %.
    at_device = r_peak_positions(device[0], map_indices(reference, 360.0, fs), int(15 * fs / 360))
    assert np.mean(np.abs(at_device - map_indices(original, 360.0, fs)) <= 1) >= 0.999


@pytest.mark.parametrize("fs", DEVICE_RATES + [360.0])
def test_stream_resampler_equals_offline(record_100, fs: float) -> None:
    device = resample(record_100.signal[:, : 360 * 60], 360.0, fs)
    offline = resample(device, fs, 360.0)
    stream = StreamResampler(fs, 360.0, 2)
    parts, lo = [], 0
    for size in [1, 7, 333, 2500, 3601, 10, 4999] * 20:
        parts.append(stream.push(device[:, lo : lo + size]))
        stream = StreamResampler.from_state(json.loads(json.dumps(stream.state())))
        lo += size
        if lo >= device.shape[1]:
            break
    streamed = np.concatenate(parts, axis=1)
    # All but the last 0.1 s or less (waiting for inputs after the end) come out, bit for bit.
    assert offline.shape[1] - 36 <= streamed.shape[1] <= offline.shape[1]
    assert np.array_equal(streamed, offline[:, : streamed.shape[1]])
