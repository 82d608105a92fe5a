"""The daemon loses nothing: SIGKILL at random moments during a real replay with labels, a corrupt
checkpoint, SIGTERM with a request in flight. A short crash loop (5 kills); ``biofo bench crashloop``
runs the long one."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench import crashloop
from app.client import LOCAL_ADMIN_TOKEN as ADMIN_TOKEN
from signals.replay import ecg_requests
from tests.conftest import Daemon, start_daemon

KILLS = 5


@pytest.fixture(scope="module")
def crash_loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("crashloop")
    result = crashloop.run(kills=KILLS, minutes=2.0, seed=10, kill_window=(0.05, 0.5), checkpoint_every=7,
                           out=str(folder))
    return folder, result


def test_crash_loop_ends_bit_identical_to_a_run_that_never_crashed(crash_loop: tuple[Path, dict]) -> None:
    _, result = crash_loop
    assert result["kills"] == KILLS and result["starts"] == KILLS + 1
    assert result["checks"] == {name: True for name in result["checks"]}, result
    # Two minutes of record 208: every beat the reference annotates is labelled once and learned once.
    assert result["labels"] == result["model_version"] > 150
    assert result["segments_resent"] + result["label_posts_resent"] >= 1


@pytest.fixture(scope="module")
def corrupted(crash_loop: tuple[Path, dict]) -> Iterator[tuple[Daemon, crashloop.Outcome]]:
    """The clean run's database with its two newest checkpoints of the patient's model broken: the
    newest no longer matches its sha256, the one before matches but is not a checkpoint."""
    folder, _ = crash_loop
    expected = crashloop.outcome(folder / "clean.db")
    db = folder / "corrupt.db"
    shutil.copy(folder / "clean.db", db)
    garbage = b"not a checkpoint"
    with sqlite3.connect(db) as conn:
        newest, previous = [row[0] for row in conn.execute(
            "SELECT c.id FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.patient_id = ?"
            " ORDER BY c.id DESC LIMIT 2", (crashloop.PATIENT,))]
        conn.execute("UPDATE checkpoints SET blob = ? WHERE id = ?", (b"\0" * 64, newest))
        conn.execute("UPDATE checkpoints SET blob = ?, sha256 = ? WHERE id = ?",
                     (garbage, hashlib.sha256(garbage).hexdigest(), previous))
    daemon = start_daemon(db, folder / "corrupt.log", {"BIOFO_CHECKPOINT_EVERY": "7"})
    yield daemon, expected
    daemon.stop(signal.SIGKILL)


def test_corrupt_checkpoints_fall_back_to_an_older_one_plus_replay(corrupted) -> None:
    daemon, expected = corrupted
    with daemon.client(ADMIN_TOKEN) as client:
        model = client.get(f"/v1/models/ecg/{crashloop.PATIENT}").json()
    assert model["version"] == expected.version
    assert model["labels_pending"] == 0
    log = daemon.logs()
    assert "is corrupt (sha256 mismatch); trying the previous one" in log
    assert "does not load" in log


def test_sigterm_finishes_the_request_in_flight_then_checkpoints_and_exits_0(corrupted) -> None:
    """SIGTERM arrives while a segment's body is still being sent: the daemon stops taking connections,
    answers that request, writes the shutdown checkpoint and exits 0."""
    daemon, expected = corrupted
    body = json.dumps(next(ecg_requests("100", segment_s=30.0, patient_id="in-flight"))).encode()
    first_half_sent, release = threading.Event(), threading.Event()
    answers: list[httpx.Response] = []

    def stream() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        first_half_sent.set()
        release.wait(30)
        yield body[len(body) // 2:]

    def post() -> None:
        with daemon.client(ADMIN_TOKEN) as client:
            answers.append(client.post("/v1/windows", content=stream(), headers={"Content-Type": "application/json"}))

    sender = threading.Thread(target=post)
    sender.start()
    assert first_half_sent.wait(30)
    time.sleep(0.5)  # the daemon has accepted the connection and is reading the body
    daemon.process.send_signal(signal.SIGTERM)
    refused = False
    deadline = time.monotonic() + 30
    while not refused and time.monotonic() < deadline:
        try:
            httpx.get(f"{daemon.url}/healthz", timeout=1.0)
            time.sleep(0.05)
        except httpx.TransportError:
            refused = True  # shutting down: no new connections
    release.set()
    sender.join(60)
    assert refused
    assert daemon.process.wait(60) == 0
    assert len(answers) == 1 and answers[0].status_code == 201, answers
    stored = answers[0].json()["windows"]
    assert len(stored) > 20  # 30 s of record 100, about 37 beats
    with sqlite3.connect(daemon.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM windows WHERE patient_id = 'in-flight'").fetchone()[0] == len(stored)
        reason = conn.execute(
            "SELECT c.reason FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.patient_id = ?"
            " ORDER BY c.id DESC LIMIT 1", (crashloop.PATIENT,)).fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert reason == "shutdown"  # the replay after the fallback was checkpointed on the way out
    restored = crashloop.outcome(daemon.db)
    assert restored.weights.keys() == expected.weights.keys()
    for name, value in expected.weights.items():
        assert np.array_equal(restored.weights[name], value), name
