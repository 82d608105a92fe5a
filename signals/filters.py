"""IIR filters: causal with carried state for streaming, zero-phase for offline work.

Filters are Butterworth designs in second-order sections. ``CausalFilter`` keeps the ``sosfilt``
state between segments, so filtering a stream segment by segment gives the same output as
``causal_filter`` on the whole signal. Both start from the steady state for the first sample
(``sosfilt_zi`` scaled by it), which avoids the start-up transient a DC offset would cause.
``zero_phase_filter`` (``sosfiltfilt``'s method) has no delay but needs the whole signal.

The steady state of a design is computed once: ``sosfiltfilt`` solves for it on every call, which
on a 14 s two-lead ECG chunk costs more than the filtering itself, and streaming QRS detection
filters one such chunk per segment.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi, sosfiltfilt, sosfreqz
from scipy.signal._sosfilt import _sosfilt


@lru_cache(maxsize=64)
def butter_sos(
    fs: float, low_hz: float | None = None, high_hz: float | None = None, order: int = 2
) -> np.ndarray:
    """Band-pass (both edges), high-pass (low edge only) or low-pass (high edge only).

    Cached, so callers must not modify the array: streaming detection designs the same filter for
    every segment. (scipy's filters need a writable array, so it is not marked read-only.)"""
    return _design(fs, low_hz, high_hz, order)


def _design(fs: float, low_hz: float | None, high_hz: float | None, order: int) -> np.ndarray:
    if low_hz is not None and high_hz is not None:
        return butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    if low_hz is not None:
        return butter(order, low_hz, btype="highpass", fs=fs, output="sos")
    if high_hz is not None:
        return butter(order, high_hz, btype="lowpass", fs=fs, output="sos")
    raise ValueError("give low_hz, high_hz or both")


@lru_cache(maxsize=64)
def _design_constants(sos_bytes: bytes, sections: int) -> tuple[np.ndarray, int]:
    sos = np.frombuffer(sos_bytes, dtype=np.float64).reshape(sections, 6)
    return sosfilt_zi(sos), _pad_length(sos)


def _constants(sos: np.ndarray) -> tuple[np.ndarray, int]:
    """``sosfilt_zi(sos)`` (the state (sections, 2) at rest for a constant input of 1) and
    ``sosfiltfilt``'s padding for the design, computed once per design."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    return _design_constants(sos.tobytes(), sos.shape[0])


def _initial_state(sos: np.ndarray, first: np.ndarray) -> np.ndarray:
    """sosfilt state (sections, channels, 2) at rest for a constant input equal to ``first``."""
    return _constants(sos)[0][:, None, :] * np.asarray(first, dtype=np.float64)[None, :, None]


def causal_filter(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Causal filtering of a whole (channels, samples) signal."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y, _ = sosfilt(sos, x, axis=1, zi=_initial_state(sos, x[:, 0]))
    return y


def zero_phase_filter(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Forward-backward filtering along the last axis: no delay, squared magnitude response.

    The same output as ``scipy.signal.sosfiltfilt(sos, x, axis=-1)`` with its defaults (odd
    extension by three filter lengths, each pass started at rest on its first sample). The passes
    call scipy's C kernel behind ``sosfilt`` (private; ``tests/test_filters.py`` checks the result
    against ``sosfiltfilt`` bit for bit): on a 14 s two-lead ECG chunk, ``sosfilt``'s argument checks
    and axis moves cost a third of the filter, and streaming QRS detection runs two per segment."""
    x = np.asarray(x, dtype=np.float64)
    steady, pad = _constants(sos)
    if x.shape[-1] <= pad:
        return sosfiltfilt(sos, x, axis=-1)  # which explains why the signal is too short
    rows = x.reshape(-1, x.shape[-1])
    extended = np.empty((rows.shape[0], rows.shape[1] + 2 * pad))
    extended[:, :pad] = 2.0 * rows[:, :1] - rows[:, pad:0:-1]
    extended[:, pad:-pad] = rows
    extended[:, -pad:] = 2.0 * rows[:, -1:] - rows[:, -2 : -pad - 2 : -1]
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    _filter_rows_at_rest(sos, steady, extended)
    backward = np.ascontiguousarray(extended[:, ::-1])
    _filter_rows_at_rest(sos, steady, backward)
    return backward[:, ::-1][:, pad:-pad].reshape(x.shape)


def _filter_rows_at_rest(sos: np.ndarray, steady: np.ndarray, rows: np.ndarray) -> None:
    """Filter the C-contiguous (signals, samples) ``rows`` in place, each started at rest on its
    first sample (``steady`` is the design's unit steady state; the kernel wants its state as
    (signals, sections, 2))."""
    _sosfilt(sos, rows, np.ascontiguousarray(steady[None, :, :] * rows[:, :1, None]))


def _pad_length(sos: np.ndarray) -> int:
    """``sosfiltfilt``'s default padding: three times the taps of the cascade."""
    taps = 2 * sos.shape[0] + 1 - min(int(np.sum(sos[:, 2] == 0)), int(np.sum(sos[:, 5] == 0)))
    return 3 * taps


def group_delay_samples(sos: np.ndarray, freq_hz: float, fs: float) -> float:
    """Group delay of the causal filter at one frequency, in samples (from the phase slope)."""
    step = 1e-3 * fs
    w, h = sosfreqz(sos, worN=[freq_hz - step, freq_hz + step], fs=fs)
    phase = np.unwrap(np.angle(h))
    return float(-(phase[1] - phase[0]) / (2 * np.pi * (w[1] - w[0])) * fs)


class CausalFilter:
    """``sosfilt`` over consecutive segments of a (channels, samples) stream."""

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.n_channels = n_channels
        self.zi: np.ndarray | None = None  # set from the first sample seen

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[0] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {x.shape[0]}")
        if x.shape[1] == 0:
            return x.copy()
        if self.zi is None:
            self.zi = _initial_state(self.sos, x[:, 0])
        y, self.zi = sosfilt(self.sos, x, axis=1, zi=self.zi)
        return y

    def state(self) -> dict[str, object]:
        return {
            "sos": self.sos.tolist(),
            "n_channels": self.n_channels,
            "zi": None if self.zi is None else self.zi.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> CausalFilter:
        made = cls(np.asarray(state["sos"], dtype=np.float64), int(state["n_channels"]))
        if state["zi"] is not None:
            made.zi = np.asarray(state["zi"], dtype=np.float64)
        return made
