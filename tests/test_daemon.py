"""The daemon end to end: a real uvicorn on 127.0.0.1, real MIT-BIH and CHB-MIT records replayed."""

from __future__ import annotations

import json
import signal
import sqlite3

import numpy as np
import pytest

from app.replay import run as replay
from models import checkpoint
from signals.datafiles import require
from signals.replay import ecg_reference, ecg_requests, eeg_requests
from tests.conftest import ADMIN_TOKEN, Daemon, start_daemon

SEIZURE_CROP = "chbmit/crops/seizure/chb01_03_ti-seizure.edf"


def make_token(daemon: Daemon, role: str) -> str:
    with daemon.client() as client:
        response = client.post("/v1/tokens", json={"role": role, "name": f"test {role}"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def post_all(client, bodies) -> list[dict]:
    windows = []
    for body in bodies:
        response = client.post("/v1/windows", json=body)
        assert response.status_code == 201, response.text
        windows.extend(response.json()["windows"])
    return windows


def label_bodies(windows: list[dict], record: str) -> list[dict]:
    reference = ecg_reference(record)
    labels = []
    for window in windows:
        cls = reference.label_at(window["offset_s"])
        if cls is not None:
            labels.append({"window_id": window["id"], "label": cls, "labeled_by": "dr test"})
    return labels


def newest_weights(db) -> dict[str, np.ndarray]:
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT blob FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return {k: v.numpy().copy() for k, v in checkpoint.loads(blob).state_dict().items() if hasattr(v, "numpy")}


def test_ecg_labels_update_the_patient_model_in_place(daemon):
    device, clinician = make_token(daemon, "device"), make_token(daemon, "clinician")
    bodies = list(ecg_requests("208", minutes=2.0, patient_id="bed-7"))
    with daemon.client(device) as dev, daemon.client(clinician) as doc:
        windows = post_all(dev, bodies)
        assert len(windows) > 150  # record 208 runs near 95 beats/min
        assert {w["model_version"] for w in windows} == {0}
        assert all(abs(sum(w["probabilities"].values()) - 1.0) < 1e-3 for w in windows)
        labels = label_bodies(windows[:40], "208")
        accepted = doc.post("/v1/labels", json={"labels": labels})
        assert accepted.status_code == 202
        model = doc.wait_applied("ecg", "bed-7", accepted.json()["update_seq"])
        assert model["version"] == len(labels)
        assert model["updates_applied"] == len(labels)
        assert model["labels_pending"] == 0
        assert model["prequential"]["n"] == len(labels)
        # The next prediction comes from the updated weights and says which version made it.
        more = post_all(dev, list(ecg_requests("208", minutes=2.5, patient_id="bed-7"))[len(bodies):])
        assert more and {w["model_version"] for w in more} == {len(labels)}
        # A device may not label, a clinician may not roll back.
        assert dev.post("/v1/labels", json={"labels": labels[:1]}).status_code == 403
        assert doc.post("/v1/models/ecg/bed-7/rollback", json={"version": 0}).status_code == 403
    with sqlite3.connect(daemon.db) as conn:
        rows = conn.execute("SELECT version_before, version_after FROM updates ORDER BY id").fetchall()
        learned = conn.execute("SELECT label_id FROM update_labels ORDER BY update_id").fetchall()
    assert rows == [(i, i + 1) for i in range(len(labels))]
    assert [label_id for (label_id,) in learned] == accepted.json()["label_ids"]


def test_eeg_window_from_a_real_seizure_crop(daemon):
    device = make_token(daemon, "device")
    bodies = list(eeg_requests(require(SEIZURE_CROP), patient_id="chb01"))
    with daemon.client(device) as dev:
        windows = post_all(dev, bodies)
        retry = dev.post("/v1/windows", json=bodies[-1])
        rewind = dev.post("/v1/windows", json=bodies[0])
    assert len(windows) == 40 // 2  # a 40 s crop in 2 s windows
    assert {w["predicted"] for w in windows} <= {"seizure", "background"}
    # A device that lost the answer to its last segment and sends it again gets the stored windows.
    assert retry.status_code == 200 and retry.json()["windows"][0]["id"] == windows[-1]["id"]
    # Going back in time is refused, naming the field.
    assert rewind.status_code == 409 and "start" in str(rewind.json()["detail"])


def test_sigterm_checkpoints_and_exits_cleanly(daemon):
    with daemon.client() as admin:
        windows = post_all(admin, ecg_requests("119", minutes=0.5, patient_id="p119"))
        seq = admin.post("/v1/labels", json={"labels": label_bodies(windows, "119")}).json()["update_seq"]
        admin.wait_applied("ecg", "p119", seq)
    assert daemon.stop(signal.SIGTERM) == 0
    with sqlite3.connect(daemon.db) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM checkpoints ORDER BY id")]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert reasons == ["fork", "shutdown"]


def test_kill_9_loses_nothing_and_replays_bit_identically(tmp_path):
    """Weights after a SIGKILL mid-update and a restart equal those of a run that never crashed."""
    bodies = list(ecg_requests("208", minutes=1.5, patient_id="bed-9"))

    def run(db_name: str, crash: bool) -> tuple[dict, int]:
        daemon = start_daemon(tmp_path / db_name, tmp_path / f"{db_name}.log",
                              {"BIOFO_CHECKPOINT_EVERY": "7"})
        half = len(bodies) // 2
        with daemon.client() as client:
            windows = post_all(client, bodies[:half])
            first = client.post("/v1/labels", json={"labels": label_bodies(windows, "208")})
            assert first.status_code == 202
        if crash:
            # Labels are durable at 202; the worker is still applying them when the process dies.
            daemon.stop(signal.SIGKILL)
            daemon = start_daemon(daemon.db, daemon.log, {"BIOFO_CHECKPOINT_EVERY": "7"})
        with daemon.client() as client:
            windows = post_all(client, bodies[half:])
            last = client.post("/v1/labels", json={"labels": label_bodies(windows, "208")}).json()
            model = client.wait_applied("ecg", "bed-9", last["update_seq"])
        assert daemon.stop(signal.SIGTERM) == 0
        return newest_weights(daemon.db), model["version"]

    clean, clean_version = run("clean.db", crash=False)
    crashed, crashed_version = run("crashed.db", crash=True)
    assert crashed_version == clean_version > 0
    assert clean.keys() == crashed.keys()
    for name in clean:
        assert np.array_equal(clean[name], crashed[name]), name
    with sqlite3.connect(tmp_path / "crashed.db") as conn:
        labels = conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        unapplied = conn.execute(
            "SELECT COUNT(*) FROM labels l WHERE NOT EXISTS"
            " (SELECT 1 FROM update_labels ul WHERE ul.label_id = l.id)"
        ).fetchone()[0]
    assert labels == crashed_version and unapplied == 0


def test_rollback_keeps_labels_and_can_replay_them(tmp_path):
    daemon = start_daemon(tmp_path / "r.db", tmp_path / "r.log", {"BIOFO_CHECKPOINT_EVERY": "5"})
    try:
        with daemon.client() as admin:
            windows = post_all(admin, ecg_requests("100", minutes=0.5, patient_id="p100"))
            labels = label_bodies(windows, "100")[:12]
            seq = admin.post("/v1/labels", json={"labels": labels}).json()["update_seq"]
            admin.wait_applied("ecg", "p100", seq)
            versions = [c["version"] for c in admin.get("/v1/models/ecg/p100/checkpoints").json()["checkpoints"]]
            assert versions == [10, 5, 0]
            missing = admin.post("/v1/models/ecg/p100/rollback", json={"version": 3})
            assert missing.status_code == 422 and "version" in str(missing.json()["detail"])
            back = admin.post("/v1/models/ecg/p100/rollback", json={"version": 5}).json()
            assert back["version"] == 13  # versions only move forward; 13 holds the weights of 5
            replayed = admin.post("/v1/models/ecg/p100/rollback",
                                  json={"version": 10, "replay_later_labels": True}).json()
            assert replayed["version"] == 14 + 2  # weights of 10, then the 2 later labels again
        with sqlite3.connect(daemon.db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 12
    finally:
        daemon.stop(signal.SIGKILL)


def test_replay_command_labels_the_first_minutes(daemon):
    summary = replay("208", daemon.url, ADMIN_TOKEN, label_minutes=1.0, minutes=2.0)
    assert summary["labels"] > 60 and summary["updates"] == summary["labels"]
    assert summary["windows"] > summary["labels"]
    rest = summary["rest"]
    assert rest["n"] > 60 and rest["accuracy"] is not None
    assert set(rest) >= {"accuracy", "VEB", "SVEB"} and set(rest["VEB"]) == {"se", "ppv"}


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    running = start_daemon(folder / "biofo.db", folder / "daemon.log")
    yield running
    running.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda b: b["samples"][0].__setitem__(3, float("nan")), 422, "samples"),
        (lambda b: b["samples"][1].__setitem__(0, float("inf")), 422, "samples"),
        (lambda b: b.update(fs=0), 422, "fs"),
        (lambda b: b.update(fs=-360), 422, "fs"),
        (lambda b: b.update(fs=1e9), 422, "fs"),
        (lambda b: b.update(modality="emg"), 422, "modality"),
        (lambda b: b.update(patient_id="../../etc/passwd"), 422, "patient_id"),
        (lambda b: b.update(patient_id="x'; DROP TABLE windows; --"), 422, "patient_id"),
        (lambda b: b["samples"][1].pop(), 422, "samples"),
        (lambda b: b.update(samples=[[], []]), 422, "samples"),
        (lambda b: b.update(channels=["MLII"]), 422, "samples"),
        (lambda b: b.update(r_peaks=[5, 3]), 422, "r_peaks"),
        (lambda b: b.update(r_peaks=[10 ** 7]), 422, "r_peaks"),
        (lambda b: b.update(start=-1), 422, "start"),
        (lambda b: b.update(extra="field"), 422, "extra"),
    ],
)
def test_bad_windows_are_refused_and_nothing_is_written(shared_daemon, mutate, status, field):
    body = next(ecg_requests("100", minutes=0.2))
    mutate(body)
    with shared_daemon.client() as client:
        # Python's encoder writes NaN and Infinity literals, as some device firmware does.
        response = client.post("/v1/windows", content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert field in str(response.json()["detail"])
        assert client.get("/v1/windows").json()["windows"] == []
        assert client.get("/v1/models").json()["models"] == []
