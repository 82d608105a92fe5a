"""``biofo bench daemon``: N bedside devices replay real records into one daemon, in real time.

The daemon runs as ``biofo serve`` in a child process on 127.0.0.1 (loopback only) with a fresh
database. ECG device ``i`` plays MIT-BIH record ``NON_PACED[i % 44]`` as patient ``bench-i``: a 10 s
segment (both leads, mV, no R peaks: the daemon finds the beats) is sent once the device has recorded
it, i.e. at ``t0_i + 10 (k + 1)`` s, the ``t0_i`` spread over the first 10 s. EEG device ``j`` plays
the staged CHB-MIT crops of patient ``j % 17`` back to back (their 23 channels at 256 Hz, 2 s
segments, the time line continuing across crops and starting again at the first crop when they run
out) as patient ``bench-eeg-j``. A device sends its next segment only after the previous answer, so
a daemon that cannot keep up shows as growing latency and lag; after ``duration`` seconds no device
sends again, and segments still due are counted as unsent. A clinician labels one beat of every ECG
segment with its reference class (a separate request, not in the device's path). With
``device_r_peaks`` each ECG segment carries its R peaks, as a monitor with its own QRS detector would
send them (here the reference beat positions), and the daemon skips detection. Segments go as JSON
or as binary float32 bodies (``body``); ``max_resident`` bounds the models the daemon keeps in memory.

Figures: POST /v1/windows latency measured by the client (p50, p99); windows stored per second;
label-to-applied-update latency from the database (``updates.at - labels.at``: label committed to
update committed, both on the daemon's clock); each also after the warm-up (the first ``warmup``
fraction of the run, when every patient's model is forked); the VmRSS of the daemon and its
workers, sampled every few seconds, its peak, and its growth from the end of the warm-up to the end; lost
rows: windows the client got a 201 for that are not in the database, and accepted labels that are not;
the database's bytes (with its write-ahead log) per stream-hour at the end.
Bounded: at most ``MAX_STREAMS`` streams of each modality for at most ``MAX_DURATION_S`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from app.client import LocalDaemon, encode_segment
from signals.chbmit import read_crops
from signals.mitbih import NON_PACED
from signals.replay import (
    ECG_SEGMENT_S,
    EEG_SEGMENT_S,
    ReferenceLabels,
    ecg_reference,
    ecg_requests,
    eeg_requests,
)

MAX_STREAMS = 1000
MAX_DURATION_S = 3600.0
RSS_EVERY_S = 5.0
LABELER = "bench (reference annotations)"
PLACEHOLDER = "PATIENT"
BODIES = ("json", "float32")
Encoded = tuple[bytes, dict[str, str]]  # a request body and its headers, patient ``PLACEHOLDER``


def rss_mib(pid: int) -> float:
    """Resident set size of a process and all its descendants (the feature-extraction workers), from
    ``/proc/PID/status`` (VmRSS, kB). Pages shared between them are counted once per process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            own = int(line.split()[1]) / 1024.0
            break
    else:
        raise RuntimeError(f"no VmRSS for process {pid}")
    total = own
    for child in _children(pid):
        try:
            total += rss_mib(child)
        except (FileNotFoundError, RuntimeError):
            continue  # it exited while being read
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return found


def _encode(body: dict[str, Any], encoding: str) -> Encoded:
    if encoding == "json":
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    return encode_segment(body, encoding)


@cache
def ecg_segments(record: str, count: int, r_peaks: bool, encoding: str) -> tuple[Encoded, ...]:
    """The first ``count`` 10 s segments of a MIT-BIH record, encoded."""
    bodies = ecg_requests(record, patient_id=PLACEHOLDER, minutes=count * ECG_SEGMENT_S / 60.0,
                          include_r_peaks=r_peaks)
    return tuple(_encode(body, encoding) for body in bodies)


@cache
def eeg_segments(patient: str, count: int, encoding: str) -> tuple[Encoded, ...]:
    """``count`` 2 s segments of a CHB-MIT patient's staged crops played back to back, encoded."""
    files = [f for crop in read_crops() if crop.patient == patient for f in (crop.seizure_file, crop.after60_file)]
    bodies: list[dict[str, Any]] = []
    while len(bodies) < count:
        for path in files:
            for body in eeg_requests(path, patient_id=PLACEHOLDER):
                if len(bodies) == count:
                    break
                body["start"] = len(bodies) * EEG_SEGMENT_S
                bodies.append(body)
    return tuple(_encode(body, encoding) for body in bodies)


def for_patient(segment: Encoded, patient_id: str) -> Encoded:
    """A template segment for one patient (its id is in the body for JSON, in the header for binary)."""
    content, headers = segment
    name = json.dumps(patient_id)
    if "X-Biofo-Segment" in headers:
        return content, {**headers, "X-Biofo-Segment": headers["X-Biofo-Segment"].replace(f'"{PLACEHOLDER}"', name, 1)}
    return content.replace(f'"{PLACEHOLDER}"'.encode(), name.encode(), 1), headers


@dataclass
class Stream:
    index: int
    patient_id: str
    offset_s: float
    segment_s: float
    segments: tuple[Encoded, ...]
    reference: ReferenceLabels | None  # None: nobody labels this stream
    post_ms: list[float] = field(default_factory=list)
    post_sent_s: list[float] = field(default_factory=list)  # when each of them was sent, from t0
    label_post_ms: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    windows_acknowledged: int = 0
    windows_at: list[tuple[float, int]] = field(default_factory=list)  # (answer time, windows)
    label_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unsent: int = 0


async def device(stream: Stream, client: httpx.AsyncClient, clinician: str, t0: float, duration: float,
                 labels: set[asyncio.Task], bar: tqdm) -> None:
    for k, template in enumerate(stream.segments):
        due = t0 + stream.offset_s + (k + 1) * stream.segment_s
        if due - t0 > duration:
            return
        if time.monotonic() - t0 > duration:
            # Bounded: a daemon that fell behind leaves the rest of this device's backlog unsent.
            stream.unsent = sum(1 for j in range(k, len(stream.segments))
                                if stream.offset_s + (j + 1) * stream.segment_s <= duration)
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        content, headers = for_patient(template, stream.patient_id)
        sent = time.monotonic()
        stream.lag_s.append(sent - due)
        try:
            response = await client.post("/v1/windows", content=content, headers=headers)
        except httpx.HTTPError as error:
            stream.errors.append(f"segment {k}: {type(error).__name__}")
            continue
        answered = time.monotonic()
        if response.status_code != 201:
            stream.errors.append(f"segment {k}: {response.status_code} {response.text[:200]}")
            continue
        stream.post_ms.append((answered - sent) * 1000.0)
        stream.post_sent_s.append(sent - t0)
        windows = response.json()["windows"]
        stream.windows_acknowledged += len(windows)
        stream.windows_at.append((answered, len(windows)))
        bar.update(1)
        reference = stream.reference
        if reference is None:
            continue
        labelled = next(({"window_id": w["id"], "label": cls, "labeled_by": LABELER} for w in windows
                         if (cls := reference.label_at(w["offset_s"])) is not None), None)
        if labelled is not None:
            task = asyncio.create_task(label(stream, client, clinician, labelled))
            labels.add(task)
            task.add_done_callback(labels.discard)


async def label(stream: Stream, client: httpx.AsyncClient, clinician: str, item: dict[str, Any]) -> None:
    sent = time.monotonic()
    try:
        response = await client.post("/v1/labels", json={"labels": [item]},
                                     headers={"Authorization": f"Bearer {clinician}"})
    except httpx.HTTPError as error:
        stream.errors.append(f"label: {type(error).__name__}")
        return
    if response.status_code != 202:
        stream.errors.append(f"label: {response.status_code} {response.text[:200]}")
        return
    stream.label_post_ms.append((time.monotonic() - sent) * 1000.0)
    stream.label_ids.extend(response.json()["label_ids"])


async def sample_rss(pid: int, t0: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic() - t0, rss_mib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)
        except asyncio.TimeoutError:
            pass
    samples.append((time.monotonic() - t0, rss_mib(pid)))


async def drive(daemon: LocalDaemon, streams: list[Stream], duration: float, progress: bool
                ) -> tuple[float, float, list[tuple[float, float]]]:
    """Run every device; returns the run's length, its start on the wall clock, and the RSS samples."""
    device_token, clinician = daemon.create_token("device"), daemon.create_token("clinician")
    limits = httpx.Limits(max_connections=len(streams) + 16, max_keepalive_connections=len(streams) + 16)
    rss: list[tuple[float, float]] = []
    stop = asyncio.Event()
    labels: set[asyncio.Task] = set()
    expected = sum(int((duration - s.offset_s) // s.segment_s) for s in streams)
    async with httpx.AsyncClient(base_url=daemon.url, limits=limits, timeout=300.0,
                                 headers={"Authorization": f"Bearer {device_token}"}) as client:
        t0, wall0 = time.monotonic(), time.time()
        sampler = asyncio.create_task(sample_rss(daemon.pid, t0, rss, stop))
        with tqdm(total=expected, desc=f"{len(streams)} streams", unit="segment", disable=not progress) as bar:
            await asyncio.gather(*(device(s, client, clinician, t0, duration, labels, bar) for s in streams))
        while labels:
            await asyncio.gather(*list(labels))
        elapsed = time.monotonic() - t0
        stop.set()
        await sampler
    return elapsed, wall0, rss


def wait_applied(daemon: LocalDaemon, streams: list[Stream], timeout: float = 600.0) -> None:
    """Until every model has applied the labels its clinician got accepted."""
    pending = {s.patient_id: max(s.label_ids) for s in streams if s.label_ids}
    deadline = time.monotonic() + timeout
    with daemon.client() as admin:
        while pending and time.monotonic() < deadline:
            applied = {m["patient_id"]: m["applied_seq"] for m in admin.models()}
            pending = {p: seq for p, seq in pending.items() if applied.get(p, 0) < seq}
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def stored(db: Path, streams: list[Stream], warm_from: float) -> dict[str, Any]:
    """What the database holds against what the clients were told, and label-to-update latencies (all,
    and for labels given from ``warm_from`` on the wall clock)."""
    with sqlite3.connect(db) as conn:
        per_patient = dict(conn.execute("SELECT patient_id, COUNT(*) FROM windows GROUP BY patient_id"))
        label_ids = {i for (i,) in conn.execute("SELECT id FROM labels")}
        timed = [(a, 1000.0 * (u - a)) for a, u in conn.execute(
            "SELECT l.at, u.at FROM update_labels ul JOIN labels l ON l.id = ul.label_id"
            " JOIN updates u ON u.id = ul.update_id")]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    db_bytes = sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))
    lost_windows = sum(max(0, s.windows_acknowledged - per_patient.get(s.patient_id, 0)) for s in streams)
    unacknowledged = sum(max(0, per_patient.get(s.patient_id, 0) - s.windows_acknowledged) for s in streams)
    accepted = {i for s in streams for i in s.label_ids}
    return {
        "lost_windows": lost_windows,
        "windows_stored_unacknowledged": unacknowledged,
        "lost_labels": len(accepted - label_ids),
        "label_to_update_ms": [ms for _, ms in timed],
        "label_to_update_ms_warm": [ms for at, ms in timed if at >= warm_from],
        "integrity_check": integrity,
        "db_bytes": db_bytes,
    }


def plan_streams(streams: int, eeg_streams: int, duration: float, device_r_peaks: bool, body: str, seed: int
                 ) -> list[Stream]:
    rng = random.Random(seed)
    eeg_patients = sorted({crop.patient for crop in read_crops()})
    ecg_count, eeg_count = int(duration // ECG_SEGMENT_S) + 1, int(duration // EEG_SEGMENT_S) + 1
    plan = [Stream(i, f"bench-{i:03d}", rng.uniform(0.0, ECG_SEGMENT_S), ECG_SEGMENT_S,
                   ecg_segments(NON_PACED[i % len(NON_PACED)], ecg_count, device_r_peaks, body),
                   ecg_reference(NON_PACED[i % len(NON_PACED)]))
            for i in range(streams)]
    plan += [Stream(streams + j, f"bench-eeg-{j:03d}", rng.uniform(0.0, EEG_SEGMENT_S), EEG_SEGMENT_S,
                    eeg_segments(eeg_patients[j % len(eeg_patients)], eeg_count, body), None)
             for j in range(eeg_streams)]
    return plan


def run(
    streams: int = 20, duration: float = 60.0, device_r_peaks: bool = False, warmup: float = 0.2, seed: int = 0,
    out: str | None = None, progress: bool = False, eeg_streams: int = 0, body: str = "json",
    max_resident: int | None = None,
) -> dict[str, Any]:
    if not 1 <= streams <= MAX_STREAMS or not 0 <= eeg_streams <= MAX_STREAMS:
        raise ValueError(f"streams must be 1..{MAX_STREAMS} and eeg_streams 0..{MAX_STREAMS}")
    if not ECG_SEGMENT_S * 2 <= duration <= MAX_DURATION_S:
        raise ValueError(f"duration must be {2 * ECG_SEGMENT_S}..{MAX_DURATION_S} s")
    if body not in BODIES:
        raise ValueError(f"body must be one of {BODIES}")
    plan = plan_streams(streams, eeg_streams, duration, device_r_peaks, body, seed)
    env = {} if max_resident is None else {"BIOFO_MAX_RESIDENT_MODELS": str(max_resident)}
    with tempfile.TemporaryDirectory(prefix="biofo-bench-daemon-") as scratch:
        folder = Path(out) if out else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("bench.db*"):
            stale.unlink()
        with LocalDaemon(folder / "bench.db", folder / "daemon.log", env) as daemon:
            elapsed, wall0, rss = asyncio.run(drive(daemon, plan, duration, progress))
            wait_applied(daemon, plan)
            sigterm_status = daemon.stop(signal.SIGTERM)
            # The daemon logs warnings and errors only: what it said explains any 5xx the devices saw.
            daemon_log = daemon.tail(60)
        rows = stored(folder / "bench.db", plan, wall0 + warmup * duration)
    post_ms = [v for s in plan for v in s.post_ms]
    warm_post_ms = [v for s in plan for v, t in zip(s.post_ms, s.post_sent_s) if t >= warmup * duration]
    label_post_ms = [v for s in plan for v in s.label_post_ms]
    lag = [v for s in plan for v in s.lag_s]
    windows = sum(s.windows_acknowledged for s in plan)
    warm = [mib for t, mib in rss if t >= warmup * elapsed]
    growth = (rss[-1][1] - warm[0]) / warm[0] if warm else None
    return {
        "streams": streams,
        "eeg_streams": eeg_streams,
        "duration_s": duration,
        "device_r_peaks": device_r_peaks,
        "body": body,
        "max_resident": max_resident,
        "elapsed_s": elapsed,
        "segments": len(post_ms),
        "segments_unsent": sum(s.unsent for s in plan),
        "windows": windows,
        "windows_per_s": windows / elapsed,
        "p50_post_ms": percentile(post_ms, 50),
        "p99_post_ms": percentile(post_ms, 99),
        "max_post_ms": max(post_ms, default=None),
        "p50_post_ms_after_warmup": percentile(warm_post_ms, 50),
        "p99_post_ms_after_warmup": percentile(warm_post_ms, 99),
        "p99_post_ms_ecg": percentile([v for s in plan[:streams] for v in s.post_ms], 99),
        "p99_post_ms_eeg": percentile([v for s in plan[streams:] for v in s.post_ms], 99),
        "p99_lag_s": percentile(lag, 99),
        "labels": len(label_post_ms),
        "p50_label_post_ms": percentile(label_post_ms, 50),
        "p99_label_post_ms": percentile(label_post_ms, 99),
        "p50_label_to_update_ms": percentile(rows["label_to_update_ms"], 50),
        "p99_label_to_update_ms": percentile(rows["label_to_update_ms"], 99),
        "p99_label_to_update_ms_after_warmup": percentile(rows["label_to_update_ms_warm"], 99),
        "rss_mib_start": rss[0][1] if rss else None,
        "rss_mib_after_warmup": warm[0] if warm else None,
        "rss_mib_end": rss[-1][1] if rss else None,
        "peak_rss_mib": max(mib for _, mib in rss) if rss else None,
        "rss_growth": growth,
        "rss_mib": [[round(t, 1), round(mib, 1)] for t, mib in rss],
        "db_bytes": rows["db_bytes"],
        "db_bytes_per_stream_hour": rows["db_bytes"] / ((streams + eeg_streams) * elapsed / 3600.0),
        "lost_windows": rows["lost_windows"],
        "windows_stored_unacknowledged": rows["windows_stored_unacknowledged"],
        "lost_labels": rows["lost_labels"],
        "errors": sum(len(s.errors) for s in plan),
        "error_examples": [e for s in plan for e in s.errors][:10],
        "daemon_log_tail": daemon_log,
        "integrity_check": rows["integrity_check"],
        "sigterm_exit_status": sigterm_status,
    }
