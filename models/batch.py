"""Checks on the arrays one predict or learn call receives, the same for every engine."""

from __future__ import annotations

import numpy as np


def check_features(x: np.ndarray, input_dim: int) -> np.ndarray:
    """``x`` as given, once it is known to be a finite, non-empty ``(batch, input_dim)`` batch."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ValueError(f"x must have shape (batch, {input_dim}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    return x


def check_labels(y: np.ndarray, batch: int, num_classes: int) -> np.ndarray:
    """``y`` as given, once it is known to hold ``batch`` class indices in ``[0, num_classes)``."""
    labels = np.asarray(y)
    if labels.shape != (batch,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must be {batch} integer labels, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels}")
    return labels
