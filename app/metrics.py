"""Prometheus metrics, one registry per app so that tests and several apps in a process stay apart."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.request_seconds = Histogram(
            "biofo_request_seconds", "HTTP request latency", ["method", "route", "status"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.windows = Counter("biofo_windows_total", "Windows stored and predicted", ["modality"], registry=r)
        self.labels = Counter("biofo_labels_total", "Labels accepted", registry=r)
        self.updates = Counter("biofo_updates_total", "Forward-only updates applied", ["modality"], registry=r)
        self.update_seconds = Histogram(
            "biofo_update_seconds", "Time to apply one update", buckets=LATENCY_BUCKETS, registry=r
        )
        self.label_to_update_seconds = Histogram(
            "biofo_label_to_update_seconds", "From label accepted to update applied",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.model_version = Gauge(
            "biofo_model_version", "Current model version", ["modality", "patient_id"], registry=r
        )
        self.joules = Counter(
            "biofo_joules_total", "Energy attributed to inference and updates", ["phase", "source"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
