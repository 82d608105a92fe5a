"""WAL checkpoints run on their own thread: commits never copy the log into the database, and the
log stays bounded because every pass frees it for reuse. Real CHB-MIT windows (about 47 kB each)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from app.store import Store, WindowRecord
from app.wal_checkpoints import WalCheckpointer
from signals import replay
from signals.chbmit import read_edf
from signals.datafiles import require
from signals.eeg_features import EegStream

CROP = "chbmit/crops/after60/chb01_21_le.edf"


def _records() -> tuple[float, list[str], list[WindowRecord]]:
    recording = read_edf(require(CROP))
    windows = EegStream().push(recording.samples_uv, recording.fs, list(recording.channels), 0.0).windows
    records = [WindowRecord(w.offset_s, w.samples, None, w.features, "background",
                            {"background": 1.0, "seizure": 0.0}, 0, 0.0) for w in windows]
    return recording.fs, list(recording.labels), records


def _autocheckpoint(store: Store) -> int:
    return int(store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def _wal_bytes(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


def test_commits_leave_the_wal_to_the_checkpointer_which_keeps_it_bounded(tmp_path) -> None:
    path = tmp_path / "biofo.db"
    store = Store(path)
    model = store.create_model("eeg", "chb01", "test-eeg", "biofo", b"checkpoint", 0)
    fs, channels, records = _records()
    wal = WalCheckpointer(store, every_s=3600.0)  # passes only when the test runs one
    assert _autocheckpoint(store) == Store.WAL_AUTOCHECKPOINT_PAGES
    wal.start()
    assert _autocheckpoint(store) == 0

    segment_s = records[-1].offset_s + 2.0
    for k in range(5):  # about 11 MB: over twice the 1000 pages a commit would checkpoint at
        store.insert_windows(model, fs, channels, k * segment_s, records, {}, None)
    page = int(store.conn.execute("PRAGMA page_size").fetchone()[0])
    grown = _wal_bytes(path)
    assert grown > 2 * Store.WAL_AUTOCHECKPOINT_PAGES * page, "a commit checkpointed the WAL"

    first = wal.run_once()
    assert first.passes == 1 and first.failures == 0
    assert first.frames_checkpointed == first.frames_in_log > 2 * Store.WAL_AUTOCHECKPOINT_PAGES

    # After a complete pass the next commit writes the log from its start: the file does not grow.
    store.insert_windows(model, fs, channels, 5 * segment_s, records, {}, None)
    assert _wal_bytes(path) == grown
    second = wal.run_once()
    assert second.frames_checkpointed == second.frames_in_log < first.frames_in_log / 3

    reader = Store(path)
    assert reader.stats()["windows"] == 6 * len(records)
    reader.close()
    wal.stop()
    assert _autocheckpoint(store) == Store.WAL_AUTOCHECKPOINT_PAGES
    store.close()


def test_the_daemon_checkpoints_on_its_own_thread(tmp_path) -> None:
    admin = "wal-admin-token-0123456789abcdef"
    settings = Settings(db=tmp_path / "biofo.db", admin_token=admin, workers=0)
    with TestClient(create_app(settings), base_url="http://127.0.0.1",
                    headers={"Authorization": f"Bearer {admin}"}) as client:
        wal = client.app.state.wal
        assert _autocheckpoint(client.app.state.store) == 0
        for body in replay.eeg_requests(require(CROP), patient_id="chb01"):
            assert client.post("/v1/windows", json=body).status_code == 201
        deadline = time.monotonic() + 10.0
        while wal.progress.frames_in_log == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wal.progress.passes >= 1 and wal.progress.failures == 0
        assert wal.progress.frames_in_log > 0
