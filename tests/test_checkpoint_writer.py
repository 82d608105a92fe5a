"""Periodic checkpoints written off the update path: order kept, flush waits, a refused write is survivable."""

from __future__ import annotations

import logging
import threading

import pytest

from app.checkpoint_writer import CheckpointWriter
from app.store import NewCheckpoint, Store, StoreUnavailable


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "biofo.db")
    yield s
    s.close()


def test_flush_returns_once_every_snapshot_is_a_row_in_submission_order(store) -> None:
    model = store.create_model("ecg", "bed-1", "base", "biofo", b"fork", 0)
    writer = CheckpointWriter(store)
    for version in (50, 100, 150):
        writer.submit(model.id, NewCheckpoint(version, version * 2, "periodic", "periodic",
                                                bytes([version]) * 1000))
    writer.flush()
    rows = store.checkpoints(model.id)
    assert [(r["version"], r["applied_seq"], r["kind"], r["reason"]) for r in rows] == [
        (150, 300, "periodic", "periodic"), (100, 200, "periodic", "periodic"), (50, 100, "periodic", "periodic"),
        (0, 0, "fork", "fork"),
    ]
    assert store.checkpoint_blob(rows[0]["id"]) == bytes([150]) * 1000
    writer.close()


def test_a_refused_write_is_logged_and_neither_blocks_flush_nor_stops_the_writer(store, monkeypatch, caplog) -> None:
    model = store.create_model("ecg", "bed-2", "base", "biofo", b"fork", 0)
    real = store.insert_checkpoint
    calls = []

    def full_disk_once(*args):
        calls.append(args[1].version)
        if len(calls) == 1:
            raise StoreUnavailable("database write failed: database or disk is full")
        return real(*args)

    monkeypatch.setattr(store, "insert_checkpoint", full_disk_once)
    writer = CheckpointWriter(store)
    with caplog.at_level(logging.ERROR, logger="biofo.checkpoints"):
        writer.submit(model.id, NewCheckpoint(10, 10, "periodic", "periodic", b"lost"))
        writer.submit(model.id, NewCheckpoint(20, 20, "periodic", "periodic", b"kept"))
        done = threading.Event()
        threading.Thread(target=lambda: (writer.flush(), done.set()), daemon=True).start()
        assert done.wait(10.0)
    assert calls == [10, 20]
    assert [r["version"] for r in store.checkpoints(model.id)] == [20, 0]
    assert "version 10 not written" in caplog.text and "disk is full" in caplog.text
    writer.close()
