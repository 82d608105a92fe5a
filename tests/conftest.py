"""Shared fixtures: a real daemon (uvicorn on 127.0.0.1, temporary database) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    url: str
    db: Path
    process: subprocess.Popen
    log: Path
    env: dict[str, str]

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(db: Path, log: Path, extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> Daemon:
    port = free_port()
    env = {
        **os.environ,
        "BIOFO_DB": str(db),
        "BIOFO_PORT": str(port),
        "BIOFO_HOST": "127.0.0.1",
        "BIOFO_ADMIN_TOKEN": ADMIN_TOKEN,
        "BIOFO_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    handle = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stdout=handle, stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return Daemon(url, db, process, log, env)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"daemon did not answer /healthz within {timeout} s:\n{log.read_text(errors='replace')}")


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)
