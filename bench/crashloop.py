"""``biofo bench crashloop``: SIGKILL the daemon at random moments while a device replays a real record
and a clinician labels its beats, restart it each time, and compare the end with a run that never
crashed.

The device side is deterministic and idempotent, so both runs apply the same labels in the same order:
a segment whose POST died with the daemon is sent again after the restart (the daemon answers a repeat
of the last accepted segment with the stored windows); a label POST that died may or may not have been
committed (it is one transaction), so the device first asks which of its windows carry a label
(``GET /v1/windows?labeled=true``) and sends only the missing ones. Kill moments come from a seeded
generator: the steps (a segment POST or a label POST) during which a kill is armed are drawn from the
first 90 % of the script (a step waits while the previous kill is still armed), and each kill fires
``kill_window`` seconds (uniform) after its step starts. On a fast machine the script can end before
every kill was armed; those kills then hit the daemon while it learns the last labels, so a run
always has exactly ``kills`` kills.

At the end the daemon gets SIGTERM, which must exit 0 with every label in a checkpoint, and the
databases of both runs are compared: newest checkpoint weights bit for bit, every window's features,
every label the device saw accepted, one update row per label, and ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from app.client import LocalDaemon
from models import checkpoint
from signals.replay import ecg_reference, ecg_requests

PATIENT = "crash-208"
LABELER = "crashloop (reference annotations)"


@dataclass
class Script:
    """What the device sends: segments in order, each followed by the reference labels of its beats."""

    bodies: list[dict[str, Any]]
    record: str

    @classmethod
    def ecg(cls, record: str, minutes: float | None) -> Script:
        return cls(list(ecg_requests(record, patient_id=PATIENT, minutes=minutes)), record)


@dataclass
class RunResult:
    kills: int
    starts: int
    seconds: float
    sigterm_status: int
    accepted_label_ids: set[int] = field(default_factory=set)
    resent_segments: int = 0
    resent_label_posts: int = 0
    labels_found_committed: int = 0


class Device:
    """Replays a script into whichever daemon process is running, surviving that process's death."""

    def __init__(self, script: Script, result: RunResult):
        self.script = script
        self.result = result
        self.reference = ecg_reference(script.record)

    def post_segment(self, client: httpx.Client, index: int, retry: bool) -> list[dict[str, Any]]:
        response = client.post("/v1/windows", json=self.script.bodies[index])
        if response.status_code not in (200, 201):
            raise AssertionError(f"segment {index}: {response.status_code} {response.text[:300]}")
        if retry:
            self.result.resent_segments += 1
        return list(response.json()["windows"])

    def labels_for(self, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = []
        for window in windows:
            cls = self.reference.label_at(window["offset_s"])
            if cls is not None:
                labels.append({"window_id": window["id"], "label": cls, "labeled_by": LABELER})
        return labels

    def labelled_among(self, client: httpx.Client, window_ids: set[int]) -> set[int]:
        """Which of these windows already carry a label: the newest labelled windows of the patient."""
        response = client.get("/v1/windows", params={
            "patient_id": PATIENT, "modality": "ecg", "labeled": "true", "order": "recent",
            "limit": max(1, len(window_ids)),
        })
        response.raise_for_status()
        return {w["id"] for w in response.json()["windows"]} & window_ids

    def post_labels(self, client: httpx.Client, labels: list[dict[str, Any]], retry: bool) -> None:
        if retry:
            done = self.labelled_among(client, {label["window_id"] for label in labels})
            self.result.labels_found_committed += len(done)
            labels = [label for label in labels if label["window_id"] not in done]
            self.result.resent_label_posts += bool(labels)
        if not labels:
            return
        response = client.post("/v1/labels", json={"labels": labels})
        if response.status_code != 202:
            raise AssertionError(f"labels: {response.status_code} {response.text[:300]}")
        self.result.accepted_label_ids.update(response.json()["label_ids"])


def _arm(daemon: LocalDaemon, delay: float) -> threading.Timer:
    """SIGKILL this daemon process (never a later one) after ``delay`` seconds, and reap it, so that
    once the timer has finished ``poll()`` tells the truth."""
    process = daemon.process
    assert process is not None

    def kill() -> None:
        process.kill()
        process.wait()

    timer = threading.Timer(delay, kill)
    timer.daemon = True
    timer.start()
    return timer


def replay(
    daemon: LocalDaemon, script: Script, kills: int, seed: int, kill_window: tuple[float, float],
    progress: bool = False,
) -> RunResult:
    """Run the script to its end, killing and restarting the daemon ``kills`` times on the way."""
    rng = random.Random(seed)
    result = RunResult(kills=0, starts=0, seconds=0.0, sigterm_status=-1)
    device = Device(script, result)
    steps = [(kind, index) for index in range(len(script.bodies)) for kind in ("segment", "labels")]
    eligible = int(0.9 * len(steps))
    if kills > eligible:
        raise ValueError(f"{kills} kills need a script of at least {kills / 0.9:.0f} steps, not {len(steps)}")
    kill_steps = sorted(rng.sample(range(eligible), kills))
    started = time.monotonic()
    daemon.start()
    step, retry = 0, False
    timers: list[threading.Timer] = []
    windows: list[dict[str, Any]] = []
    bar = tqdm(total=len(steps), desc=f"replay, {kills} kills", unit="step", disable=not progress)
    while step < len(steps):
        kind, index = steps[step]
        # One kill armed at a time, so that each one takes down a different process.
        armed = bool(timers) and timers[-1].is_alive()
        alive = daemon.process is not None and daemon.process.poll() is None
        if kill_steps and step >= kill_steps[0] and not retry and not armed and alive:
            kill_steps.pop(0)
            timers.append(_arm(daemon, rng.uniform(*kill_window)))
        try:
            with daemon.client(timeout=120.0) as client:
                if kind == "segment":
                    windows = device.post_segment(client, index, retry)
                else:
                    device.post_labels(client, device.labels_for(windows), retry)
            step, retry = step + 1, False
            bar.update(1)
        except httpx.TransportError:
            retry = True
            if daemon.process is not None and daemon.process.poll() is None:
                time.sleep(0.2)  # the daemon lives: a slow answer, try again
                continue
            result.kills += 1
            daemon.start()
    bar.close()
    for timer in timers:
        timer.join()
    if daemon.process is not None and daemon.process.poll() is not None:
        result.kills += 1  # the last kill fell after the script's last answer
        daemon.start()
    for _ in kill_steps:  # kills the script ended too soon to arm: they hit the daemon while it learns
        _arm(daemon, rng.uniform(*kill_window)).join()
        result.kills += 1
        daemon.start()
    with daemon.client() as client:
        client.wait_learned("ecg", PATIENT)
    result.sigterm_status = daemon.stop(signal.SIGTERM)
    result.starts = daemon.starts
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Outcome:
    """What a finished run left in its database."""

    weights: dict[str, np.ndarray]
    version: int
    newest_label_seq: int
    windows: list[tuple[float, bytes]]
    labels: dict[int, tuple[int, str]]  # label id -> (window id, class)
    updates_per_label: dict[int, int]
    integrity: str


def outcome(db: Path) -> Outcome:
    with sqlite3.connect(db) as conn:
        (model_id,) = conn.execute("SELECT id FROM models WHERE patient_id = ?", (PATIENT,)).fetchone()
        blob, version, applied_seq = conn.execute(
            "SELECT blob, version, applied_seq FROM checkpoints WHERE model_id = ? ORDER BY id DESC LIMIT 1",
            (model_id,),
        ).fetchone()
        windows = [(float(o), bytes(f)) for o, f in conn.execute(
            "SELECT offset_s, features FROM windows WHERE model_id = ? ORDER BY id", (model_id,))]
        labels = {i: (w, c) for i, w, c in conn.execute("SELECT id, window_id, label FROM labels ORDER BY id")}
        updates = dict(conn.execute(
            "SELECT ul.label_id, COUNT(*) FROM update_labels ul JOIN updates u ON u.id = ul.update_id"
            " WHERE u.model_id = ? GROUP BY ul.label_id", (model_id,)))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    learner = checkpoint.loads(bytes(blob))
    weights = {k: v.numpy().copy() for k, v in learner.state_dict().items() if hasattr(v, "numpy")}
    return Outcome(weights, int(version), int(applied_seq), windows, labels, updates, str(integrity))


def compare(clean: Outcome, crashed: Outcome, accepted: set[int]) -> dict[str, Any]:
    """The checks the crash loop must pass, each as a named boolean."""
    same_weights = clean.weights.keys() == crashed.weights.keys() and all(
        np.array_equal(clean.weights[name], crashed.weights[name]) for name in clean.weights
    )
    windows_per_label = [w for w, _ in crashed.labels.values()]
    return {
        "weights_bit_identical": same_weights,
        "same_version": clean.version == crashed.version,
        "same_windows_and_features": clean.windows == crashed.windows,
        "same_labels": sorted(clean.labels.values()) == sorted(crashed.labels.values()),
        "every_accepted_label_present": accepted <= crashed.labels.keys(),
        "no_duplicate_labels": len(set(windows_per_label)) == len(windows_per_label),
        "one_update_per_label": crashed.updates_per_label == {i: 1 for i in crashed.labels},
        # After SIGTERM nothing is left to replay: the newest checkpoint holds every label.
        "newest_checkpoint_holds_every_label": all(
            run.newest_label_seq == max(run.labels, default=0) for run in (clean, crashed)),
        "integrity_check_ok": clean.integrity == crashed.integrity == "ok",
    }


def run(
    kills: int = 50, minutes: float | None = None, record: str = "208", seed: int = 0,
    kill_window: tuple[float, float] = (0.05, 0.75), checkpoint_every: int = 10, out: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    script = Script.ecg(record, minutes)
    env = {"BIOFO_CHECKPOINT_EVERY": str(checkpoint_every)}
    with tempfile.TemporaryDirectory(prefix="biofo-crashloop-") as scratch:
        folder = Path(out) if out else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        def one_run(name: str, n_kills: int) -> RunResult:
            for stale in folder.glob(f"{name}.db*"):
                stale.unlink()
            daemon = LocalDaemon(folder / f"{name}.db", folder / f"{name}.log", env)
            try:
                return replay(daemon, script, n_kills, seed, kill_window, progress)
            finally:
                daemon.close()

        # The two runs share nothing but the script, so they run side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(one_run, name, n) for name, n in (("clean", 0), ("crashed", kills))}
            runs = {name: future.result() for name, future in futures.items()}
        clean, crashed = outcome(folder / "clean.db"), outcome(folder / "crashed.db")
    checks = compare(clean, crashed, runs["crashed"].accepted_label_ids)
    checks["sigterm_exit_0"] = runs["clean"].sigterm_status == runs["crashed"].sigterm_status == 0
    checks["every_kill_done"] = runs["crashed"].kills == kills
    return {
        "ok": all(checks.values()),
        "record": record,
        "segments": len(script.bodies),
        "kills": runs["crashed"].kills,
        "starts": runs["crashed"].starts,
        "windows": len(crashed.windows),
        "labels": len(crashed.labels),
        "accepted_labels_seen": len(runs["crashed"].accepted_label_ids),
        "labels_committed_but_unacknowledged": runs["crashed"].labels_found_committed,
        "segments_resent": runs["crashed"].resent_segments,
        "label_posts_resent": runs["crashed"].resent_label_posts,
        "model_version": crashed.version,
        "clean_seconds": runs["clean"].seconds,
        "crashed_seconds": runs["crashed"].seconds,
        "checks": checks,
    }
