"""Daemon settings: embedded defaults, overridden by ``BIOFO_*`` variables, overridden by flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    db: Path = Path("biofo.db")
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str | None = None  # None: torch if installed, else onnxruntime
    admin_token: str | None = None
    checkpoint_every: int = 50
    energy: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_samples: int = 2_000_000
    max_segment_s: float = 120.0
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    workers: int | None = None  # feature-extraction processes; None: one per core, 0: in the request thread
    alarm_webhooks: tuple[str, ...] = ()  # URLs each new alarm is POSTed to
    alarm_retry_s: float = 2.0  # first retry delay of a failed webhook delivery; doubles each attempt
    alarm_max_attempts: int = 10
    # Models in memory: at most this many (None: no bound), least recently used evicted first. A
    # resident model that has predicted and learned costs about 0.7 MiB (ECG) / 1.8 MiB (EEG) with
    # torch and 2.0 / 3.9 MiB with onnxruntime, which keeps two buffers of every array an update
    # replaces (200 bundled-base learners in one process); jetson/README.md gives a 4 GB board's setting.
    max_resident_models: int | None = None
    model_idle_s: float | None = 900.0  # a model unused this long is evicted (None: never)
    # Retention (app.retention): labelled windows, with their samples, are kept forever; so are the
    # first and last window of every alarm. 0 hours: keep forever.
    retain_samples_hours: float = 24.0  # unlabelled windows keep their samples this long
    retain_windows_hours: float = 168.0  # then their features and prediction this long
    retain_checkpoints: int = 3  # newest periodic/shutdown checkpoints per patient (fork, rollback, undo: all)
    retain_every_s: float = 60.0  # seconds between retention passes
    retain_batch: int = 100  # windows looked at per retention transaction

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = env.get(f"BIOFO_{spec.name.upper()}")
            if raw is None or raw == "":
                continue
            values[spec.name] = _parse(spec.name, raw)
        settings = cls(**values)  # type: ignore[arg-type]
        given = {key: value for key, value in overrides.items() if value is not None}
        if "db" in given:
            given["db"] = Path(str(given["db"]))
        return replace(settings, **given)  # type: ignore[arg-type]


def _parse(name: str, raw: str) -> object:
    if name == "db":
        return Path(raw)
    if name in {"port", "checkpoint_every", "max_body_bytes", "max_samples", "workers", "alarm_max_attempts",
                "max_resident_models", "retain_checkpoints", "retain_batch"}:
        return int(raw)
    if name in {"max_segment_s", "alarm_retry_s", "model_idle_s", "retain_samples_hours", "retain_windows_hours",
                "retain_every_s"}:
        return float(raw)
    if name in {"cors_origins", "alarm_webhooks"}:
        return tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    return raw
