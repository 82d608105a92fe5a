"""Causal filters carried across segments, against offline causal and zero-phase filtering."""

from __future__ import annotations

import json

import numpy as np
from scipy.signal import sosfiltfilt

from signals.filters import (
    CausalFilter,
    butter_sos,
    causal_filter,
    group_delay_samples,
    zero_phase_filter,
)
from signals.mitbih import read_record


def test_streaming_equals_offline_causal_filtering() -> None:
    x = read_record("208").signal
    sos = butter_sos(360.0, 0.5, 40.0, order=4)
    stream = CausalFilter(sos, n_channels=2)
    parts = []
    for lo in range(0, x.shape[1], 3600):  # 10 s segments, restarted from JSON each time
        parts.append(stream.process(x[:, lo : lo + 3600]))
        stream = CausalFilter.from_state(json.loads(json.dumps(stream.state())))
    streamed = np.concatenate(parts, axis=1)
    assert streamed.shape == x.shape
    assert np.max(np.abs(streamed - causal_filter(x, sos))) < 1e-9


def test_causal_output_is_the_zero_phase_output_delayed_by_the_group_delay() -> None:
    """For the 0.5-40 Hz ECG band (order 2) the group delay at 10 Hz is about 2.5 samples.

    Asserted on MLII of record 100 (5 min, first 2 s skipped): the lag (0-60 samples) that best
    aligns the causal output with the zero-phase output is within one sample of that delay, and
    at that lag the two correlate above 0.97.
    """
    x = read_record("100").signal[0, : 360 * 300]
    sos = butter_sos(360.0, 0.5, 40.0, order=2)
    causal = causal_filter(x, sos)[0]
    zero_phase = zero_phase_filter(x, sos)
    delay = group_delay_samples(sos, 10.0, 360.0)
    assert 1.5 < delay < 3.5
    skip, tail = 720, 60
    end = x.size - tail
    reference = zero_phase[skip:end]
    corr = [np.corrcoef(causal[skip + lag : end + lag], reference)[0, 1] for lag in range(tail)]
    best = int(np.argmax(corr))
    assert abs(best - delay) <= 1.0
    assert corr[best] > 0.97
    assert corr[best] - corr[0] > 0.005  # the delay is real: unshifted alignment is worse


def test_zero_phase_filter_is_scipys_sosfiltfilt_to_the_last_bit() -> None:
    """The steady state is cached, the output must not move: QRS figures were measured on it."""
    x = read_record("208").signal[:, :5040]
    for sos in (butter_sos(360.0, 8.0, 20.0), butter_sos(360.0, 0.5, 40.0, order=4), butter_sos(360.0, None, 40.0)):
        for signal in (x, x[1]):
            assert np.array_equal(zero_phase_filter(signal, sos), sosfiltfilt(sos, signal, axis=-1))
