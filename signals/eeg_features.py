"""EEG windows and their features, for the live stream and for offline tables alike.

One code path: ``window_table`` and ``edf_windows`` push whole files through ``EegStream``, so a
model trained offline sees exactly what the daemon computes from a device's segments.

Stream pipeline, per push: channel names -> canonical montage (``signals.montage``) -> resample
to 256 Hz (``signals.resample.StreamResampler``, only when the device's fs differs) -> append to the
samples left over from earlier pushes -> cut consecutive, non-overlapping windows of
``window_s`` on a grid fixed at the stream's first sample -> features -> stacked with the
previous windows' features.

Band-power features (Shoeb & Guttag 2010): for each of the 18 canonical channels, the log power
in 8 bands 3 Hz wide spanning 0.5-24.5 Hz, from a Welch spectrum (1 s Hann segments, half
overlap, so each band is exactly three 1 Hz bins). Shoeb stacks 3 consecutive 2 s epochs so a
window also sees the 4 s before it; ``stack`` does the same, oldest window first. The previous
windows' features are part of the stream state; at the start of a stream (or after a restart)
the first window stands in for the windows not seen yet.

Layout of a band-power vector (``stack`` = 3, 432 values):
``[window t-2 | window t-1 | window t]``, each block ``channel * 8 + band`` in the order of
``CANONICAL_CHANNELS`` and ``EEG_BANDS_HZ``.

Raw variant (``FeatureConfig(kind="raw", stack=1)``): each window resampled to ``raw_fs`` (64 Hz
by default, anti-aliased by ``resample_poly``), channel-major: ``channel * n + sample``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import signal

from signals import chbmit
from signals.errors import SegmentConflict, SegmentRejected
from signals.montage import CANONICAL_CHANNELS, Derivation, map_channels
from signals.resample import StreamResampler

EEG_FS = 256.0
EEG_WINDOW_S = 2.0
EEG_CLASSES: tuple[str, ...] = ("background", "seizure")
EEG_BANDS_HZ: tuple[tuple[float, float], ...] = tuple(
    (0.5 + 3.0 * i, 3.5 + 3.0 * i) for i in range(8)
)
EEG_STACK = 3
# Floor added before the log, in uV^2: about the 16-bit quantisation noise of a CHB-MIT channel
# in one 3 Hz band, so flat or zero-filled (missing) channels give a finite, constant value.
POWER_FLOOR_UV2 = 1e-3
# A window is labelled seizure when at least this fraction of its samples is ictal.
ICTAL_FRACTION_FOR_SEIZURE = 0.5

_WELCH_SEGMENT = int(EEG_FS)  # 1 s segments: 1 Hz bins, three per band
_N_CANON = len(CANONICAL_CHANNELS)


@dataclass(frozen=True)
class FeatureConfig:
    kind: Literal["bandpower", "raw"] = "bandpower"
    window_s: float = EEG_WINDOW_S
    stack: int = EEG_STACK
    raw_fs: float = 64.0

    def __post_init__(self) -> None:
        if self.kind not in ("bandpower", "raw"):
            raise ValueError(f"kind must be 'bandpower' or 'raw', not {self.kind!r}")
        if abs(self.window_s * EEG_FS - round(self.window_s * EEG_FS)) > 1e-9:
            raise ValueError(f"window_s={self.window_s} is not a whole number of 1/{EEG_FS} s")
        if self.kind == "bandpower" and self.window_samples < _WELCH_SEGMENT:
            raise ValueError("band-power windows must be at least 1 s long")
        if self.stack < 1:
            raise ValueError("stack must be >= 1")
        if self.kind == "raw" and abs(self.window_s * self.raw_fs - self.raw_samples) > 1e-9:
            raise ValueError(f"window_s * raw_fs = {self.window_s * self.raw_fs} is not whole")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * EEG_FS))

    @property
    def raw_samples(self) -> int:
        return int(round(self.window_s * self.raw_fs))

    @property
    def window_dim(self) -> int:
        per_channel = len(EEG_BANDS_HZ) if self.kind == "bandpower" else self.raw_samples
        return _N_CANON * per_channel

    @property
    def dim(self) -> int:
        return self.window_dim * self.stack

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureConfig:
        return cls(**data)  # type: ignore[arg-type]


EEG_FEATURE_DIM = FeatureConfig().dim


def window_features(windows: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Per-window features (no stacking): ``(W, 18, window_samples)`` -> ``(W, window_dim)``."""
    if len(windows) == 0:
        return np.zeros((0, config.window_dim))
    if config.kind == "raw":
        ratio = Fraction(config.raw_fs / EEG_FS).limit_denominator(1000)
        reduced = signal.resample_poly(windows, ratio.numerator, ratio.denominator, axis=-1)
        return reduced.reshape(len(windows), -1)
    freqs, psd = signal.welch(
        windows,
        fs=EEG_FS,
        window="hann",
        nperseg=_WELCH_SEGMENT,
        noverlap=_WELCH_SEGMENT // 2,
        detrend="constant",
        axis=-1,
    )
    df = freqs[1] - freqs[0]
    powers = np.stack(
        [psd[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1) * df for lo, hi in EEG_BANDS_HZ],
        axis=-1,
    )
    return np.log(powers + POWER_FLOOR_UV2).reshape(len(windows), -1)


def stack_features(
    per_window: np.ndarray, history: np.ndarray, stack: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack each window with the ``stack - 1`` before it (oldest first).

    ``history`` holds the last per-window features already seen (oldest first, at most
    ``stack - 1``); where fewer exist, the earliest available window is repeated. Returns the
    stacked rows and the new history."""
    sequence = np.concatenate([history, per_window]) if len(history) else per_window
    first = len(sequence) - len(per_window)
    rows = [
        np.concatenate([sequence[max(0, p - stack + 1 + j)] for j in range(stack)])
        for p in range(first, len(sequence))
    ]
    stacked = np.stack(rows) if rows else np.zeros((0, per_window.shape[1] * stack))
    return stacked, sequence[len(sequence) - (stack - 1) :] if stack > 1 else sequence[:0]


# --- resampling -------------------------------------------------------------------------------


def _check_rate(fs: float) -> None:
    """Refuse a rate the stream cannot resample to 256 Hz exactly, with a small ``up / down``."""
    if not (math.isfinite(fs) and fs > 0):
        raise SegmentRejected("fs", f"fs must be a positive number, not {fs}")
    exact = Fraction(fs).limit_denominator(1000)
    if abs(float(exact) - fs) > 1e-9 * fs:
        raise SegmentRejected("fs", f"fs={fs} Hz is not a rational rate this stream can resample exactly")
    ratio = Fraction(int(EEG_FS)) / exact
    if max(ratio.numerator, ratio.denominator) > 2048:
        raise SegmentRejected("fs", f"fs={fs} Hz needs a {ratio} resampling ratio; use a rounder rate")


def _encode(array: np.ndarray) -> dict[str, object]:
    """Exact, compact JSON form of a float64 array."""
    data = np.ascontiguousarray(array, dtype="<f8")
    return {"shape": list(data.shape), "f8": base64.b64encode(data.tobytes()).decode("ascii")}


def _decode(data: dict) -> np.ndarray:
    raw = base64.b64decode(data["f8"])
    return np.frombuffer(raw, dtype="<f8").reshape(data["shape"]).astype(np.float64)


# --- stream -----------------------------------------------------------------------------------


@dataclass
class EegWindow:
    offset_s: float  # start of the window, seconds since the stream began
    features: np.ndarray  # float32 (FeatureConfig.dim,)
    samples: np.ndarray  # float32 (18, window_samples), canonical montage at 256 Hz, uV


@dataclass
class EegPush:
    windows: list[EegWindow]
    ignored_channels: list[str]
    missing_channels: list[str]
    # True when this segment did not continue the previous one (a gap, or a new fs): the
    # partial window and the stacking history were dropped and the grid restarts at its start.
    restarted: bool = False
    reversed_channels: list[str] = field(default_factory=list)
    derived_channels: list[Derivation] = field(default_factory=list)


class EegStream:
    """One patient's EEG stream: segments in, complete windows with features out.

    Windows tile the stream: window ``k`` covers ``[t0 + k * window_s, t0 + (k + 1) * window_s)``
    where ``t0`` is the ``start_s`` of the first segment; samples that do not fill a window wait
    for the next segment. A segment must start where the previous one ended (to half a sample);
    a later start is a gap and restarts the grid, an earlier one is an error."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._reset(None, None)

    def _reset(self, start_s: float | None, fs: float | None) -> None:
        self._run_start_s = start_s
        self._fs = fs
        self._n_input = 0
        self._n_windows = 0
        self._resampler = StreamResampler(fs, EEG_FS, _N_CANON) if fs is not None and fs != EEG_FS else None
        self._carry = np.zeros((_N_CANON, 0))
        self._history = np.zeros((0, self.config.window_dim))

    def push(
        self,
        samples_uv: np.ndarray,
        fs: float,
        channels: Sequence[str],
        start_s: float,
    ) -> EegPush:
        samples = np.asarray(samples_uv, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[0] != len(channels):
            raise SegmentRejected(
                "samples", f"samples must be (channels, n) with {len(channels)} channels, got {samples.shape}"
            )
        if not np.all(np.isfinite(samples)):
            raise SegmentRejected("samples", "samples contain NaN or infinite values")
        fs, start_s = float(fs), float(start_s)
        if not math.isfinite(start_s):
            raise SegmentRejected("start", f"start must be a finite number of seconds, not {start_s}")
        _check_rate(fs)  # before touching the state
        restarted = self._continue_or_restart(fs, start_s)

        mapping = map_channels(list(channels))
        canonical = mapping.apply(samples)
        self._n_input += samples.shape[1]
        if self._resampler is not None:
            canonical = self._resampler.push(canonical)
        self._carry = np.concatenate([self._carry, canonical], axis=1)

        n = self.config.window_samples
        count = self._carry.shape[1] // n
        windows = self._carry[:, : count * n].reshape(_N_CANON, count, n).transpose(1, 0, 2)
        self._carry = self._carry[:, count * n :]
        per_window = window_features(windows, self.config)
        stacked, self._history = stack_features(per_window, self._history, self.config.stack)

        assert self._run_start_s is not None
        out = [
            EegWindow(
                offset_s=self._run_start_s + (self._n_windows + k) * self.config.window_s,
                features=stacked[k].astype(np.float32),
                samples=windows[k].astype(np.float32),
            )
            for k in range(count)
        ]
        self._n_windows += count
        return EegPush(
            windows=out,
            ignored_channels=list(mapping.ignored),
            missing_channels=list(mapping.missing),
            restarted=restarted,
            reversed_channels=list(mapping.reversed),
            derived_channels=list(mapping.derivations()),
        )

    def _continue_or_restart(self, fs: float, start_s: float) -> bool:
        if self._run_start_s is None:
            self._reset(start_s, fs)
            return False
        assert self._fs is not None
        expected = self._run_start_s + self._n_input / self._fs
        tolerance = 0.5 / max(fs, self._fs)
        if start_s < expected - tolerance:
            raise SegmentConflict(
                "start", f"segment starts at {start_s} s but the stream already has data up to {expected} s"
            )
        if fs != self._fs or start_s > expected + tolerance:
            self._reset(start_s, fs)
            return True
        return False

    def state(self) -> dict[str, object]:
        """JSON-able state; ``EegStream.from_state`` continues bit for bit."""
        return {
            "version": 2,
            "config": self.config.as_dict(),
            "run_start_s": self._run_start_s,
            "fs": self._fs,
            "n_input": self._n_input,
            "n_windows": self._n_windows,
            "resampler": None if self._resampler is None else self._resampler.state(),
            "carry": _encode(self._carry),
            "history": _encode(self._history),
        }

    @classmethod
    def from_state(cls, data: dict) -> EegStream:
        if data.get("version") not in (1, 2):
            raise ValueError(f"unknown EEG stream state version {data.get('version')!r}")
        stream = cls(FeatureConfig.from_dict(dict(data["config"])))
        stream._run_start_s = data["run_start_s"]
        stream._fs = data["fs"]
        stream._n_input = int(data["n_input"])
        stream._n_windows = int(data["n_windows"])
        resampler = data["resampler"]
        if resampler is not None and data["version"] == 1:
            # Version 1 kept the same buffer and output position under other names, base64-encoded.
            resampler = {"fs_in": resampler["fs"], "fs_out": EEG_FS, "n_channels": _N_CANON,
                         "buffer_start": resampler["buffer_start"], "buffer": _decode(resampler["buffer"]),
                         "next_out": resampler["next_output"]}
        stream._resampler = None if resampler is None else StreamResampler.from_state(resampler)
        stream._carry = _decode(data["carry"])
        stream._history = _decode(data["history"]).reshape(-1, stream.config.window_dim)
        return stream


# --- labels and offline tables ----------------------------------------------------------------


def window_class(ictal_fraction: float) -> int:
    """Index into ``EEG_CLASSES`` for a window with this fraction of ictal samples."""
    return int(ictal_fraction >= ICTAL_FRACTION_FOR_SEIZURE)


def window_ictal_fraction(
    intervals: Iterable[chbmit.Interval], offset_s: float, window_s: float = EEG_WINDOW_S
) -> float:
    """Fraction of the window's samples (at 256 Hz) that ``chbmit.sample_labels`` marks ictal."""
    first = int(round(offset_s * EEG_FS))
    count = int(round(window_s * EEG_FS))
    ictal = 0
    for start, end in intervals:
        lo, hi = int(round(start * EEG_FS)), int(round(end * EEG_FS))
        ictal += max(0, min(hi, first + count) - max(lo, first))
    return min(1.0, ictal / count)


def edf_windows(
    path: str | Path, config: FeatureConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, dim)`` float32 and window start times of a whole EDF file, as a stream
    starting at the file's first sample computes them."""
    recording = chbmit.read_edf(path)
    stream = EegStream(config)
    pushed = stream.push(recording.samples_uv, recording.fs, list(recording.channels), 0.0)
    features = (
        np.stack([w.features for w in pushed.windows])
        if pushed.windows
        else np.zeros((0, stream.config.dim), dtype=np.float32)
    )
    return features, np.array([w.offset_s for w in pushed.windows], dtype=np.float64)


@dataclass(frozen=True)
class WindowTable:
    """Every window of the staged crops. Post-ictal windows are ``after60`` rows with y = 0."""

    X: np.ndarray  # float32 (n, dim)
    y: np.ndarray  # int64 (n,), index into EEG_CLASSES
    ictal_fraction: np.ndarray  # float64 (n,)
    offset_s: np.ndarray  # float64 (n,), window start within its crop
    patient: np.ndarray  # str (n,)
    record: np.ndarray  # str (n,), e.g. chb01_03
    crop: np.ndarray  # str (n,), "seizure" or "after60"
    seizure: np.ndarray  # int64 (n,), row of crops.csv (one seizure = two crops)


def window_table(
    patients: Sequence[str] | None = None,
    config: FeatureConfig | None = None,
    progress: bool = False,
) -> WindowTable:
    """Features and labels for all windows of the staged crops (optionally some patients)."""
    from tqdm import tqdm

    config = config or FeatureConfig()
    rows = [
        (index, row)
        for index, row in enumerate(chbmit.read_crops())
        if patients is None or row.patient in patients
    ]
    if not rows:
        raise ValueError(f"no staged crops for patients {patients}")
    columns: dict[str, list[np.ndarray]] = {
        key: []
        for key in ("X", "ictal_fraction", "offset_s", "patient", "record", "crop", "seizure")
    }
    for index, row in tqdm(rows, desc="chbmit windows", disable=not progress):
        for kind in chbmit.CROP_KINDS:
            features, offsets = edf_windows(row.file(kind), config)
            intervals = row.ictal_intervals(kind)
            fractions = [window_ictal_fraction(intervals, o, config.window_s) for o in offsets]
            columns["X"].append(features)
            columns["ictal_fraction"].append(np.asarray(fractions, dtype=np.float64))
            columns["offset_s"].append(offsets)
            for key, value in (
                ("patient", row.patient),
                ("record", row.record),
                ("crop", kind),
                ("seizure", index),
            ):
                columns[key].append(np.full(len(offsets), value))
    fraction = np.concatenate(columns["ictal_fraction"])
    return WindowTable(
        X=np.concatenate(columns["X"]).astype(np.float32),
        y=(fraction >= ICTAL_FRACTION_FOR_SEIZURE).astype(np.int64),
        ictal_fraction=fraction,
        offset_s=np.concatenate(columns["offset_s"]),
        patient=np.concatenate(columns["patient"]),
        record=np.concatenate(columns["record"]),
        crop=np.concatenate(columns["crop"]),
        seizure=np.concatenate(columns["seizure"]).astype(np.int64),
    )
