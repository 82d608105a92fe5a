"""What differs between ECG and EEG, in one object per modality.

A segment's units, the lowest sampling rate its features can use, how many channels it may carry,
how its samples become windows and features, and how a stored window is plotted: the daemon's
routes, ingest and feature extraction ask the segment's ``Modality`` instead of branching on its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from signals.ecg_features import ECG_FS, EcgStream
from signals.ecg_features import MIN_FS as ECG_MIN_FS
from signals.eeg_features import CANONICAL_CHANNELS, EEG_FS, EegStream
from signals.montage import Derivation


@dataclass(frozen=True)
class Segment:
    modality: str
    samples: np.ndarray  # (channels, n) in the modality's units
    fs: float
    start: float
    channels: tuple[str, ...]
    r_peaks: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Window:
    """One beat (ECG) or 2 s window (EEG) cut from a segment."""

    offset_s: float  # from the start of the stream: the R peak, or the window's start
    plot: np.ndarray  # (channels, n) samples kept for the page, at the modality's ``plot_fs``
    marker: int | None  # the R peak's index in ``plot``; None for EEG
    features: np.ndarray  # what the model reads


@dataclass(frozen=True)
class Extracted:
    windows: list[Window]
    ignored_channels: list[str]
    missing_channels: list[str]
    state: dict[str, Any]  # the stream's state after this segment
    derived_channels: list[Derivation] = field(default_factory=list)


@dataclass(frozen=True)
class Modality(ABC):
    name: str
    units: Mapping[str, float]  # factor from each accepted unit to the one the features expect
    default_units: str
    min_fs: float
    max_channels: int | None
    plot_fs: float  # rate of the samples stored with each window

    @abstractmethod
    def extract(self, state: dict[str, Any] | None, segment: Segment) -> Extracted:
        """Continue a stream from ``state`` with one segment; raises ``SegmentRejected`` (or a
        ``ValueError``) for a segment it cannot use."""

    def plot_channels(self, channels: list[str], n_channels: int) -> list[str]:
        """Names of the rows of a stored window's samples."""
        if len(channels) == n_channels:
            return channels
        return [f"lead {index + 1}" for index in range(n_channels)]


class EcgModality(Modality):
    def extract(self, state: dict[str, Any] | None, segment: Segment) -> Extracted:
        stream = EcgStream.from_state(state) if state else EcgStream()
        r_peaks = None if segment.r_peaks is None else np.asarray(segment.r_peaks, dtype=np.int64)
        beats = stream.push(segment.samples, segment.fs, segment.start, r_peaks)
        windows = [Window(b.offset_s, b.context, b.context_r_index, b.features) for b in beats]
        return Extracted(windows, [], [], stream.state())


class EegModality(Modality):
    def extract(self, state: dict[str, Any] | None, segment: Segment) -> Extracted:
        stream = EegStream.from_state(state) if state else EegStream()
        pushed = stream.push(segment.samples, segment.fs, list(segment.channels), segment.start)
        windows = [Window(w.offset_s, w.samples, None, w.features) for w in pushed.windows]
        return Extracted(
            windows, list(pushed.ignored_channels), list(pushed.missing_channels), stream.state(),
            list(pushed.derived_channels),
        )

    def plot_channels(self, channels: list[str], n_channels: int) -> list[str]:
        # Stored EEG windows are already in the canonical montage, whatever the device sent.
        return list(CANONICAL_CHANNELS)


MODALITIES: Mapping[str, Modality] = MappingProxyType({
    "ecg": EcgModality(
        "ecg", MappingProxyType({"mV": 1.0, "uV": 1e-3, "V": 1e3}), "mV", ECG_MIN_FS, max_channels=2,
        plot_fs=ECG_FS,
    ),
    # Below 64 Hz the 0.5-25 Hz bands the EEG features use are not all under Nyquist.
    "eeg": EegModality(
        "eeg", MappingProxyType({"uV": 1.0, "mV": 1e3, "V": 1e6}), "uV", 64.0, max_channels=None,
        plot_fs=EEG_FS,
    ),
})


def extract(state: dict[str, Any] | None, segment: Segment) -> Extracted:
    """The segment's modality extracts it (a module-level function, so that worker processes can run it)."""
    return MODALITIES[segment.modality].extract(state, segment)
