"""The SQLite store: schema, tokens, and all-or-nothing writes."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.migrations import MIGRATIONS, migrate
from app.store import EnergyRecord, Store, WindowRecord, margin_of


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "biofo.db")
    yield s
    s.close()


def _window(probabilities: dict) -> WindowRecord:
    return WindowRecord(
        offset_s=1.0, samples=np.zeros((2, 8), np.float32), marker=3,
        features=np.arange(4, dtype=np.float32), predicted="N", probabilities=probabilities,
        model_version=0, latency_ms=0.1,
    )


def test_migrations_are_numbered_and_idempotent(tmp_path):
    connection = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(connection) == len(MIGRATIONS)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert migrate(connection) == len(MIGRATIONS)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"windows", "predictions", "labels", "updates", "checkpoints", "energy", "tokens"} <= tables


def test_migration_3_moves_update_labels_into_a_table_and_checkpoint_kinds_into_a_column(tmp_path):
    connection = sqlite3.connect(tmp_path / "v2.db", isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    connection.executescript("""
        INSERT INTO models VALUES (1, 'ecg', 'bed-1', 'base', 'biofo', 0);
        INSERT INTO windows VALUES (1, 1, 'bed-1', 'ecg', 360, '[]', 0, 0.5, 1, 1, x'00', NULL, x'00', 0);
        INSERT INTO labels VALUES (7, 1, 1, 'V', 'dr', NULL, 0), (8, 1, 1, 'N', 'dr', NULL, 0);
        INSERT INTO updates VALUES (1, 1, 0, 1, '[7]', '[]', 0, 0, 0, 'estimate', 0),
                                   (2, 1, 1, 2, '[8]', '[]', 0, 0, 0, 'estimate', 0);
        INSERT INTO checkpoints VALUES (1, 1, 0, 0, 'fork', x'00', '', 0), (2, 1, 2, 8, 'periodic', x'00', '', 0),
                                       (3, 1, 3, 8, 'rollback to 0', x'00', '', 0),
                                       (4, 1, 4, 8, 'undo label 8', x'00', '', 0), (5, 1, 4, 8, 'shutdown', x'00', '', 0);
    """)
    assert migrate(connection) == len(MIGRATIONS)
    assert connection.execute("SELECT update_id, label_id FROM update_labels ORDER BY update_id").fetchall() == [
        (1, 7), (2, 8)
    ]
    assert "label_ids" not in {row[1] for row in connection.execute("PRAGMA table_info(updates)")}
    kinds = connection.execute("SELECT kind, applied_seq FROM checkpoints ORDER BY id").fetchall()
    assert kinds == [("fork", 0), ("periodic", 8), ("rollback", 8), ("undo", 8), ("shutdown", 8)]
    assert connection.execute("SELECT id, version_after FROM updates ORDER BY id").fetchall() == [(1, 1), (2, 2)]


def test_wal_mode_and_full_sync(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_tokens_are_stored_hashed(store, tmp_path):
    plaintext = store.create_token("ward-3 monitor", "device")
    found = store.find_token(plaintext)
    assert found is not None and found.role == "device"
    assert store.find_token(plaintext + "x") is None
    store.conn.execute("PRAGMA wal_checkpoint(FULL)")
    raw = (tmp_path / "biofo.db").read_bytes()
    assert plaintext.encode() not in raw
    assert all(plaintext not in str(row) for row in store.db["tokens"].rows)


def test_window_batch_is_all_or_nothing(store):
    model = store.create_model("ecg", "p1", "base", "biofo", b"checkpoint", 0)
    energy = EnergyRecord("inference", model.id, 2, 0.01, 0.02, "estimate", "cpu", "cpu time x watts")
    good = _window({"N": 0.9, "S": 0.1})
    unserialisable = _window({"N": object()})
    with pytest.raises(TypeError):
        store.insert_windows(model, 360.0, ["MLII", "V1"], 0.0, [good, unserialisable], {"k": 1}, energy)
    for table in ("windows", "predictions", "streams", "energy"):
        assert store.db[table].count == 0, table
    ids = store.insert_windows(model, 360.0, ["MLII", "V1"], 0.0, [good, good], {"k": 1}, energy)
    assert len(ids) == 2
    assert store.stream_state(model.id) == {"k": 1}
    assert np.array_equal(store.features(ids[0]), np.arange(4, dtype=np.float32))


def test_latest_label_wins_in_the_queue(store):
    model = store.create_model("ecg", "p1", "base", "biofo", b"checkpoint", 0)
    ids = store.insert_windows(model, 360.0, ["MLII"], 0.0, [_window({"N": 0.6, "S": 0.4})], {}, None)
    store.insert_labels([(ids[0], model.id, "S", "dr a", None)])
    store.insert_labels([(ids[0], model.id, "V", "dr b", None)])
    rows = store.queue("p1", "ecg", labeled=True, order="time", limit=10)
    assert [(r["label"], r["labeled_by"]) for r in rows] == [("V", "dr b")]
    assert store.queue("p1", "ecg", labeled=False, order="time", limit=10) == []


def test_margin_is_top1_minus_top2():
    assert margin_of({"a": 0.7, "b": 0.2, "c": 0.1}) == pytest.approx(0.5)
    assert margin_of({"a": 1.0}) == pytest.approx(1.0)


def test_update_rows_commit_without_fsync_then_every_commit_fsyncs_again(store):
    """An update row is rewritten by replay after a crash, so its commit skips the fsync (NORMAL);
    the connection is back at FULL for the next writer, also when the transaction fails."""
    model = store.create_model("ecg", "p1", "base", "biofo", b"checkpoint", 0)
    energy = EnergyRecord("update", model.id, 1, 0.01, 0.02, "estimate", "cpu", "cpu time x watts")
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    store.insert_update(model.id, 0, 1, [], [0.5], 10, 0.001, energy)
    store.conn.set_trace_callback(None)
    written = [s for s in statements if "synchronous" in s or s.startswith(("INSERT INTO updates", "COMMIT"))]
    assert written[0] == "PRAGMA synchronous=NORMAL"
    assert written[1].startswith("INSERT INTO updates")
    assert written[-2:] == ["COMMIT", "PRAGMA synchronous=FULL"]
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(RuntimeError), store.transaction(replayable=True) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        raise RuntimeError("the update failed")
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store.conn.execute("SELECT count(*) FROM updates").fetchone()[0] == 1
