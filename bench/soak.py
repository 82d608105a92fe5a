"""``biofo bench soak``: a day of bedside ECG streams in compressed time; database size with and without
retention, side by side in one run.

The daemon is the app ``biofo serve`` runs (``app.server.create_app``: ingest, update worker,
checkpoint writer, retention), in this process behind FastAPI's ``TestClient``, on a fresh database
per arm. Its store takes a simulated clock: every 10 s segment moves it 10 s on, so retention's
horizons pass in minutes instead of hours, and nothing sleeps. Stream ``i`` plays MIT-BIH record
``NON_PACED[i % 44]`` as patient ``soak-i``, looped (each loop continues the stream's time); each
segment carries the record's reference beat positions, as a monitor with its own detector sends them
(the daemon's feature extraction and model still run; only R-peak detection, whose cost does not
touch the disk, is skipped). A clinician labels ``labels_per_hour`` beats per stream with their
reference class. Every ``SAMPLE_EVERY_S`` simulated seconds a retention pass runs (in the arm with
retention) and the database size is recorded: ``page_count * page_size`` (free pages included, as
the file holds them) and the bytes in use (without the free pages new rows will reuse).

Figures: ``db_bytes_per_stream_hour`` (final size over stream-hours) per arm, ``steady_bytes_per_stream_hour``
(growth over the last quarter of the run: what the file still grows at once retention is in force),
and the longest retention transaction (what an ingest transaction may have to wait for).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tqdm import tqdm

from app.client import V1Calls
from app.server import create_app
from app.settings import Settings
from app.store import database_size
from bench.report import markdown_table, plot_lines, write_outputs
from signals.mitbih import NON_PACED
from signals.replay import ECG_SEGMENT_S, ecg_reference, ecg_requests

ADMIN = "soak-admin-token-0123456789abcdef"
LABELER = "soak (reference annotations)"
SAMPLE_EVERY_S = 600.0
MAX_STREAMS = 20
MAX_HOURS = 72.0


class SimulatedClock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


class SoakClient(V1Calls, TestClient):
    """The v1 calls on the in-process app."""


def _stream_bodies(index: int) -> tuple[str, list[dict[str, Any]], float]:
    record = NON_PACED[index % len(NON_PACED)]
    bodies = list(ecg_requests(record, patient_id=f"soak-{index}", include_r_peaks=True))
    last = bodies[-1]
    duration = last["start"] + len(last["samples"][0]) / last["fs"]
    return record, bodies, duration


def soak_arm(
    db: Path,
    settings: Settings,
    hours: float,
    streams: int,
    labels_per_hour: float,
    retain: bool,
    progress: bool,
    name: str,
) -> dict[str, Any]:
    clock = SimulatedClock(time.time())
    app = create_app(replace(settings, db=db), clock)
    plays = [_stream_bodies(i) for i in range(streams)]
    references = [ecg_reference(record) for record, _, _ in plays]
    steps = round(hours * 3600.0 / ECG_SEGMENT_S)
    label_every = (
        max(1, round(3600.0 / labels_per_hour / ECG_SEGMENT_S)) if labels_per_hour > 0 else 0
    )
    series: list[dict[str, float]] = []
    longest_ms, segments, labels, last_seq = 0.0, 0, 0, 0
    post_ms: list[float] = []
    started = time.perf_counter()
    with SoakClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as client:
        for step in tqdm(range(steps), desc=name, disable=not progress, unit="segment-step"):
            for index, (_, bodies, duration) in enumerate(plays):
                loop, k = divmod(step, len(bodies))
                body = {**bodies[k], "start": loop * duration + bodies[k]["start"]}
                sent = time.perf_counter()
                windows = client.post_segment(body)
                post_ms.append(1e3 * (time.perf_counter() - sent))
                segments += 1
                if label_every and step % label_every == 0 and windows:
                    window = windows[0]
                    label = references[index].label_at(window["offset_s"] - loop * duration)
                    if label is not None:
                        last_seq = client.post_labels(
                            [{"window_id": window["id"], "label": label, "labeled_by": LABELER}]
                        ).update_seq
                        labels += 1
            clock.now += ECG_SEGMENT_S
            if (step + 1) % int(SAMPLE_EVERY_S / ECG_SEGMENT_S) == 0 or step + 1 == steps:
                if retain:
                    longest_ms = max(
                        longest_ms, app.state.retention.run_once().longest_transaction_ms
                    )
                size = database_size(db)
                series.append(
                    {
                        "hours": (step + 1) * ECG_SEGMENT_S / 3600.0,
                        "bytes": size.bytes,
                        "used_bytes": size.bytes - size.free_bytes,
                    }
                )
        for index in range(streams):
            if last_seq:
                client.wait_learned("ecg", f"soak-{index}", timeout=600.0)
        stats = client.get("/v1/models").json()
    stream_hours = streams * hours
    quarter = series[-max(2, len(series) // 4) :]  # the last quarter of the samples, at least two
    steady = (quarter[-1]["bytes"] - quarter[0]["bytes"]) / max(
        1e-9, (quarter[-1]["hours"] - quarter[0]["hours"]) * streams
    )
    return {
        "retention": retain,
        "segments": segments,
        "labels": labels,
        "models": len(stats.get("models", [])),
        "db_bytes": series[-1]["bytes"],
        "db_bytes_per_stream_hour": series[-1]["bytes"] / stream_hours,
        "used_bytes_per_stream_hour": series[-1]["used_bytes"] / stream_hours,
        "steady_bytes_per_stream_hour": steady,
        "longest_retention_transaction_ms": longest_ms if retain else None,
        "p99_post_ms": sorted(post_ms)[min(len(post_ms) - 1, int(0.99 * len(post_ms)))],
        "wall_s": time.perf_counter() - started,
        "series": series,
    }


def run(
    hours: float = 24.0,
    streams: int = 2,
    labels_per_hour: float = 60.0,
    samples_hours: float = 4.0,
    windows_hours: float = 12.0,
    checkpoints: int = 3,
    out: str = "bench/results",
    progress: bool = False,
) -> dict[str, Any]:
    if not 0 < streams <= MAX_STREAMS or not 0 < hours <= MAX_HOURS:
        raise SystemExit(
            f"biofo bench soak: --streams must be in 1..{MAX_STREAMS} and --hours in (0, {MAX_HOURS}]"
        )
    base = replace(
        Settings.from_env(),
        admin_token=ADMIN,
        workers=0,
        retain_samples_hours=samples_hours,
        retain_windows_hours=windows_hours,
        retain_checkpoints=checkpoints,
        retain_every_s=MAX_HOURS * 3600.0,  # the soak runs each pass itself, on its simulated clock
    )
    arms = {}
    with tempfile.TemporaryDirectory(prefix="biofo-soak-") as folder:
        for name, retain in (("without", False), ("with", True)):
            settings = (
                base
                if retain
                else replace(
                    base,
                    retain_samples_hours=0.0,
                    retain_windows_hours=0.0,
                    retain_checkpoints=1_000_000,
                )
            )
            arms[name] = soak_arm(
                Path(folder) / f"{name}.db",
                settings,
                hours,
                streams,
                labels_per_hour,
                retain,
                progress,
                f"soak {name} retention",
            )
    result = {
        "hours": hours,
        "streams": streams,
        "labels_per_hour": labels_per_hour,
        "retention": {
            "samples_hours": samples_hours,
            "windows_hours": windows_hours,
            "checkpoints": checkpoints,
        },
        "db_bytes_per_stream_hour": {
            name: arm["db_bytes_per_stream_hour"] for name, arm in arms.items()
        },
        "steady_bytes_per_stream_hour": {
            name: arm["steady_bytes_per_stream_hour"] for name, arm in arms.items()
        },
        "longest_retention_transaction_ms": arms["with"]["longest_retention_transaction_ms"],
        "arms": arms,
    }
    folder = Path(out)
    stem = f"soak-{streams}x{hours:g}h"
    plot_lines(
        {
            f"{name} retention": (
                [p["hours"] for p in arm["series"]],
                [p["bytes"] / 2**20 for p in arm["series"]],
            )
            for name, arm in arms.items()
        },
        "simulated hours",
        "database size (MiB)",
        f"{streams} ECG streams, {labels_per_hour:g} labels/h each; retention: samples {samples_hours:g} h,"
        f" windows {windows_hours:g} h",
        folder / f"{stem}.png",
    )
    table = markdown_table(
        [
            "arm",
            "MiB at end",
            "bytes / stream-hour",
            "steady bytes / stream-hour",
            "longest retention tx (ms)",
            "p99 POST (ms)",
        ],
        [
            [
                name,
                arm["db_bytes"] / 2**20,
                arm["db_bytes_per_stream_hour"],
                arm["steady_bytes_per_stream_hour"],
                arm["longest_retention_transaction_ms"],
                arm["p99_post_ms"],
            ]
            for name, arm in arms.items()
        ],
    )
    command = (
        f"biofo bench soak --hours {hours:g} --streams {streams} --labels-per-hour {labels_per_hour:g}"
        f" --samples-hours {samples_hours:g} --windows-hours {windows_hours:g} --checkpoints {checkpoints}"
    )
    write_outputs(
        folder,
        stem,
        f"# Soak: database size\n\n`{command}`\n\n{table}\n\n![size]({stem}.png)\n",
        result,
    )
    return result
