"""From a validated segment to stored, predicted windows.

Each (modality, patient) stream keeps the state its feature extractor needs across segments (sample
tails, RR history, partial windows). That state is committed in the same transaction as the windows,
so after a restart the stream continues exactly where the last accepted segment left it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.energy import Meter
from app.extraction import Extractor
from app.modalities import MODALITIES, Segment, Window
from app.registry import LiveModel, Registry
from app.schemas import DerivedChannelOut, SegmentMeta, WindowOut, WindowsOut
from app.store import EnergyRecord, Store, WindowRecord
from signals.errors import SegmentConflict, SegmentRejected

@dataclass(frozen=True)
class Limits:
    max_samples: int
    max_segment_s: float


class Ingestor:
    def __init__(
        self, store: Store, registry: Registry, meter: Meter, limits: Limits, extract: Extractor,
        on_stored: Callable[[LiveModel, list[dict[str, Any]]], None] | None = None,
    ):
        self.store = store
        # Told, under the stream's lock, of each new segment's committed windows (id, offset_s,
        # predicted, probabilities, model_version): alarms and live events follow the stream in order.
        self.on_stored = on_stored
        self.registry = registry
        self.meter = meter
        self.limits = limits
        self.extract = extract
        self._stream_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def _lock_for(self, model_id: int) -> threading.Lock:
        with self._guard:
            return self._stream_locks[model_id]

    def check(self, body: SegmentMeta, sent: np.ndarray) -> np.ndarray:
        """Limits that pydantic cannot express; returns the samples ``sent`` (channels, n) in the
        extractor's units."""
        n_channels, n_samples = sent.shape
        if n_channels * n_samples > self.limits.max_samples:
            raise SegmentRejected(
                "samples", f"samples holds {n_channels * n_samples} values; the limit is {self.limits.max_samples}"
            )
        if n_samples / body.fs > self.limits.max_segment_s:
            raise SegmentRejected(
                "samples", f"segment lasts {n_samples / body.fs:.1f} s; the limit is {self.limits.max_segment_s} s"
            )
        modality = MODALITIES[body.modality]
        if modality.max_channels is not None and n_channels > modality.max_channels:
            raise SegmentRejected(
                "channels", f"{body.modality.upper()} segments carry at most {modality.max_channels} channels"
            )
        if body.fs < modality.min_fs:
            raise SegmentRejected("fs", f"{body.modality.upper()} needs fs >= {modality.min_fs} Hz, got {body.fs}")
        units = body.units or modality.default_units
        samples = sent * modality.units[units]
        if not np.all(np.isfinite(samples)):
            raise SegmentRejected("samples", "samples must be finite numbers")
        return samples

    def ingest(self, body: SegmentMeta, sent: np.ndarray) -> tuple[WindowsOut, bool]:
        """Store and predict a segment, its samples ``sent`` as (channels, n) in ``body.units``;
        returns the answer and whether it was new.

        A device that retries a segment it already sent (same ``start``, e.g. after a lost response)
        gets the stored windows back instead of duplicates. A segment starting inside the last
        accepted one is refused: the stream's time line only moves forward.
        """
        samples = self.check(body, sent)
        live = self.registry.get_or_fork(body.modality, body.patient_id)
        duration = samples.shape[1] / body.fs
        with self._lock_for(live.row.id):
            saved = self.store.stream_state(live.row.id) or {}
            timeline = saved.get("timeline")
            if timeline is not None:
                if abs(body.start - timeline["last_start"]) < 1e-9 and abs(duration - timeline["last_duration"]) < 1e-9:
                    return self._stored(live, body), False
                if body.start < timeline["next_start"] - 0.5 / body.fs:
                    raise SegmentConflict(
                        "start",
                        f"start {body.start} s falls inside the last accepted segment of this stream, "
                        f"which ends at {timeline['next_start']} s; segments must move forward in time",
                    )
            segment = Segment(
                body.modality, samples, body.fs, body.start, tuple(body.channels),
                None if body.r_peaks is None else tuple(body.r_peaks),
            )
            try:
                extracted = self.extract(saved.get("extractor"), segment)
            except SegmentRejected:
                raise
            except ValueError as error:
                # Signal code that did not say which field it could not use: the samples were.
                raise SegmentRejected("samples", str(error)) from error
            records, energy = self._predict(live, extracted.windows)
            state = {
                "extractor": extracted.state,
                "timeline": {"last_start": body.start, "last_duration": duration, "next_start": body.start + duration},
            }
            ids = self.store.insert_windows(live.row, body.fs, body.channels, body.start, records, state, energy)
            if self.on_stored is not None and ids:
                self.on_stored(live, [
                    {"id": window_id, "offset_s": record.offset_s, "predicted": record.predicted,
                     "probabilities": record.probabilities, "model_version": record.model_version}
                    for window_id, record in zip(ids, records)
                ])
        return WindowsOut(
            windows=[
                WindowOut(
                    id=window_id, modality=body.modality, patient_id=body.patient_id,
                    offset_s=record.offset_s, predicted=record.predicted,
                    probabilities=record.probabilities, model_version=record.model_version,
                )
                for window_id, record in zip(ids, records)
            ],
            ignored_channels=extracted.ignored_channels,
            missing_channels=extracted.missing_channels,
            derived_channels=[
                DerivedChannelOut(channel=d.channel, plus=d.plus, minus=d.minus)
                for d in extracted.derived_channels
            ],
        ), True

    def _stored(self, live: LiveModel, body: SegmentMeta) -> WindowsOut:
        rows = self.store.segment_windows(live.row.id, body.start)
        return WindowsOut(windows=[
            WindowOut(id=row["id"], modality=body.modality, patient_id=body.patient_id, offset_s=row["offset_s"],
                      predicted=row["class"], probabilities=json.loads(row["probabilities"]),
                      model_version=row["model_version"])
            for row in rows
        ])

    def _predict(self, live: LiveModel, windows: list[Window]) -> tuple[list[WindowRecord], EnergyRecord | None]:
        if not windows:
            return [], None
        features = np.stack([np.asarray(w.features, dtype=np.float32) for w in windows])
        with self.registry.using(live) as learner:
            started = time.perf_counter()
            with self.meter.measure() as measurement:
                probabilities = learner.predict(features)
            latency_ms = (time.perf_counter() - started) * 1000.0 / len(windows)
            version = learner.version
            classes = live.classes
        records = []
        for window, row in zip(windows, probabilities):
            probs: dict[str, Any] = {name: round(float(p), 6) for name, p in zip(classes, row)}
            records.append(
                WindowRecord(
                    offset_s=float(window.offset_s), samples=np.asarray(window.plot, dtype=np.float32),
                    marker=window.marker, features=window.features, predicted=classes[int(np.argmax(row))],
                    probabilities=probs,
                    model_version=version, latency_ms=latency_ms,
                )
            )
        energy = EnergyRecord(
            phase="inference", model_id=live.row.id, n=len(windows), duration_s=measurement.duration_s,
            joules=measurement.joules, source=measurement.source, rail=measurement.rail,
            total=self.meter.total,
        )
        return records, energy
