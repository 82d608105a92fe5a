"""Shared fixtures: a real daemon (uvicorn on 127.0.0.1, temporary database) in a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from app.client import LocalDaemon

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

Daemon = LocalDaemon

# The page's browser tests drive Debian's Chromium; Playwright's own browser download cannot work here.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def start_daemon(db: Path, log: Path, extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> Daemon:
    return LocalDaemon(db, log, extra_env, admin_token=ADMIN_TOKEN, start_timeout=timeout).start()


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
