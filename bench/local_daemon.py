"""A real ``biofo serve`` in a child process on 127.0.0.1, for the benchmarks that drive one.

The daemon listens on loopback only, on a free port, with its own database and log file; ``restart``
reuses both, as a supervisor restarting a crashed service would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class LocalDaemon:
    def __init__(self, db: Path, log: Path, env: dict[str, str] | None = None, start_timeout: float = 120.0):
        self.db = Path(db)
        self.log = Path(log)
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
            "BIOFO_ADMIN_TOKEN": ADMIN_TOKEN,
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

    def client(self, token: str = ADMIN_TOKEN, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def create_token(self, role: str) -> str:
        with self.client() as admin:
            response = admin.post("/v1/tokens", json={"role": role, "name": f"bench {role}"})
        response.raise_for_status()
        return str(response.json()["token"])

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalDaemon:
        return self.start()

    def close(self) -> None:
        """Kill the process if it still runs (cleanup after a failure; a clean end is ``stop``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __exit__(self, *exc: object) -> None:
        self.close()
