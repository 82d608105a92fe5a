"""Sampling-rate conversion to the model's rate, offline and streaming, and sample-index mapping.

The ratio ``fs_out / fs_in`` is approximated by a fraction ``up / down`` (denominator at most
1000), so 128, 250, 257 or 500 Hz devices all reach 360 Hz with one polyphase filter
(``scipy.signal.resample_poly``). When the fraction is not exact the output runs at
``fs_in * up / down`` (``EcgStream`` uses that rate for its times, so they stay exact).

``StreamResampler`` produces, segment by segment, the same samples ``resample`` produces for the
whole signal: it keeps just enough input to cover the filter's support and emits an output sample
only once every input it depends on has arrived.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import firwin, resample_poly, upfirdn

MAX_DENOMINATOR = 1000


def rational_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down), coprime, with up / down close to fs_out / fs_in."""
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in} and {fs_out}")
    ratio = (Fraction(fs_out) / Fraction(fs_in)).limit_denominator(MAX_DENOMINATOR)
    return ratio.numerator, ratio.denominator


def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter resample_poly designs by default (Kaiser, beta 5)."""
    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample along the last axis (offline, whole signal)."""
    x = np.asarray(x, dtype=np.float64)
    up, down = rational_ratio(fs_in, fs_out)
    if up == down:
        return x.copy()
    return resample_poly(x, up, down, axis=-1, window=_lowpass(up, down))


def map_indices(indices: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Sample indices at fs_in mapped to the nearest sample at the resampled rate."""
    up, down = rational_ratio(fs_in, fs_out)
    return np.rint(np.asarray(indices, dtype=np.float64) * up / down).astype(np.int64)


class StreamResampler:
    """Segment-by-segment resampling identical to ``resample`` over the concatenated input.

    Output sample k depends on inputs i with |k*down - i*up| <= half_len. The buffer starts at
    an input index that is a multiple of ``down`` so that its outputs land on whole output
    indices. The last few outputs of a segment wait for the next one (a delay of
    about ``half_len / up`` input samples: 10 for upsampling, 10 * down / up for downsampling).
    """

    def __init__(self, fs_in: float, fs_out: float, n_channels: int) -> None:
        self.fs_in = float(fs_in)
        self.fs_out = float(fs_out)
        self.up, self.down = rational_ratio(fs_in, fs_out)
        self.n_channels = n_channels
        self.buffer_start = 0  # absolute input index of buffer[:, 0]
        self.buffer = np.zeros((n_channels, 0))
        self.next_out = 0  # absolute index of the next output sample to emit
        self.half_len = 0
        self.taps = np.ones(1)
        self.delay_out = 0
        if not self.passthrough:
            h = _lowpass(self.up, self.down)
            self.half_len = (len(h) - 1) // 2
            pre_pad = self.down - self.half_len % self.down  # as resample_poly pads
            self.taps = np.concatenate([np.zeros(pre_pad), h * self.up])
            self.delay_out = (self.half_len + pre_pad) // self.down

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.passthrough:
            return x.copy()
        buf = np.concatenate([self.buffer, x], axis=1)
        a, n = self.buffer_start, buf.shape[1]
        up, down, half = self.up, self.down, self.half_len
        # Last output whose whole filter support has arrived: (k*down + half) // up <= a + n - 1.
        last = ((a + n) * up - 1 - half) // down
        if last < self.next_out:
            out = np.zeros((self.n_channels, 0))
        else:
            y = upfirdn(self.taps, buf, up, down, axis=1)
            shift = self.delay_out - a * up // down
            out = y[:, self.next_out + shift : last + 1 + shift]
            self.next_out = last + 1
        # Keep inputs from the first one the next output needs, aligned down to a multiple of down.
        first_needed = max(0, -((half - self.next_out * down) // up))
        keep_from = max(a, first_needed - first_needed % down)
        self.buffer = buf[:, keep_from - a :]
        self.buffer_start = keep_from
        return out

    def state(self) -> dict[str, object]:
        return {
            "fs_in": self.fs_in,
            "fs_out": self.fs_out,
            "n_channels": self.n_channels,
            "buffer_start": self.buffer_start,
            "buffer": self.buffer.tolist(),
            "next_out": self.next_out,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> StreamResampler:
        made = cls(float(state["fs_in"]), float(state["fs_out"]), int(state["n_channels"]))
        made.buffer_start = int(state["buffer_start"])
        buffer = np.asarray(state["buffer"], dtype=np.float64)
        made.buffer = buffer.reshape(made.n_channels, -1)
        made.next_out = int(state["next_out"])
        return made
