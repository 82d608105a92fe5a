"""Alarms from real signal streamed through a real daemon: ventricular runs in MIT-BIH 203, a seizure
in a CHB-MIT crop, acknowledgement, and webhook delivery with retries on its own thread."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Daemon, start_daemon

from app.alarms import ALARM_RULES
from app.client import free_port
from signals import replay
from signals.datafiles import require

ECG_PATIENT = "alarm-203"
EEG_PATIENT = "alarm-chb01"
SEIZURE_CROP = "chbmit/crops/seizure/chb01_03_ti-seizure.edf"


class Receiver:
    """A webhook endpoint that refuses its first ``failures`` requests with 500, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[dict] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.refused < receiver.failures:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver(failures=2)
    yield made
    made.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("alarms")
    # The second webhook is a closed port: its deliveries fail and are retried; the first one's
    # alarms still go out and ingest never waits for either.
    dead = f"http://127.0.0.1:{free_port()}/hook"
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log", {
        "BIOFO_ALARM_WEBHOOKS": f"{receiver.url},{dead}", "BIOFO_ALARM_RETRY_S": "0.2",
        "BIOFO_ALARM_MAX_ATTEMPTS": "4",
    })
    yield daemon
    daemon.stop()


def _post(daemon: Daemon, bodies: Iterator[dict]) -> int:
    sent = 0
    with daemon.client() as client:
        for body in bodies:
            assert client.post("/v1/windows", json=body).status_code == 201
            sent += 1
    return sent


def _runs(windows: list[dict], cls: str, min_run: int) -> list[list[int]]:
    """Maximal runs of ``cls`` predictions, in stream order, at least ``min_run`` long."""
    runs, run = [], []
    for window in windows + [{"id": None, "predicted": None}]:
        if window["predicted"] == cls:
            run.append(window["id"])
            continue
        if len(run) >= min_run:
            runs.append(run)
        run = []
    return runs


def _wait(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_ventricular_runs_in_203_raise_one_alarm_each(served: Daemon, receiver: Receiver) -> None:
    segments = _post(served, replay.ecg_requests("203", patient_id=ECG_PATIENT, minutes=6.0))
    assert segments == 36
    with served.client() as client:
        windows = client.get("/v1/windows", params={"patient_id": ECG_PATIENT, "order": "time", "limit": 1000}).json()["windows"]
        expected = _runs(windows, "V", 3)
        assert expected, "record 203 holds five reference ventricular runs in its first 6 minutes"
        alarms = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT}).json()["alarms"]
    # One alarm per run, spanning exactly the run, however the run falls across 10 s segments.
    got = sorted((a["first_window_id"], a["last_window_id"], a["n_windows"]) for a in alarms)
    assert got == sorted((run[0], run[-1], len(run)) for run in expected)
    assert {a["kind"] for a in alarms} == {"ventricular_run"}
    # The offline form evaluations use marks the same alarms: every run's windows from its third on.
    offline = ALARM_RULES["ecg"].in_alarm([w["predicted"] for w in windows])
    assert {w["id"] for w, up in zip(windows, offline, strict=True) if up} == {i for run in expected for i in run[2:]}
    assert all(a["acknowledged_at"] is None for a in alarms)

    # Every alarm reaches the live webhook despite its first two refusals; the dead one is retried
    # and given up after the configured attempts.
    ids = {a["id"] for a in alarms}
    assert _wait(lambda: ids <= {b["alarm"]["id"] for b in receiver.bodies}), receiver.bodies
    with served.client() as client:
        def settled() -> list[dict] | None:
            rows = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT}).json()["alarms"]
            done = all(d["delivered_at"] is not None or d["attempts"] == 4 for a in rows for d in a["deliveries"])
            return rows if done else None

        rows = _wait(settled)
    assert rows is not None
    live = [d for a in rows for d in a["deliveries"] if d["url"] == receiver.url]
    dead = [d for a in rows for d in a["deliveries"] if d["url"] != receiver.url]
    assert all(d["delivered_at"] is not None and d["last_status"] == 204 for d in live)
    assert sum(d["attempts"] for d in live) == len(live) + 2  # the two refusals were retried
    assert all(d["delivered_at"] is None and d["attempts"] == 4 and "Connect" in d["last_error"] for d in dead)
    body = next(b["alarm"] for b in receiver.bodies if b["alarm"]["id"] == alarms[0]["id"])
    assert body["patient_id"] == ECG_PATIENT and body["n_windows"] >= 3


def test_acknowledge_keeps_who_and_when(served: Daemon) -> None:
    with served.client() as admin:
        clinician = admin.post("/v1/tokens", json={"role": "clinician", "name": "Dr Ada"}).json()["token"]
        device = admin.post("/v1/tokens", json={"role": "device", "name": "monitor"}).json()["token"]
    with served.client(clinician) as client:
        alarm = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT, "acknowledged": False}).json()["alarms"][0]
        before = time.time()
        answer = client.post(f"/v1/alarms/{alarm['id']}/acknowledge", json={})
        assert answer.status_code == 200
        acknowledged = answer.json()
        assert acknowledged["acknowledged_by"] == "Dr Ada" and acknowledged["acknowledged_at"] >= before - 1
        again = client.post(f"/v1/alarms/{alarm['id']}/acknowledge", json={"acknowledged_by": "Dr Bo"})
        assert again.status_code == 409 and "Dr Ada" in again.json()["detail"]
        open_ids = {a["id"] for a in client.get("/v1/alarms", params={"acknowledged": False}).json()["alarms"]}
        assert alarm["id"] not in open_ids
        assert client.post("/v1/alarms/999999/acknowledge").status_code == 404
    with served.client(device) as client:
        assert client.post(f"/v1/alarms/{alarm['id']}/acknowledge").status_code == 403
        assert client.get("/v1/alarms").status_code == 403


def test_a_seizure_crop_raises_a_seizure_alarm(served: Daemon) -> None:
    _post(served, replay.eeg_requests(require(SEIZURE_CROP), patient_id=EEG_PATIENT))
    with served.client() as client:
        windows = client.get("/v1/windows", params={"patient_id": EEG_PATIENT, "order": "time", "limit": 1000}).json()["windows"]
        alarms = client.get("/v1/alarms", params={"patient_id": EEG_PATIENT, "modality": "eeg"}).json()["alarms"]
    expected = _runs(windows, "seizure", 2)
    assert expected, "the base model detects this all-ictal crop"
    assert sorted((a["first_window_id"], a["n_windows"]) for a in alarms) == sorted((r[0], len(r)) for r in expected)
    assert {a["kind"] for a in alarms} == {"seizure"}


def test_an_alarm_lost_in_a_crash_after_its_segment_was_stored_is_raised_at_restart(tmp_path) -> None:
    """Windows commit before their alarm check: a kill -9 in between loses the check of that stream's
    newest segment only, and the restarted daemon repeats it, without counting anything twice."""
    daemon = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log")
    try:
        with daemon.client() as client:
            for body in replay.ecg_requests("203", patient_id=ECG_PATIENT, minutes=6.0):
                ids = {w["id"] for w in client.post_segment(body)}
                alarms = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT}).json()["alarms"]
                raised_here = [a for a in alarms if a["first_window_id"] in ids]
                if raised_here:
                    break
        assert raised_here, "record 203 holds ventricular runs in its first 6 minutes"
        before = sorted((a["first_window_id"], a["last_window_id"], a["n_windows"]) for a in alarms)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        # The crash came after the segment's windows committed and before its alarm was written.
        with sqlite3.connect(daemon.db) as conn:
            for alarm in raised_here:
                conn.execute("DELETE FROM alarm_deliveries WHERE alarm_id = ?", (alarm["id"],))
                conn.execute("DELETE FROM alarms WHERE id = ?", (alarm["id"],))
        daemon.start()
        with daemon.client() as client:
            after = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT}).json()["alarms"]
        assert sorted((a["first_window_id"], a["last_window_id"], a["n_windows"]) for a in after) == before
        # A second restart checks the same segment again and changes nothing.
        assert daemon.stop() == 0
        daemon.start()
        with daemon.client() as client:
            again = client.get("/v1/alarms", params={"patient_id": ECG_PATIENT}).json()["alarms"]
        assert sorted((a["id"], a["first_window_id"], a["last_window_id"], a["n_windows"]) for a in again) == sorted(
            (a["id"], a["first_window_id"], a["last_window_id"], a["n_windows"]) for a in after)
    finally:
        daemon.close()
