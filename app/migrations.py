"""Numbered schema migrations, applied in order and recorded in ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('device', 'clinician', 'admin')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        modality TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        base TEXT NOT NULL,
        rule TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (modality, patient_id)
    );
    CREATE TABLE streams (
        model_id INTEGER PRIMARY KEY REFERENCES models(id),
        state TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE windows (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        patient_id TEXT NOT NULL,
        modality TEXT NOT NULL,
        fs REAL NOT NULL,
        channels TEXT NOT NULL,
        start REAL NOT NULL,
        offset_s REAL NOT NULL,
        n_channels INTEGER NOT NULL,
        n_samples INTEGER NOT NULL,
        samples BLOB NOT NULL,
        marker INTEGER,
        features BLOB NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX windows_patient ON windows (modality, patient_id, offset_s);
    CREATE TABLE predictions (
        window_id INTEGER PRIMARY KEY REFERENCES windows(id),
        model_version INTEGER NOT NULL,
        class TEXT NOT NULL,
        probabilities TEXT NOT NULL,
        margin REAL NOT NULL,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX predictions_margin ON predictions (margin);
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        window_id INTEGER NOT NULL REFERENCES windows(id),
        model_id INTEGER NOT NULL REFERENCES models(id),
        label TEXT NOT NULL,
        labeled_by TEXT NOT NULL,
        token_id INTEGER REFERENCES tokens(id),
        at REAL NOT NULL
    );
    CREATE INDEX labels_window ON labels (window_id, id);
    CREATE INDEX labels_model ON labels (model_id, id);
    CREATE TABLE updates (
        seq INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version_before INTEGER NOT NULL,
        version_after INTEGER NOT NULL,
        label_ids TEXT NOT NULL,
        loss_per_layer TEXT NOT NULL,
        macs INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        joules REAL NOT NULL,
        energy_source TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX updates_model ON updates (model_id, seq);
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        label_seq INTEGER NOT NULL,
        reason TEXT NOT NULL,
        blob BLOB NOT NULL,
        sha256 TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX checkpoints_model ON checkpoints (model_id, id);
    CREATE TABLE energy (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('inference', 'update')),
        model_id INTEGER REFERENCES models(id),
        n INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        joules REAL NOT NULL,
        source TEXT NOT NULL,
        rail TEXT NOT NULL,
        total TEXT NOT NULL
    );
    CREATE INDEX energy_at ON energy (at);
    """,
    # 2: retractions. Labels stay append-only; undoing one appends a row here, and the row says how
    # the model was made consistent again (the checkpoint it was rebuilt from, the labels replayed,
    # the checkpoint written with the rebuilt weights, and what that cost).
    """
    CREATE TABLE retractions (
        id INTEGER PRIMARY KEY,
        label_id INTEGER NOT NULL UNIQUE REFERENCES labels(id),
        model_id INTEGER NOT NULL REFERENCES models(id),
        token_id INTEGER REFERENCES tokens(id),
        retracted_by TEXT NOT NULL,
        at REAL NOT NULL,
        version_before INTEGER NOT NULL,
        version_after INTEGER NOT NULL,
        rebuilt_from INTEGER REFERENCES checkpoints(id),
        checkpoint_id INTEGER REFERENCES checkpoints(id),
        replayed INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        joules REAL NOT NULL,
        energy_source TEXT
    );
    CREATE INDEX retractions_model ON retractions (model_id, id);
    """,
    # 3: the labels an update learned move from a JSON text column into a link table, indexed both
    # ways, so "which update learned label L" is a lookup, not a text match per label; a checkpoint's
    # kind becomes a column instead of a prefix of its free-text reason. "seq" now always means a
    # position in the label sequence (label ids, in acceptance order): an update row is known by its
    # id, and a checkpoint records the labels it has applied up to as applied_seq, the name the model
    # answer uses.
    """
    ALTER TABLE updates RENAME COLUMN seq TO id;
    ALTER TABLE checkpoints RENAME COLUMN label_seq TO applied_seq;
    CREATE TABLE update_labels (
        update_id INTEGER NOT NULL REFERENCES updates(id),
        label_id INTEGER NOT NULL REFERENCES labels(id),
        PRIMARY KEY (update_id, label_id)
    );
    CREATE INDEX update_labels_label ON update_labels (label_id, update_id);
    INSERT INTO update_labels (update_id, label_id)
        SELECT u.id, CAST(j.value AS INTEGER) FROM updates u, json_each(u.label_ids) j;
    ALTER TABLE updates DROP COLUMN label_ids;
    ALTER TABLE checkpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'periodic'
        CHECK (kind IN ('fork', 'periodic', 'shutdown', 'rollback', 'undo'));
    UPDATE checkpoints SET kind = CASE
        WHEN reason = 'fork' THEN 'fork'
        WHEN reason = 'shutdown' THEN 'shutdown'
        WHEN reason LIKE 'rollback to %' THEN 'rollback'
        WHEN reason LIKE 'undo label %' THEN 'undo'
        ELSE 'periodic' END;
    """,
    # 4: alarms. A run of alarming predictions (consecutive V beats, consecutive seizure windows) is
    # one alarm row, keyed by the run's first window and extended while the run lasts; a clinician's
    # acknowledgement (who, when) is kept on it. Each webhook delivery is its own row so a restart
    # resumes the deliveries still owed.
    """
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY,
        model_id INTEGER NOT NULL REFERENCES models(id),
        patient_id TEXT NOT NULL,
        modality TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_window_id INTEGER NOT NULL UNIQUE REFERENCES windows(id),
        last_window_id INTEGER NOT NULL REFERENCES windows(id),
        n_windows INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        raised_at REAL NOT NULL,
        acknowledged_by TEXT,
        acknowledged_token_id INTEGER REFERENCES tokens(id),
        acknowledged_at REAL
    );
    CREATE INDEX alarms_model ON alarms (model_id, last_window_id);
    CREATE TABLE alarm_deliveries (
        id INTEGER PRIMARY KEY,
        alarm_id INTEGER NOT NULL REFERENCES alarms(id),
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        last_status INTEGER,
        last_error TEXT,
        UNIQUE (alarm_id, url)
    );
    """,
    # 5: retention. An unlabelled window past the samples horizon keeps its features and prediction
    # (templates, exports and alarms read those) but not its samples: the blob becomes empty and
    # ``samples_pruned_at`` says when. Retention asks whether a window ends an alarm run, by either end.
    """
    ALTER TABLE windows ADD COLUMN samples_pruned_at REAL;
    CREATE INDEX alarms_last_window ON alarms (last_window_id);
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; return the resulting schema version."""
    current = connection.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        # One script per migration: the schema change and its version number commit together.
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
