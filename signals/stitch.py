"""A continuous signal rebuilt from stored, overlapping pieces of one stream.

The daemon keeps, per ECG beat, the samples around it (2 s before to 1 s after R, at 360 Hz), and
per EEG window its 2 s of samples. Pieces of one stream come from the same resampled buffer, so
where they overlap they hold the same values; a time no piece covers (a gap in the stream, or more
than 3 s between beats) stays NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def stitch(pieces: Iterable[tuple[float, np.ndarray]], fs: float, start_s: float, duration_s: float,
           n_channels: int) -> np.ndarray:
    """(channels, round(duration_s * fs)) float64 from ``(piece start in s, (channels, m) samples)``."""
    n = int(round(duration_s * fs))
    out = np.full((n_channels, n), np.nan)
    for piece_start, samples in pieces:
        lo = int(round((piece_start - start_s) * fs))
        a, b = max(lo, 0), min(lo + samples.shape[1], n)
        if b > a:
            out[:, a:b] = samples[:, a - lo:b - lo]
    return out
