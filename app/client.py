"""A small typed client for API v1, and a daemon on loopback to point it at.

``biofo replay``, the benchmarks and the tests all speak to the daemon through this module, the way a
bedside device or a clinician's tool would: one place knows the paths, the expected answers and how
to wait until the labels sent have been learned.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.schemas import BINARY_DTYPES, BINARY_SEGMENT_TYPE, SEGMENT_HEADER

REPO = Path(__file__).resolve().parents[1]
# How ``post_segment`` sends a segment: a JSON body, or the binary body with float32 samples.
ENCODINGS = ("json", "float32")
# The admin token a LocalDaemon is first started with, unless the caller names another.
LOCAL_ADMIN_TOKEN = "local-admin-token-0123456789abcdef"


class ApiError(RuntimeError):
    """An answer other than the one the call expects, with the daemon's own ``detail``."""

    def __init__(self, response: httpx.Response):
        self.status_code = response.status_code
        try:
            self.detail: Any = response.json().get("detail")
        except ValueError:
            self.detail = response.text[:500]
        request = response.request
        super().__init__(f"{request.method} {request.url.path} answered {self.status_code}: {self.detail}")


@dataclass(frozen=True)
class Accepted:
    """``POST /v1/labels``: how many labels were stored, and the sequence number of the last one."""

    accepted: int
    update_seq: int


def encode_segment(
    body: dict[str, Any], dtype: str = "float32", gain: list[float] | None = None,
    baseline: list[float] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A ``POST /v1/windows`` JSON body as the binary body and its headers.

    ``float32`` sends the physical samples as they are (rounded to float32). ``int16`` sends ADC
    units: each channel's samples times ``gain`` plus ``baseline``, which must give integers in
    int16's range (they do for a recording's own ADC gain and baseline, as in its WFDB header).
    """
    samples = np.asarray(body["samples"], dtype=np.float64)
    meta = {key: value for key, value in body.items() if key != "samples"}
    meta["dtype"] = dtype
    if dtype == "int16":
        if gain is None:
            raise ValueError("int16 needs each channel's gain")
        offset = np.zeros(len(samples)) if baseline is None else np.asarray(baseline, dtype=np.float64)
        scaled = samples * np.asarray(gain, dtype=np.float64)[:, None] + offset[:, None]
        digital = np.round(scaled)
        info = np.iinfo(np.int16)
        if np.any(digital < info.min) or np.any(digital > info.max):
            raise ValueError("samples exceed int16's range at this gain and baseline")
        samples = digital
        meta["gain"] = [float(g) for g in gain]
        if baseline is not None:
            meta["baseline"] = [float(b) for b in baseline]
    content = np.ascontiguousarray(samples.T, dtype=BINARY_DTYPES[dtype]).tobytes()
    headers = {"Content-Type": BINARY_SEGMENT_TYPE, SEGMENT_HEADER: json.dumps(meta, separators=(",", ":"))}
    return content, headers


class V1Calls:
    """The v1 calls, on any ``httpx.Client`` (a ``Client``, or FastAPI's in-process ``TestClient``).

    Each call checks the status the API promises and raises ``ApiError`` otherwise; the plain
    ``get``/``post`` stay available for callers that check refusals themselves.
    """

    get: Any
    post: Any
    encoding: str = "json"

    def post_segment(self, body: dict[str, Any], encoding: str | None = None) -> list[dict[str, Any]]:
        """One device segment, as JSON or binary (``ENCODINGS``; the client's ``encoding`` by
        default); its windows (a repeat of the last segment answers 200, same windows)."""
        encoding = encoding or self.encoding
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
        if encoding == "json":
            return self.post_encoded(json.dumps(body).encode(), {"Content-Type": "application/json"})
        return self.post_encoded(*encode_segment(body, encoding))

    def post_encoded(self, content: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
        """One segment already encoded (``encode_segment``, or JSON bytes); its windows."""
        return _expect(self.post("/v1/windows", content=content, headers=headers), 200, 201).json()["windows"]

    def post_labels(self, labels: list[dict[str, Any]]) -> Accepted:
        body = _expect(self.post("/v1/labels", json={"labels": labels}), 202).json()
        return Accepted(int(body["accepted"]), int(body["update_seq"]))

    def model(self, modality: str, patient_id: str) -> dict[str, Any]:
        return _expect(self.get(f"/v1/models/{modality}/{patient_id}"), 200).json()

    def models(self) -> list[dict[str, Any]]:
        return _expect(self.get("/v1/models"), 200).json()["models"]

    def create_token(self, role: str, name: str) -> str:
        return str(_expect(self.post("/v1/tokens", json={"role": role, "name": name}), 201).json()["token"])

    def wait_applied(self, modality: str, patient_id: str, seq: int, timeout: float = 120.0) -> dict[str, Any]:
        """The model once it has applied every label up to sequence number ``seq``."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.model(modality, patient_id)
            if model["applied_seq"] >= seq:
                return model
            if time.monotonic() > deadline:
                raise TimeoutError(f"labels up to {seq} not applied within {timeout} s: {model}")
            time.sleep(0.05)

    def wait_learned(self, modality: str, patient_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The model once no label of it is pending, for callers that did not see every label's answer
        (a browser labelled, or a daemon was killed before it answered)."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.model(modality, patient_id)
            if model["labels_pending"] == 0:
                return model
            if time.monotonic() > deadline:
                raise TimeoutError(f"labels still pending after {timeout} s: {model}")
            time.sleep(0.05)


class Client(V1Calls, httpx.Client):
    """API v1 on the daemon's URL with a bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0, encoding: str = "json"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(base_url=url, headers=headers, timeout=timeout)
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
        self.encoding = encoding


def _expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise ApiError(response)
    return response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalDaemon:
    """``biofo serve`` in a child process on 127.0.0.1, on a free port, with its own database and log.

    ``start`` again after a stop or a kill reuses both, as a supervisor restarting a crashed service
    would.
    """

    def __init__(self, db: Path, log: Path, env: dict[str, str] | None = None,
                 admin_token: str = LOCAL_ADMIN_TOKEN, start_timeout: float = 120.0):
        self.db = Path(db)
        self.log = Path(log)
        self.admin_token = admin_token
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> LocalDaemon:
        port = free_port()
        env = {
            **os.environ,
            "BIOFO_DB": str(self.db),
            "BIOFO_HOST": "127.0.0.1",
            "BIOFO_PORT": str(port),
            "BIOFO_ADMIN_TOKEN": self.admin_token,
            "BIOFO_LOG_LEVEL": "warning",
            "OMP_NUM_THREADS": "1",
            **self.extra_env,
        }
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"], env=env, cwd=REPO, stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}; log {self.log}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    self.starts += 1
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"daemon did not answer /healthz within {self.start_timeout} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        """Send ``sig`` and wait; returns the exit status (negative: killed by that signal)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def client(self, token: str | None = None, timeout: float = 60.0) -> Client:
        """A client with ``token`` (the admin token by default)."""
        return Client(self.url, token or self.admin_token, timeout)

    def create_token(self, role: str) -> str:
        with self.client() as admin:
            return admin.create_token(role, f"local {role}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def close(self) -> None:
        """Kill the process if it still runs (cleanup after a failure; a clean end is ``stop``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> LocalDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
