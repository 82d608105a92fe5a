"""The bad-input corpus beyond tests/test_daemon.py's windows cases: sizes, encodings, media types,
labels, and the coercions an API fuzzer found. Each is a 4xx naming the field, and a query afterwards
shows that nothing was written."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest

from signals.replay import ecg_reference, ecg_requests
from tests.conftest import ADMIN_TOKEN, Daemon, start_daemon

PATIENT = "bad-input"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, list[dict]]]:
    """A daemon holding one real segment of record 100; yields it and that segment's windows."""
    folder = tmp_path_factory.mktemp("bad-input")
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log")
    with daemon.client() as client:
        response = client.post("/v1/windows", json=next(ecg_requests("100", patient_id=PATIENT)))
    assert response.status_code == 201
    yield daemon, response.json()["windows"]
    daemon.stop(signal.SIGKILL)


def snapshot(client: httpx.Client) -> tuple[list[int], list[int], list[dict]]:
    """Window ids, labelled window ids, models: what a partial write would change."""
    windows = client.get("/v1/windows", params={"order": "recent", "limit": 1000}).json()["windows"]
    labelled = client.get("/v1/windows", params={"labeled": "true", "limit": 1000}).json()["windows"]
    models = client.get("/v1/models").json()["models"]
    return [w["id"] for w in windows], [w["id"] for w in labelled], models


def segment(**changes: object) -> dict:
    body = next(ecg_requests("100", segment_s=2.0, patient_id="bad-new"))
    body.update(changes)
    return body


def send(client: httpx.Client, path: str, body: object) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def check_refused(served: tuple[Daemon, list[dict]], request: Callable[[httpx.Client], httpx.Response],
                  status: int, field: str) -> None:
    daemon, _ = served
    with daemon.client() as client:
        before = snapshot(client)
        response = request(client)
        assert response.status_code == status, response.text
        assert field in json.dumps(response.json()["detail"])
        assert snapshot(client) == before


def test_ten_million_samples_are_refused_naming_samples(served) -> None:
    # Compact JSON keeps the body under the byte limit, so the sample limit is what refuses it.
    body = json.dumps(segment(samples=[[0] * 5_000_000] * 2)).encode()
    assert len(body) < 32 * 1024 * 1024
    check_refused(served, lambda c: c.post("/v1/windows", content=body, headers={"Content-Type": "application/json"}),
                  422, "samples")


def test_oversized_body_is_refused_before_it_is_read(served) -> None:
    """A declared 33 MiB body, of which not one byte is sent: refused on the header alone."""
    daemon, _ = served

    def oversized(client: httpx.Client) -> httpx.Response:
        host, port = daemon.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"POST /v1/windows HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {33 * 1024 * 1024}\r\n\r\n".encode()
            )
            raw = b""
            while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < 10:
                raw += sock.recv(65536)
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        return httpx.Response(status, content=body[: body.rindex(b"}") + 1])

    check_refused(served, oversized, 413, "body")


@pytest.mark.parametrize(("content", "status", "field"), [
    (b"{not json", 422, "body"),
    (b"\x80\x81 garbage", 400, "body"),  # not even UTF-8: the body cannot be decoded
    (b"[1, 2, 3]", 422, "body"),
    ((b'{"patient_id": "x", "modality": "ecg", "fs": 360, "channels": ["MLII"], "start": 0, '
      b'"samples": [[1, 2, NaN]]}'), 422, "samples"),
])
def test_non_json_is_refused(served, content: bytes, status: int, field: str) -> None:
    check_refused(served, lambda c: c.post("/v1/windows", content=content, headers={
        "Content-Type": "application/json"}), status, field)


@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_refused(served, media_type: str | None) -> None:
    headers = {"Content-Type": media_type} if media_type else {}
    check_refused(served, lambda c: c.post("/v1/windows", content=json.dumps(segment()), headers=headers),
                  415, "content-type")


@pytest.mark.parametrize(("changes", "field"), [
    ({"patient_id": "bed-7\n"}, "patient_id"),
    ({"patient_id": "bed/7"}, "patient_id"),
    ({"patient_id": "bed-7%00"}, "patient_id"),
    ({"channels": ["MLII\n", "V5"]}, "channels"),
    ({"r_peaks": [False]}, "r_peaks"),
    ({"fs": "360"}, "fs"),
    ({"fs": 50.0}, "fs"),
    ({"modality": "ECG"}, "modality"),
    ({"units": "mmHg"}, "units"),
])
def test_windows_refused_naming_the_field(served, changes: dict, field: str) -> None:
    check_refused(served, lambda c: send(c, "/v1/windows", segment(**changes)), 422, field)


def labels_of(windows: list[dict], count: int = 3) -> list[dict]:
    reference = ecg_reference("100")
    return [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]) or "N", "labeled_by": "dr bad"}
            for w in windows[:count]]


def test_label_for_an_unknown_window_writes_none_of_the_batch(served) -> None:
    _, windows = served
    batch = [*labels_of(windows), {"window_id": 10 ** 9, "label": "N", "labeled_by": "dr bad"}]
    check_refused(served, lambda c: send(c, "/v1/labels", {"labels": batch}), 404, '"labels", 3, "window_id"')


@pytest.mark.parametrize("label", ["seizure", "X", "n", ""])
def test_label_outside_the_vocabulary_writes_none_of_the_batch(served, label: str) -> None:
    _, windows = served
    batch = [*labels_of(windows), {"window_id": windows[3]["id"], "label": label, "labeled_by": "dr bad"}]
    check_refused(served, lambda c: send(c, "/v1/labels", {"labels": batch}), 422, '"labels", 3, "label"')


def test_duplicate_labels_in_one_request_are_refused(served) -> None:
    _, windows = served
    batch = [*labels_of(windows), {**labels_of(windows)[1], "label": "V"}]
    check_refused(served, lambda c: send(c, "/v1/labels", {"labels": batch}), 422, '"labels", 3, "window_id"')


@pytest.mark.parametrize(("body", "field"), [
    ({"labels": []}, "labels"),
    ({"labels": [{"window_id": 2 ** 63, "label": "N", "labeled_by": "x"}]}, "window_id"),
    ({"labels": [{"window_id": 1.0, "label": "N", "labeled_by": "x"}]}, "window_id"),
    ({"labels": [{"window_id": "1", "label": "N", "labeled_by": "x"}]}, "window_id"),
    ({"labels": [{"window_id": 1, "label": "N"}]}, "labeled_by"),
])
def test_malformed_labels_are_refused(served, body: dict, field: str) -> None:
    check_refused(served, lambda c: send(c, "/v1/labels", body), 422, field)


def test_rollback_and_ids_refuse_coercion_and_overflow(served) -> None:
    check_refused(served, lambda c: send(c, f"/v1/models/ecg/{PATIENT}/rollback",
                                         {"version": 0, "replay_later_labels": 0}), 422, "replay_later_labels")
    check_refused(served, lambda c: c.get(f"/v1/windows/{2 ** 64}"), 422, "window_id")
    check_refused(served, lambda c: c.post(f"/v1/labels/{2 ** 64}/undo"), 422, "label_id")
    check_refused(served, lambda c: c.get("/v1/windows", params={"offset": 2 ** 64}), 422, "offset")
