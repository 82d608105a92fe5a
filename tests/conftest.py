"""Shared fixtures: a real daemon (uvicorn on 127.0.0.1, temporary database) in a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.client import LocalDaemon

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

Daemon = LocalDaemon


def start_daemon(db: Path, log: Path, extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> Daemon:
    return LocalDaemon(db, log, extra_env, admin_token=ADMIN_TOKEN, start_timeout=timeout).start()


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log")
    try:
        yield running
    finally:
        running.close()
