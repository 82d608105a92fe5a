"""From a validated segment to stored, predicted windows.

Each (modality, patient) stream keeps the state its feature extractor needs across segments (sample
tails, RR history, partial windows). That state is committed in the same transaction as the windows,
so after a restart the stream continues exactly where the last accepted segment left it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.energy import Meter
from app.registry import LiveModel, Registry
from app.schemas import WindowOut, WindowsIn, WindowsOut
from app.store import EnergyRecord, Store, WindowRecord
from signals.ecg_features import EcgStream
from signals.eeg_features import EegStream

# Physical units the feature extractors expect: millivolts for ECG, microvolts for EEG.
UNIT_SCALE = {
    "ecg": {"mV": 1.0, "uV": 1e-3, "V": 1e3},
    "eeg": {"uV": 1.0, "mV": 1e3, "V": 1e6},
}
DEFAULT_UNITS = {"ecg": "mV", "eeg": "uV"}


class SegmentRejected(ValueError):
    """The segment is well-formed JSON but cannot be used; the message names the field and rule."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    max_samples: int
    max_segment_s: float


class Ingestor:
    def __init__(self, store: Store, registry: Registry, meter: Meter, limits: Limits):
        self.store = store
        self.registry = registry
        self.meter = meter
        self.limits = limits
        self._stream_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def _lock_for(self, model_id: int) -> threading.Lock:
        with self._guard:
            return self._stream_locks[model_id]

    def check(self, body: WindowsIn) -> np.ndarray:
        """Limits that pydantic cannot express; returns the samples in the extractor's units."""
        n_channels, n_samples = len(body.samples), len(body.samples[0])
        if n_channels * n_samples > self.limits.max_samples:
            raise SegmentRejected(
                "samples", f"samples holds {n_channels * n_samples} values; the limit is {self.limits.max_samples}"
            )
        if n_samples / body.fs > self.limits.max_segment_s:
            raise SegmentRejected(
                "samples", f"segment lasts {n_samples / body.fs:.1f} s; the limit is {self.limits.max_segment_s} s"
            )
        if body.modality == "ecg" and n_channels > 2:
            raise SegmentRejected("channels", "ECG segments carry one or two leads")
        units = body.units or DEFAULT_UNITS[body.modality]
        samples = np.asarray(body.samples, dtype=np.float64) * UNIT_SCALE[body.modality][units]
        if not np.all(np.isfinite(samples)):
            raise SegmentRejected("samples", "samples must be finite numbers")
        return samples

    def ingest(self, body: WindowsIn) -> WindowsOut:
        samples = self.check(body)
        live = self.registry.get_or_fork(body.modality, body.patient_id)
        with self._lock_for(live.row.id):
            state = self.store.stream_state(live.row.id)
            if body.modality == "ecg":
                stream = EcgStream.from_state(state) if state else EcgStream()
                r_peaks = np.asarray(body.r_peaks, dtype=np.int64) if body.r_peaks is not None else None
                items = stream.push(samples, body.fs, body.start, r_peaks)
                ignored: list[str] = []
                missing: list[str] = []
                windows = [(b.offset_s, b.context, b.context_r_index, b.features) for b in items]
            else:
                stream = EegStream.from_state(state) if state else EegStream()
                pushed = stream.push(samples, body.fs, list(body.channels), body.start)
                ignored, missing = list(pushed.ignored_channels), list(pushed.missing_channels)
                windows = [(w.offset_s, w.samples, None, w.features) for w in pushed.windows]
            records, energy = self._predict(live, windows)
            ids = self.store.insert_windows(
                live.row, body.fs, body.channels, body.start, records, stream.state(), energy
            )
        return WindowsOut(
            windows=[
                WindowOut(
                    id=window_id, modality=body.modality, patient_id=body.patient_id,
                    offset_s=record.offset_s, predicted=record.predicted,
                    probabilities=record.probabilities, model_version=record.model_version,
                )
                for window_id, record in zip(ids, records)
            ],
            ignored_channels=ignored,
            missing_channels=missing,
        )

    def _predict(
        self, live: LiveModel, windows: list[tuple[float, np.ndarray, int | None, np.ndarray]]
    ) -> tuple[list[WindowRecord], EnergyRecord | None]:
        if not windows:
            return [], None
        features = np.stack([np.asarray(w[3], dtype=np.float32) for w in windows])
        with live.lock:
            started = time.perf_counter()
            with self.meter.measure() as measurement:
                probabilities = live.learner.predict(features)
            latency_ms = (time.perf_counter() - started) * 1000.0 / len(windows)
            version = live.learner.version
            classes = live.classes
        records = []
        for (offset_s, plot, marker, feature), row in zip(windows, probabilities):
            probs: dict[str, Any] = {name: round(float(p), 6) for name, p in zip(classes, row)}
            records.append(
                WindowRecord(
                    offset_s=float(offset_s), samples=np.asarray(plot, dtype=np.float32), marker=marker,
                    features=feature, predicted=classes[int(np.argmax(row))], probabilities=probs,
                    model_version=version, latency_ms=latency_ms,
                )
            )
        energy = EnergyRecord(
            phase="inference", model_id=live.row.id, n=len(windows), duration_s=measurement.duration_s,
            joules=measurement.joules, source=measurement.source, rail=measurement.rail,
            total=self.meter.total,
        )
        return records, energy
