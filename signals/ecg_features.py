"""Beat features for ECG, computed the same way on a live stream and offline.

A beat's feature vector (``ECG_FEATURE_DIM`` = 85 with the default window) is, in order:

- lead 0 (MLII on MIT-BIH) then lead 1: the samples from 0.25 s before to 0.40 s after R at
  360 Hz, minus the window's median (a per-beat baseline that needs no filter state), averaged
  over 39 equal bins (6 samples, i.e. 60 Hz), in mV;
- RR features (``RR_FEATURES``): previous RR, next RR, local mean RR (last 10 beats), running mean
  RR of the stream, all in seconds and clipped to [0.15, 3] s, then previous/local, next/local and
  previous/running mean. The ratios are what separates S beats from N across patients.

``EcgStream`` turns device segments into beats. It resamples to 360 Hz, takes R peaks from the
device or detects them on both leads (``signals.qrs.QrsTracker``), and emits a beat once its next R peak and
1 s of signal after it have arrived: the last beat of a segment is held back and comes out with
the next segment, so every emitted beat has its true next RR. A short tail of samples (enough for
the held beats' windows and plotting context, and the detector's look-back) is part of
``state()``, so a restarted daemon continues the stream exactly. ``flush()`` ends a stream: the
held beats come out with the next RR taken equal to the previous one. A segment that does not
start where the previous one ended (a gap) flushes and starts a new run; the first beat of a run
takes its previous RR equal to its next one. Local and running means carry over gaps.

``beat_table`` pushes a whole record through an ``EcgStream`` with the reference R peaks, so
offline tables and live beats share one code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from signals.errors import SegmentConflict, SegmentRejected
from signals.mitbih import Record, read_record
from signals.qrs import Detector, QrsTracker, detect_r_peaks
from signals.resample import StreamResampler, map_indices

ECG_FS = 360.0
ECG_LEADS = 2
MIN_FS = 100.0
LOCAL_RR_BEATS = 10
RR_LIMITS_S = (0.15, 3.0)
DEFAULT_RR_S = 0.8  # only for a stream that ends after a single beat
CONTEXT_BEFORE_S = 2.0
CONTEXT_AFTER_S = 1.0
RR_FEATURES: tuple[str, ...] = (
    "rr_prev_s",
    "rr_next_s",
    "rr_local_s",
    "rr_mean_s",
    "rr_prev_over_local",
    "rr_next_over_local",
    "rr_prev_over_mean",
)


@dataclass(frozen=True)
class BeatWindow:
    """The waveform part of the features: [R - pre_s, R + post_s) in ``points`` bins per lead."""

    pre_s: float = 0.25
    post_s: float = 0.40
    points: int = 39

    @property
    def pre(self) -> int:
        return int(round(self.pre_s * ECG_FS))

    @property
    def post(self) -> int:
        return int(round(self.post_s * ECG_FS))

    @property
    def dim(self) -> int:
        return ECG_LEADS * self.points + len(RR_FEATURES)


DEFAULT_WINDOW = BeatWindow()
ECG_FEATURE_DIM = DEFAULT_WINDOW.dim


def feature_names(window: BeatWindow = DEFAULT_WINDOW) -> tuple[str, ...]:
    waves = tuple(f"lead{lead}_bin{k}" for lead in range(ECG_LEADS) for k in range(window.points))
    return waves + RR_FEATURES


def beat_features(
    samples: np.ndarray,
    window: BeatWindow,
    rr_prev: float,
    rr_next: float,
    rr_local: float,
    rr_mean: float,
) -> np.ndarray:
    """Features of one beat from its (2, pre + post) samples at 360 Hz and its RR values (s)."""
    length = window.pre + window.post
    if samples.shape != (ECG_LEADS, length):
        raise ValueError(f"beat samples must be ({ECG_LEADS}, {length}), got {samples.shape}")
    centred = samples - np.median(samples, axis=1, keepdims=True)
    edges = np.rint(np.linspace(0, length, window.points + 1)).astype(np.int64)
    binned = np.add.reduceat(centred, edges[:-1], axis=1) / np.diff(edges)
    prev, nxt, local, mean = np.clip([rr_prev, rr_next, rr_local, rr_mean], *RR_LIMITS_S)
    rr = np.array([prev, nxt, local, mean, prev / local, nxt / local, prev / mean])
    return np.concatenate([binned.ravel(), rr]).astype(np.float32)


@dataclass(frozen=True, eq=False)
class EcgBeat:
    offset_s: float  # R time since the stream began
    features: np.ndarray  # float32 (dim,)
    context: np.ndarray  # float32 (2, m) at 360 Hz, up to 2 s before and 1 s after R
    context_r_index: int


class EcgStream:
    """One patient's ECG stream: segments in, beats with features out."""

    def __init__(self, window: BeatWindow = DEFAULT_WINDOW, detect: Detector = detect_r_peaks) -> None:
        self.window = window
        self.detect = detect  # R-peak detector for segments without r_peaks (the bench swaps in its reference)
        self.fs: float | None = None
        self.run_origin_s = 0.0  # start time of the current gap-free run
        self.run_input = 0  # device samples received in this run
        self.resampler: StreamResampler | None = None
        self.buffer_start = 0  # run index (360 Hz) of buffer[:, 0]
        self.buffer = np.zeros((ECG_LEADS, 0))
        self.tracker = QrsTracker(ECG_FS, detect)
        self.pending: list[int] = []  # R peaks (run index) not yet emitted
        self.prev_r: int | None = None  # R of the last emitted beat of this run
        self.rr_recent: list[float] = []
        self.rr_sum = 0.0
        self.rr_count = 0

    @property
    def feature_dim(self) -> int:
        return self.window.dim

    @property
    def _rate(self) -> float:
        """The exact rate of the resampled signal (360 Hz unless the ratio was approximated)."""
        return self.resampler.fs_in * self.resampler.up / self.resampler.down

    @property
    def _buffer_end(self) -> int:
        return self.buffer_start + self.buffer.shape[1]

    def push(
        self,
        samples_mv: np.ndarray,
        fs: float,
        start_s: float,
        r_peaks: np.ndarray | None = None,
    ) -> list[EcgBeat]:
        """Add one segment (leads, n) in mV; return the beats that became complete.

        The first two leads are used, both for R-peak detection (``signals.qrs`` fuses them); a
        single lead is allowed.

        ``start_s`` is the segment's start in seconds since the stream began. A segment that
        starts later than where the previous one ended begins a new run (the held beats are
        flushed first); one that starts earlier is refused. ``r_peaks`` are sample indices in
        this segment; without them R peaks are detected.
        """
        x = np.asarray(samples_mv, dtype=np.float64)
        fs = float(fs)
        if x.ndim != 2 or x.shape[0] < 1:
            raise SegmentRejected("samples", f"samples must be (leads, n), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise SegmentRejected("samples", "samples must be finite numbers")
        if not fs >= MIN_FS:
            raise SegmentRejected("fs", f"fs must be at least {MIN_FS} Hz, got {fs}")
        # A single-lead device gets a flat second lead: its features are then all zero.
        x = np.vstack([x[:ECG_LEADS], np.zeros((ECG_LEADS - min(len(x), ECG_LEADS), x.shape[1]))])
        beats: list[EcgBeat] = []
        if self.fs is None:
            self._start_run(fs, start_s)
        elif fs != self.fs or not self._continues(start_s):
            expected = self.run_origin_s + self.run_input / self.fs
            if fs == self.fs and start_s < expected - 0.5 / fs:
                raise SegmentConflict(
                    "start", f"segment starts at {start_s} s, before the previous one ended ({expected} s)"
                )
            beats += self.flush()
            self._start_run(fs, start_s)
        first_input = self.run_input
        self.run_input += x.shape[1]
        self.buffer = np.concatenate([self.buffer, self.resampler.push(x)], axis=1)
        if r_peaks is not None:
            self._add_given_peaks(np.asarray(r_peaks), x.shape[1], first_input)
        else:
            self.pending += self.tracker.scan(self.buffer, self.buffer_start)
        beats += self._emit(final=False)
        self._trim()
        return beats

    def flush(self) -> list[EcgBeat]:
        """Emit every held beat (the last one with next RR = previous RR)."""
        self.pending += self.tracker.scan(self.buffer, self.buffer_start, final=True)
        beats = self._emit(final=True)
        self._trim()
        return beats

    def _continues(self, start_s: float) -> bool:
        expected = self.run_origin_s + self.run_input / self.fs
        return abs(start_s - expected) <= 0.5 / self.fs

    def _start_run(self, fs: float, start_s: float) -> None:
        self.fs = fs
        self.run_origin_s = float(start_s)
        self.run_input = 0
        self.resampler = StreamResampler(fs, ECG_FS, ECG_LEADS)
        self.buffer_start = 0
        self.buffer = np.zeros((ECG_LEADS, 0))
        self.tracker = QrsTracker(ECG_FS, self.detect)
        self.pending = []
        self.prev_r = None

    def _add_given_peaks(self, r_peaks: np.ndarray, n: int, first_input: int) -> None:
        if r_peaks.size == 0:
            peaks = np.zeros(0, dtype=np.int64)
        else:
            if r_peaks.ndim != 1 or not np.all(np.equal(np.mod(r_peaks, 1), 0)):
                raise SegmentRejected("r_peaks", "r_peaks must be a list of sample indices")
            peaks = r_peaks.astype(np.int64)
            if peaks.min() < 0 or peaks.max() >= n or np.any(np.diff(peaks) <= 0):
                raise SegmentRejected("r_peaks", f"r_peaks must increase strictly and lie in [0, {n})")
        last = self.pending[-1] if self.pending else self.prev_r
        for r in map_indices(peaks + first_input, self.fs, ECG_FS).tolist():
            if last is None or r > last:
                self.pending.append(r)
                last = r
        # A later segment without r_peaks must not detect this segment's beats again.
        self.tracker.scanned_to = max(
            self.tracker.scanned_to, int(map_indices([self.run_input], self.fs, ECG_FS)[0])
        )
        if last is not None:
            self.tracker.last_r = last

    def _emit(self, final: bool) -> list[EcgBeat]:
        after = max(self.window.post, int(round(CONTEXT_AFTER_S * ECG_FS)))
        beats: list[EcgBeat] = []
        while self.pending:
            has_next = len(self.pending) > 1
            if not final and (not has_next or self._buffer_end < self.pending[0] + after):
                break
            r = self.pending.pop(0)
            beats.append(self._beat(r, self.pending[0] if has_next else None))
        return beats

    def _beat(self, r: int, next_r: int | None) -> EcgBeat:
        rate = self._rate
        rr_prev = (r - self.prev_r) / rate if self.prev_r is not None else None
        rr_next = (next_r - r) / rate if next_r is not None else None
        if rr_prev is not None:
            rr_prev = float(np.clip(rr_prev, *RR_LIMITS_S))
            self.rr_recent = (self.rr_recent + [rr_prev])[-LOCAL_RR_BEATS:]
            self.rr_sum += rr_prev
            self.rr_count += 1
        fallback = self.rr_sum / self.rr_count if self.rr_count else DEFAULT_RR_S
        rr_prev = rr_prev if rr_prev is not None else (rr_next if rr_next is not None else fallback)
        rr_next = rr_next if rr_next is not None else rr_prev
        rr_local = float(np.mean(self.rr_recent)) if self.rr_recent else rr_prev
        rr_mean = self.rr_sum / self.rr_count if self.rr_count else rr_prev
        samples = self._samples(r - self.window.pre, r + self.window.post)
        features = beat_features(samples, self.window, rr_prev, rr_next, rr_local, rr_mean)
        lo = max(r - int(round(CONTEXT_BEFORE_S * ECG_FS)), self.buffer_start)
        hi = min(r + int(round(CONTEXT_AFTER_S * ECG_FS)), self._buffer_end)
        context = self.buffer[:, lo - self.buffer_start : hi - self.buffer_start]
        self.prev_r = r
        return EcgBeat(
            offset_s=self.run_origin_s + r / rate,
            features=features,
            context=context.astype(np.float32),
            context_r_index=r - lo,
        )

    def _samples(self, lo: int, hi: int) -> np.ndarray:
        """Buffer samples [lo, hi) by run index; outside the run, the edge sample is repeated."""
        a = min(max(lo - self.buffer_start, 0), self.buffer.shape[1])
        b = min(max(hi - self.buffer_start, 0), self.buffer.shape[1])
        part = self.buffer[:, a:b]
        before = a - (lo - self.buffer_start)
        after = (hi - lo) - before - part.shape[1]
        return np.pad(part, ((0, 0), (before, after)), mode="edge")

    def _trim(self) -> None:
        """Drop samples no held beat, future beat window or detector look-back can need."""
        before = max(self.window.pre, int(round(CONTEXT_BEFORE_S * ECG_FS)))
        keep = self._buffer_end - before
        if self.pending:
            keep = min(keep, self.pending[0] - before)
        keep = min(keep, self.tracker.scanned_to - self.tracker.lookback)
        keep = max(keep, self.buffer_start)
        self.buffer = self.buffer[:, keep - self.buffer_start :]
        self.buffer_start = keep

    def state(self) -> dict[str, object]:
        """Everything needed to continue the stream, as JSON-able values."""
        return {
            "window": asdict(self.window),
            "fs": self.fs,
            "run_origin_s": self.run_origin_s,
            "run_input": self.run_input,
            "resampler": None if self.resampler is None else self.resampler.state(),
            "buffer_start": self.buffer_start,
            "buffer": self.buffer.tolist(),
            "tracker": self.tracker.state(),
            "pending": list(self.pending),
            "prev_r": self.prev_r,
            "rr_recent": list(self.rr_recent),
            "rr_sum": self.rr_sum,
            "rr_count": self.rr_count,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> EcgStream:
        made = cls(BeatWindow(**state["window"]))
        made.fs = None if state["fs"] is None else float(state["fs"])
        made.run_origin_s = float(state["run_origin_s"])
        made.run_input = int(state["run_input"])
        if state["resampler"] is not None:
            made.resampler = StreamResampler.from_state(state["resampler"])
        made.buffer_start = int(state["buffer_start"])
        made.buffer = np.asarray(state["buffer"], dtype=np.float64).reshape(ECG_LEADS, -1)
        made.tracker = QrsTracker.from_state(state["tracker"])
        made.pending = [int(r) for r in state["pending"]]
        made.prev_r = None if state["prev_r"] is None else int(state["prev_r"])
        made.rr_recent = [float(v) for v in state["rr_recent"]]
        made.rr_sum = float(state["rr_sum"])
        made.rr_count = int(state["rr_count"])
        return made


class BeatTable(NamedTuple):
    X: np.ndarray  # float32 (n, dim)
    y: np.ndarray  # int64 (n,), index into AAMI_CLASSES
    r_sample: np.ndarray  # int64 (n,), R sample at 360 Hz
    time_s: np.ndarray  # float64 (n,)


def record_beats(record: Record, window: BeatWindow = DEFAULT_WINDOW) -> list[EcgBeat]:
    """Every reference beat of a MIT-BIH record as the daemon emits it (features and plotting context).

    The record goes through an ``EcgStream`` with the reference R peaks, then ``flush()``: the
    beats are exactly those the daemon makes when a device sends the same R peaks.
    """
    stream = EcgStream(window)
    beats = stream.push(record.signal, record.fs, 0.0, r_peaks=record.beat_samples)
    beats += stream.flush()
    if len(beats) != record.beat_samples.size:
        raise RuntimeError(f"{record.name}: {len(beats)} beats from {record.beat_samples.size}")
    return beats


def beat_table(record_name: str, window: BeatWindow = DEFAULT_WINDOW) -> BeatTable:
    """Every reference beat of a MIT-BIH record with its features (``record_beats``) and AAMI class."""
    record = read_record(record_name)
    beats = record_beats(record, window)
    return BeatTable(
        X=np.stack([beat.features for beat in beats]),
        y=record.beat_classes.copy(),
        r_sample=record.beat_samples.copy(),
        time_s=record.beat_times_s,
    )
