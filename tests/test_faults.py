"""Storage faults: a full filesystem, a read-only database, a second daemon on the same database."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store import Store
from signals.replay import ecg_reference, ecg_requests
from tests.conftest import Daemon, start_daemon

REPO = Path(__file__).resolve().parents[1]
DISK_MIB = 16
PATIENT = "full-disk"
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1  # <linux/prctl.h>, <linux/capability.h>


def mount_small_disk(folder: Path, scratch: Path) -> None:
    """A DISK_MIB filesystem at ``folder``: tmpfs, else an ext4 loop file. Needs root, as in CI."""
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(folder)],
                           capture_output=True, text=True, check=False)
    if tmpfs.returncode == 0:
        return
    image = scratch / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(DISK_MIB * 1024 * 1024)
    steps = [["mkfs.ext4", "-q", str(image)], ["mount", "-o", "loop", str(image), str(folder)]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot make a small filesystem for the full-disk test (run as root): tmpfs: "
                        f"{tmpfs.stderr.strip()}; {' '.join(step)}: {done.stderr.strip()}")


def fill(folder: Path) -> Path:
    """Write a file until the filesystem has no block left; return it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for block in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    handle.write(b"\xff" * block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    scratch = tmp_path_factory.mktemp("small-disk")
    disk = scratch / "disk"
    disk.mkdir()
    mount_small_disk(disk, scratch)
    try:
        daemon = start_daemon(disk / "biofo.db", scratch / "daemon.log")
        yield daemon
        daemon.stop(signal.SIGKILL)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def spawn_serve(db: Path, **popen: object) -> subprocess.Popen:
    """``biofo serve`` on ``db``, expected to refuse to start."""
    env = {**os.environ, "BIOFO_DB": str(db), "BIOFO_PORT": "0", "BIOFO_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def without_dac_override() -> None:
    """Run the child as root that obeys file modes, as a service user does: without CAP_DAC_OVERRIDE
    in its bounding set, root's exec no longer gains the capability to write a 0444 file."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def refusal(process: subprocess.Popen) -> str:
    """The one line a daemon that refused to start printed; fails on anything else."""
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def test_a_second_daemon_on_the_same_database_refuses_to_start(small_disk: Daemon) -> None:
    stderr = refusal(spawn_serve(small_disk.db))
    assert f"biofo: cannot start: another biofo daemon is serving {small_disk.db}" in stderr
    with small_disk.client() as client:
        assert client.get("/healthz").status_code == 200


def test_full_disk_answers_503_writes_nothing_and_recovers(small_disk: Daemon) -> None:
    bodies = list(ecg_requests("100", minutes=6.0, patient_id=PATIENT))
    reference = ecg_reference("100")
    with small_disk.client() as client:
        for body in bodies[:3]:
            assert client.post("/v1/windows", json=body).status_code == 201
        filler = fill(small_disk.db.parent)
        refused = None
        for index, body in enumerate(bodies[3:], start=3):
            response = client.post("/v1/windows", json=body)
            if response.status_code != 201:
                refused = index
                break
        assert refused is not None, "the daemon kept writing on a full filesystem"
        assert response.status_code == 503, response.text
        assert "storage unavailable, nothing was written" in response.json()["detail"]
        assert "full" in response.json()["detail"]
        assert response.headers["Retry-After"] == "5"
        # Reads keep working, and nothing of the refused segment was stored.
        stored = client.get("/v1/windows", params={"patient_id": PATIENT, "order": "recent", "limit": 1000})
        assert stored.status_code == 200
        assert stored.json()["windows"], "earlier windows must still be there"
        assert max(w["offset_s"] for w in stored.json()["windows"]) < bodies[refused]["start"]
        with sqlite3.connect(small_disk.db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        filler.unlink()
        # The stream's time line did not move: the refused segment is new to it, not a repeat (200) or
        # a step back (409).
        retried = client.post("/v1/windows", json=bodies[refused])
        assert retried.status_code == 201, retried.text
        windows = retried.json()["windows"]
        labels = [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]), "labeled_by": "dr disk"}
                  for w in windows if reference.label_at(w["offset_s"])]
        accepted = client.post("/v1/labels", json={"labels": labels})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 60
        while client.get(f"/v1/models/ecg/{PATIENT}").json()["applied_seq"] < accepted.json()["update_seq"]:
            assert time.monotonic() < deadline, "labels not applied after the disk was freed"
            time.sleep(0.05)
    assert small_disk.stop(signal.SIGTERM) == 0
    with sqlite3.connect(small_disk.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        starts = [s for (s,) in conn.execute("SELECT DISTINCT start FROM windows ORDER BY start")]
        reasons = [r for (r,) in conn.execute("SELECT reason FROM checkpoints ORDER BY id")]
    assert starts == [body["start"] for body in bodies[:refused + 1]]
    assert reasons[-1] == "shutdown"


def test_read_only_database_is_a_clear_error_at_start(tmp_path: Path) -> None:
    """A read-only database file (to a service that obeys file modes) and a read-only filesystem (to
    root too): exit status 2 and one line naming the file, no traceback."""
    for name in ("file", "source", "mounted"):
        (tmp_path / name).mkdir()
    read_only_file = tmp_path / "file" / "biofo.db"
    Store(read_only_file).close()
    read_only_file.chmod(0o444)
    Store(tmp_path / "source" / "biofo.db").close()
    mounted = tmp_path / "mounted" / "biofo.db"
    subprocess.run(["mount", "--bind", str(tmp_path / "source"), str(mounted.parent)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted.parent)], check=True)
        bound_by_modes = spawn_serve(read_only_file, preexec_fn=without_dac_override)
        on_read_only_fs = spawn_serve(mounted)
        assert (f"biofo: cannot start: cannot open database {read_only_file} for writing: "
                "attempt to write a readonly database") in refusal(bound_by_modes)
        assert (f"biofo: cannot start: cannot create {mounted}.lock beside the database {mounted}: "
                "Read-only file system") in refusal(on_read_only_fs)
    finally:
        subprocess.run(["umount", str(mounted.parent)], check=False)
