"""The binary segment body: real MIT-BIH and CHB-MIT segments give the answers their JSON gives,
count as the same segment for duplicate detection, and every malformed body is a 4xx that writes
nothing. One daemon serves the module."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import wfdb

from app.client import encode_segment
from signals.datafiles import require
from signals.mitbih import record_path
from signals.replay import ecg_requests, eeg_requests
from tests.conftest import Daemon, start_daemon

RECORD = "100"
SEIZURE_CROP = "chbmit/crops/seizure/chb01_03_ti-seizure.edf"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("binary-body")
    running = start_daemon(folder / "biofo.db", folder / "daemon.log")
    yield running
    running.stop(signal.SIGKILL)


def adc(record: str) -> tuple[list[float], list[float]]:
    """The record's own ADC gain and baseline per lead, from its WFDB header."""
    header = wfdb.rdheader(record_path(record))
    assert header.sig_name[0] == "MLII"  # the order ecg_requests sends the leads in
    return [float(g) for g in header.adc_gain], [float(b) for b in header.baseline]


def ecg_segments(patient_id: str, count: int = 2) -> list[dict]:
    return list(ecg_requests(RECORD, patient_id=patient_id, minutes=count * 10 / 60))


def answers(windows: list[dict]) -> list[tuple]:
    return [
        (w["offset_s"], w["predicted"], w["probabilities"], w["model_version"]) for w in windows
    ]


def test_mitbih_int16_gives_the_json_answers_and_samples(daemon: Daemon) -> None:
    gain, baseline = adc(RECORD)
    with daemon.client() as client:
        for as_json, as_binary in zip(ecg_segments("bin-ecg-json"), ecg_segments("bin-ecg-int16")):
            json_windows = client.post_segment(as_json)
            content, headers = encode_segment(as_binary, "int16", gain, baseline)
            assert len(content) == 2 * 2 * 3600  # 10 s x 360 Hz x 2 leads x 2 bytes
            binary_windows = client.post_encoded(content, headers)
            assert json_windows and answers(binary_windows) == answers(json_windows)
        # int16 at the record's own gain is the record's own ADC values: the samples stored are equal.
        for got, expected in zip(binary_windows[:3], json_windows[:3]):
            assert (
                client.get(f"/v1/windows/{got['id']}").json()["samples"]
                == client.get(f"/v1/windows/{expected['id']}").json()["samples"]
            )


def test_chbmit_float32_gives_the_json_predictions(daemon: Daemon) -> None:
    edf = require(SEIZURE_CROP)
    with daemon.client() as client:
        pairs = zip(
            eeg_requests(edf, patient_id="bin-eeg-json", minutes=4 / 60),
            eeg_requests(edf, patient_id="bin-eeg-f32", minutes=4 / 60),
        )
        for as_json, as_binary in pairs:
            json_windows = client.post_segment(as_json)
            binary_windows = client.post_segment(as_binary, "float32")
            assert [w["predicted"] for w in binary_windows] == [
                w["predicted"] for w in json_windows
            ]
            for got, expected in zip(binary_windows, json_windows):
                assert np.allclose(
                    list(got["probabilities"].values()),
                    list(expected["probabilities"].values()),
                    atol=1e-5,
                )
        assert json_windows


def test_a_segment_sent_as_json_then_binary_is_a_duplicate(daemon: Daemon) -> None:
    first = ecg_segments("bin-dup", count=1)[0]
    with daemon.client() as client:
        accepted = client.post("/v1/windows", json=first)
        assert accepted.status_code == 201
        content, headers = encode_segment(first, "float32")
        again = client.post("/v1/windows", content=content, headers=headers)
        assert again.status_code == 200
        assert again.json()["windows"] == accepted.json()["windows"]
        stored = client.get("/v1/windows", params={"patient_id": "bin-dup", "limit": 1000}).json()
        assert len(stored["windows"]) == len(accepted.json()["windows"])


def window_count(client: httpx.Client) -> int:
    return len(
        client.get("/v1/windows", params={"order": "recent", "limit": 1000}).json()["windows"]
    )


def _bodies() -> dict[str, tuple[bytes, dict[str, str], int, str]]:
    """Malformed binary segments: (content, headers, status, a field the answer must name)."""
    body = ecg_segments("bin-bad", count=1)[0]
    good, headers = encode_segment(body, "float32")
    meta = json.loads(headers["X-Biofo-Segment"])

    def header(**changes: object) -> dict[str, str]:
        return {**headers, "X-Biofo-Segment": json.dumps({**meta, **changes})}

    nan = bytearray(good)
    nan[8:12] = np.float32(np.nan).tobytes()
    without = {name: value for name, value in headers.items() if name != "X-Biofo-Segment"}
    return {
        "odd length": (good[:-2], headers, 422, "body"),
        "empty": (b"\x00", headers, 422, "body"),
        "NaN": (bytes(nan), headers, 422, "samples"),
        "unknown dtype": (good, header(dtype="int32"), 422, "dtype"),
        "no header": (good, without, 422, "x-biofo-segment"),
        "header not JSON": (
            good,
            {**headers, "X-Biofo-Segment": "{patient"},
            422,
            "x-biofo-segment",
        ),
        "int16 without gain": (good, header(dtype="int16"), 422, "gain"),
        "gain per channel": (good, header(dtype="int16", gain=[200.0]), 422, "gain"),
        "gain with float32": (good, header(gain=[200.0, 200.0]), 422, "gain"),
        "missing fs": (
            good,
            {
                **headers,
                "X-Biofo-Segment": json.dumps({k: v for k, v in meta.items() if k != "fs"}),
            },
            422,
            "fs",
        ),
        "r_peaks past the end": (good, header(r_peaks=[3600]), 422, "r_peaks"),
        "samples field in header": (good, header(samples=[[0.0]]), 422, "samples"),
        "wrong media type": (
            good,
            {**headers, "Content-Type": "application/x-int16"},
            415,
            "content-type",
        ),
    }


@pytest.mark.parametrize("case", list(_bodies()))
def test_malformed_binary_is_refused_and_writes_nothing(daemon: Daemon, case: str) -> None:
    content, headers, status, field = _bodies()[case]
    with daemon.client() as client:
        before = window_count(client)
        response = client.post("/v1/windows", content=content, headers=headers)
        assert response.status_code == status, response.text
        assert field in json.dumps(response.json()["detail"]), response.text
        assert window_count(client) == before


def test_openapi_documents_both_bodies(daemon: Daemon) -> None:
    document = httpx.get(f"{daemon.url}/openapi.json").json()
    operation = document["paths"]["/v1/windows"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "application/octet-stream"}
    assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/WindowsIn"
    schemas = document["components"]["schemas"]
    assert "samples" in schemas["WindowsIn"]["properties"]
    assert {"dtype", "gain", "baseline", "fs", "channels"} <= set(
        schemas["BinarySegmentMeta"]["properties"]
    )
    assert any(p["name"] == "X-Biofo-Segment" for p in operation["parameters"])
