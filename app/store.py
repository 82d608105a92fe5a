"""The SQLite store: every window, prediction, label, update, checkpoint and joule.

One writing connection in WAL mode with ``synchronous=FULL``: a commit that returned is on disk, so a
label is durable when ``202`` is sent. Writes go through one lock; SQLite serialises writers anyway,
and the lock keeps a multi-statement write in one transaction. Reads use a read-only connection per
thread: WAL lets them run beside the writer, so a token check or a queue query never waits behind a
commit's fsync, and each sees every transaction committed before it started, whole. Every write that belongs together
(windows + predictions + stream state + energy) is one transaction, so a failure leaves nothing
partially written. SQL is always parameterised.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from app.migrations import migrate
from app.writer_lock import WriterLock

ROLES = ("device", "clinician", "admin")


class StoreUnavailable(RuntimeError):
    """The database cannot take writes right now (disk full, read-only, locked)."""


class WindowGone(LookupError):
    """A window named by a write is no longer stored (retention removed it)."""


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    role: str


@dataclass(frozen=True)
class ModelRow:
    id: int
    modality: str
    patient_id: str
    base: str
    rule: str


@dataclass(frozen=True)
class WindowRecord:
    """A window to be stored, with the prediction the current model made for it."""

    offset_s: float
    samples: np.ndarray  # float32 (channels, n), what the page plots
    marker: int | None  # e.g. the R-peak index in ``samples``
    features: np.ndarray  # float32 (D,), what the model saw: replay uses these, never recomputes
    predicted: str
    probabilities: dict[str, float]
    model_version: int
    latency_ms: float


@dataclass(frozen=True)
class LabelRow:
    id: int
    window_id: int
    model_id: int
    label: str
    labeled_by: str
    at: float


@dataclass(frozen=True)
class EnergyRecord:
    phase: str
    model_id: int | None
    n: int
    duration_s: float
    joules: float
    source: str
    rail: str
    total: str


# The label in force for each window: the latest one that was not retracted ("latest wins").
EFFECTIVE_LABELS = (
    "(SELECT window_id, id AS label_id, label, labeled_by, at, MAX(id) FROM labels"
    " WHERE id NOT IN (SELECT label_id FROM retractions) GROUP BY window_id)"
)


@dataclass(frozen=True)
class NewCheckpoint:
    version: int
    applied_seq: int
    kind: str  # fork, periodic, shutdown, rollback or undo: what a replay may or may not cross
    reason: str  # for people: "rollback to 12", "undo label 40"
    blob: bytes


def stored_samples(row: dict[str, Any]) -> np.ndarray | None:
    """A stored window's samples (channels, n), or None where retention dropped them."""
    if row.get("samples_pruned_at") is not None:
        return None
    return np.frombuffer(row["samples"], dtype=np.float32).reshape(row["n_channels"], row["n_samples"])


@dataclass(frozen=True)
class PruneStep:
    """One retention transaction over windows: the last id it looked at, the windows it changed, and
    whether it reached windows not yet due (nothing more to do in this pass)."""

    last_id: int
    changed: int
    caught_up: bool


@dataclass(frozen=True)
class DatabaseSize:
    bytes: int  # page_count * page_size: what the database holds, free pages included
    free_bytes: int  # freelist pages: reused by new rows, or given back by ``biofo db vacuum``
    wal_bytes: int  # the write-ahead log beside it (its pages move into the database at each checkpoint)
    page_size: int
    auto_vacuum: str  # none, full or incremental


AUTO_VACUUM_MODES = ("none", "full", "incremental")


def _size_of(connection: sqlite3.Connection, path: Path) -> DatabaseSize:
    def pragma(name: str) -> int:
        return int(connection.execute(f"PRAGMA {name}").fetchone()[0])

    page_size = pragma("page_size")
    wal = Path(f"{path}-wal")
    return DatabaseSize(
        bytes=pragma("page_count") * page_size, free_bytes=pragma("freelist_count") * page_size,
        wal_bytes=wal.stat().st_size if wal.exists() else 0, page_size=page_size,
        auto_vacuum=AUTO_VACUUM_MODES[pragma("auto_vacuum")],
    )


def database_size(path: Path | str) -> DatabaseSize:
    """The size of a database file, read through a read-only connection (safe while a daemon writes it)."""
    connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=30.0)
    try:
        return _size_of(connection, Path(path))
    finally:
        connection.close()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def margin_of(probabilities: dict[str, float]) -> float:
    """Top-1 minus top-2 probability: the smaller, the less sure the model."""
    top = sorted(probabilities.values(), reverse=True)
    return float(top[0] - (top[1] if len(top) > 1 else 0.0))


def _probe_write(connection: sqlite3.Connection) -> None:
    """Fail now, not at the first label, if the database cannot be written (a read-only file opens
    and reads fine, and even takes ``BEGIN IMMEDIATE``): rewrite a header field, then roll back."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(f"PRAGMA user_version = {version}")  # an int read back from SQLite
    finally:
        connection.execute("ROLLBACK")


class Store:
    WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default: a commit checkpoints once the WAL holds this many

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        # Every time the store writes (received_at, label and checkpoint times) and retention's horizons
        # come from this clock: a soak runs a day of streams in minutes by advancing it.
        self.clock = clock
        self._lock = WriterLock()
        try:
            connection = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
            # Only takes effect on a new, empty file: its pages freed by retention can then be given
            # back to the filesystem in small steps (``biofo db vacuum``) while the daemon runs.
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            migrate(connection)
            _probe_write(connection)
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"cannot open database {self.path} for writing: {error}") from error
        self.db = sqlite_utils.Database(connection)
        self.conn = connection
        self._readers: dict[threading.Thread, sqlite_utils.Database] = {}

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.conn.close()
            self._readers.clear()
            self.conn.close()

    def set_wal_autocheckpoint(self, pages: int) -> None:
        """Let the writer's commits checkpoint the WAL once it holds ``pages`` pages (0: never; a
        ``app.wal_checkpoints.WalCheckpointer`` does it instead)."""
        with self._lock:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def _reader(self) -> sqlite_utils.Database:
        """This thread's read-only connection, opened on first use; those of finished threads are closed."""
        thread = threading.current_thread()
        reader = self._readers.get(thread)
        if reader is None:
            connection = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
            connection.execute("PRAGMA query_only=ON")
            reader = sqlite_utils.Database(connection)
            with self._lock:
                for gone in [t for t in self._readers if not t.is_alive()]:
                    self._readers.pop(gone).conn.close()
                self._readers[thread] = reader
        return reader

    @contextmanager
    def transaction(self, replayable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writing connection.

        ``replayable``: rows a restart writes again from what is durable (an update row: replaying
        the labels after the newest checkpoint rewrites the rows that are missing). Such a
        transaction goes before the writers waiting, and its commit does not wait for the disk
        (``synchronous=NORMAL``): the write-ahead log is one file appended in order, so the next
        ordinary commit's fsync makes it durable too, and every checkpoint that covers its label
        is such a commit. Only a power cut in between can lose it, and the replay writes it again.
        """
        with self._lock.first() if replayable else self._lock:
            try:
                if replayable:
                    self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as error:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise StoreUnavailable(f"database write failed: {error}") from error
            finally:
                if replayable:
                    self._restore_full_sync()

    def _restore_full_sync(self) -> None:
        """Back to fsync on every commit (outside any transaction, where SQLite allows the change)."""
        try:
            self.conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"cannot restore synchronous=FULL: {error}") from error

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self._reader().query(sql, params))

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None


    # Tokens -------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, token: str | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        # hex: a token that began with "-" would read as an option on the command line (`--token T`)
        plaintext = token or secrets.token_hex(32)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, hash_token(plaintext), self.clock()),
            )
        return plaintext

    def has_admin(self) -> bool:
        return self._one("SELECT 1 AS x FROM tokens WHERE role = 'admin' AND revoked_at IS NULL") is not None

    def find_token(self, token: str) -> Token | None:
        digest = hash_token(token)
        row = self._one(
            "SELECT id, name, role, token_hash FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (digest,),
        )
        # The lookup is by a hash of a high-entropy secret; the final comparison is constant-time.
        if row is None or not secrets.compare_digest(row["token_hash"], digest):
            return None
        return Token(id=row["id"], name=row["name"], role=row["role"])

    # Models and streams --------------------------------------------------------------------

    def model(self, modality: str, patient_id: str) -> ModelRow | None:
        row = self._one(
            "SELECT id, modality, patient_id, base, rule FROM models WHERE modality = ? AND patient_id = ?",
            (modality, patient_id),
        )
        return ModelRow(**row) if row else None

    def models(self) -> list[ModelRow]:
        rows = self._query("SELECT id, modality, patient_id, base, rule FROM models ORDER BY id")
        return [ModelRow(**row) for row in rows]

    def models_by_activity(self) -> list[ModelRow]:
        """Every model, the one whose stream moved most recently first (a model without a stream by its fork)."""
        rows = self._query(
            "SELECT m.id, m.modality, m.patient_id, m.base, m.rule FROM models m"
            " LEFT JOIN streams s ON s.model_id = m.id ORDER BY COALESCE(s.updated_at, m.created_at) DESC, m.id DESC"
        )
        return [ModelRow(**row) for row in rows]

    def create_model(self, modality: str, patient_id: str, base: str, rule: str, checkpoint: bytes, version: int) -> ModelRow:
        """Fork a base model for a new patient: the model row and its first checkpoint together."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO models (modality, patient_id, base, rule, created_at) VALUES (?, ?, ?, ?, ?)",
                (modality, patient_id, base, rule, self.clock()),
            )
            model_id = int(cursor.lastrowid)
            self._insert_checkpoint(conn, model_id, NewCheckpoint(version, 0, "fork", "fork", checkpoint))
        return ModelRow(model_id, modality, patient_id, base, rule)

    def stream_state(self, model_id: int) -> dict[str, Any] | None:
        row = self._one("SELECT state FROM streams WHERE model_id = ?", (model_id,))
        return json.loads(row["state"]) if row else None

    # Windows and predictions -----------------------------------------------------------------

    def insert_windows(
        self,
        model: ModelRow,
        fs: float,
        channels: Sequence[str],
        start: float,
        windows: Sequence[WindowRecord],
        stream_state: dict[str, Any],
        energy: EnergyRecord | None,
    ) -> list[int]:
        now = self.clock()
        # Encoded before the write lock is taken, and written with one statement per table: under load
        # requests queue for that lock, and its holder must win the GIL back after every statement.
        channels_json = json.dumps(list(channels))
        window_rows, prediction_rows = [], []
        for window in windows:
            samples = np.ascontiguousarray(window.samples, dtype=np.float32)
            window_rows.append((
                model.id, model.patient_id, model.modality, fs, channels_json, start, window.offset_s,
                samples.shape[0], samples.shape[1], samples.tobytes(), window.marker,
                np.asarray(window.features, dtype=np.float32).tobytes(), now,
            ))
            prediction_rows.append((
                window.model_version, window.predicted, json.dumps(window.probabilities),
                margin_of(window.probabilities), window.latency_ms,
            ))
        state_json = json.dumps(stream_state)
        with self.transaction() as conn:
            # The ids SQLite would give (max + 1, ...): this transaction is the only writer.
            first = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM windows").fetchone()[0])
            ids = list(range(first, first + len(window_rows)))
            conn.executemany(
                "INSERT INTO windows (id, model_id, patient_id, modality, fs, channels, start, offset_s,"
                " n_channels, n_samples, samples, marker, features, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(window_id, *row) for window_id, row in zip(ids, window_rows)],
            )
            conn.executemany(
                "INSERT INTO predictions (window_id, model_version, class, probabilities, margin, latency_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(window_id, *row) for window_id, row in zip(ids, prediction_rows)],
            )
            conn.execute(
                "INSERT INTO streams (model_id, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (model_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (model.id, state_json, now),
            )
            if energy is not None:
                self._insert_energy(conn, energy, now)
        return ids

    def segment_windows(self, model_id: int, start: float) -> list[dict[str, Any]]:
        """The windows (with predictions) stored for the segment that began at ``start``."""
        return self._query(
            "SELECT w.id, w.offset_s, p.class, p.probabilities, p.model_version FROM windows w"
            " JOIN predictions p ON p.window_id = w.id WHERE w.model_id = ? AND w.start = ? ORDER BY w.id",
            (model_id, start),
        )

    def window(self, window_id: int) -> dict[str, Any] | None:
        return self._one(
            "SELECT w.*, p.model_version, p.class AS predicted, p.probabilities, p.margin, p.latency_ms"
            " FROM windows w JOIN predictions p ON p.window_id = w.id WHERE w.id = ?",
            (window_id,),
        )

    def windows_by_id(self, window_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not window_ids:
            return {}
        placeholders = ",".join("?" for _ in window_ids)
        rows = self._query(
            "SELECT w.id, w.model_id, w.modality, w.patient_id, p.class AS predicted FROM windows w"
            f" JOIN predictions p ON p.window_id = w.id WHERE w.id IN ({placeholders})",
            list(window_ids),
        )
        return {row["id"]: row for row in rows}

    def features(self, window_id: int) -> np.ndarray:
        row = self._one("SELECT features FROM windows WHERE id = ?", (window_id,))
        if row is None:
            raise KeyError(window_id)
        return np.frombuffer(row["features"], dtype=np.float32).copy()

    def queue(
        self,
        patient_id: str | None,
        modality: str | None,
        labeled: bool | None,
        order: str,
        limit: int,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        where = ["1 = 1"]
        params: list[Any] = []
        if patient_id is not None:
            where.append("w.patient_id = ?")
            params.append(patient_id)
        if modality is not None:
            where.append("w.modality = ?")
            params.append(modality)
        if labeled is True:
            where.append("l.label IS NOT NULL")
        elif labeled is False:
            where.append("l.label IS NULL")
        # A beat whose samples retention dropped cannot be judged by eye: it leaves the labelling queue.
        where.append("(w.samples_pruned_at IS NULL OR l.label IS NOT NULL)")
        order_by = {"uncertainty": "p.margin ASC, w.id ASC", "time": "w.offset_s ASC, w.id ASC",
                    "recent": "w.id DESC"}[order]
        params.extend([limit, offset])
        return self._query(
            "SELECT w.id, w.patient_id, w.modality, w.offset_s, w.received_at, p.class AS predicted,"
            " p.probabilities, p.margin, p.model_version, l.label, l.labeled_by, l.at AS labeled_at"
            " FROM windows w JOIN predictions p ON p.window_id = w.id"
            f" LEFT JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            f" WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT ? OFFSET ?",
            params,
        )

    # Labels, updates, checkpoints ------------------------------------------------------------

    def insert_labels(self, labels: Sequence[tuple[int, int, str, str, int | None]]) -> list[int]:
        """Append labels (window id, model id, label, labeled_by, token id) in order; durable on return."""
        now = self.clock()
        ids: list[int] = []
        try:
            with self.transaction() as conn:
                for window_id, model_id, label, labeled_by, token_id in labels:
                    cursor = conn.execute(
                        "INSERT INTO labels (window_id, model_id, label, labeled_by, token_id, at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (window_id, model_id, label, labeled_by, token_id, now),
                    )
                    ids.append(int(cursor.lastrowid))
        except sqlite3.IntegrityError as error:
            # Retention removed a window between the caller's check and this write; nothing was written.
            raise WindowGone(f"a window of these labels is no longer stored: {error}") from error
        return ids

    def labels_from(self, after_id: int, limit: int) -> list[LabelRow]:
        """Labels of every model accepted after ``after_id``, retracted or not, in acceptance order."""
        rows = self._query(
            "SELECT id, window_id, model_id, label, labeled_by, at FROM labels WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [LabelRow(**row) for row in rows]

    def labels_before(self, model_id: int, label_id: int) -> list[LabelRow]:
        """The model's labels accepted before ``label_id``, not retracted, the latest per window as of
        ``label_id`` (a window relabelled later, or by ``label_id`` itself, keeps only its newest
        label), oldest first: what rehearsal may draw from when that label is learned."""
        rows = self._query(
            "SELECT l.id, l.window_id, l.model_id, l.label, l.labeled_by, l.at FROM labels l"
            " WHERE l.model_id = ? AND l.id < ? AND l.id NOT IN (SELECT label_id FROM retractions)"
            " AND NOT EXISTS (SELECT 1 FROM labels m WHERE m.window_id = l.window_id AND m.id > l.id"
            " AND m.id <= ? AND m.id NOT IN (SELECT label_id FROM retractions))"
            " ORDER BY l.id",
            (model_id, label_id, label_id),
        )
        return [LabelRow(**row) for row in rows]

    def features_of(self, window_ids: Sequence[int]) -> np.ndarray:
        """Stored features of several windows, in the order given (k, d)."""
        return np.stack([self.features(window_id) for window_id in window_ids])

    def newest_label_seq(self, model_id: int | None = None) -> int:
        """The id of the newest label accepted (for one model, or for all), 0 if none."""
        if model_id is None:
            return int(self._one("SELECT COALESCE(MAX(id), 0) AS seq FROM labels")["seq"])
        return int(self._one("SELECT COALESCE(MAX(id), 0) AS seq FROM labels WHERE model_id = ?", (model_id,))["seq"])

    def count_labels_after(self, model_id: int, applied_seq: int) -> int:
        """Labels in force accepted after ``applied_seq``: what a model at that point has still to learn."""
        return int(self._one(
            "SELECT COUNT(*) AS n FROM labels WHERE model_id = ? AND id > ?"
            " AND id NOT IN (SELECT label_id FROM retractions)",
            (model_id, applied_seq),
        )["n"])

    def label_history(self, window_id: int) -> list[dict[str, Any]]:
        """Every label given to a window, oldest first, each with whether it was retracted."""
        return self._query(
            "SELECT l.id, l.label, l.labeled_by, l.at, r.id IS NOT NULL AS retracted FROM labels l"
            " LEFT JOIN retractions r ON r.label_id = l.id WHERE l.window_id = ? ORDER BY l.id",
            (window_id,),
        )

    def label_in_force(self, window_id: int) -> str | None:
        """The newest label of a window that was not retracted."""
        row = self._one(
            "SELECT label FROM labels WHERE window_id = ? AND id NOT IN (SELECT label_id FROM retractions)"
            " ORDER BY id DESC LIMIT 1",
            (window_id,),
        )
        return row["label"] if row else None

    def labels_after(self, model_id: int, applied_seq: int) -> list[LabelRow]:
        rows = self._query(
            "SELECT id, window_id, model_id, label, labeled_by, at FROM labels"
            " WHERE model_id = ? AND id > ? AND id NOT IN (SELECT label_id FROM retractions) ORDER BY id",
            (model_id, applied_seq),
        )
        return [LabelRow(**row) for row in rows]

    def label(self, label_id: int) -> dict[str, Any] | None:
        """One label with its window's patient, the update that learned it and its retraction, if any."""
        return self._one(
            "SELECT l.id, l.window_id, l.model_id, l.label, l.labeled_by, l.at, w.patient_id, w.modality,"
            " u.id AS update_id, u.version_before, u.version_after, u.duration_s, u.joules, u.energy_source,"
            " r.id AS retraction_id"
            " FROM labels l JOIN windows w ON w.id = l.window_id"
            " LEFT JOIN update_labels ul ON ul.label_id = l.id LEFT JOIN updates u ON u.id = ul.update_id"
            " LEFT JOIN retractions r ON r.label_id = l.id WHERE l.id = ?",
            (label_id,),
        )

    def is_retracted(self, label_id: int) -> bool:
        return self._one("SELECT 1 AS x FROM retractions WHERE label_id = ?", (label_id,)) is not None

    def retractions(self, model_id: int) -> list[dict[str, Any]]:
        return self._query(
            "SELECT id, label_id, checkpoint_id, version_before, version_after FROM retractions"
            " WHERE model_id = ? ORDER BY id",
            (model_id,),
        )

    def insert_retraction(
        self,
        labels: Sequence[LabelRow],
        token_id: int | None,
        retracted_by: str,
        version_before: int,
        version_after: int,
        rebuilt_from: int | None,
        replayed: int,
        duration_s: float,
        checkpoint: NewCheckpoint | None,
        energy: EnergyRecord | None,
    ) -> list[dict[str, Any]]:
        """Retract labels (one clinician action: one label, or a whole template's), with the checkpoint of
        the rebuilt model and its energy, in one transaction: no moment exists where a retraction is
        stored but the newest checkpoint still holds its label. The cost is recorded on the first row."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        with self.transaction() as conn:
            checkpoint_id = None
            if checkpoint is not None:
                checkpoint_id = self._insert_checkpoint(conn, labels[0].model_id, checkpoint)
            for index, label in enumerate(labels):
                first = index == 0
                cursor = conn.execute(
                    "INSERT INTO retractions (label_id, model_id, token_id, retracted_by, at, version_before,"
                    " version_after, rebuilt_from, checkpoint_id, replayed, duration_s, joules, energy_source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        label.id, label.model_id, token_id, retracted_by, now, version_before, version_after,
                        rebuilt_from, checkpoint_id, replayed if first else 0, duration_s if first else 0.0,
                        energy.joules if energy and first else 0.0, energy.source if energy else None,
                    ),
                )
                rows.append({"id": int(cursor.lastrowid), "checkpoint_id": checkpoint_id, "at": now})
            if energy is not None:
                self._insert_energy(conn, energy, now)
        return rows

    def has_update_for(self, label_id: int) -> bool:
        return self._one("SELECT 1 AS x FROM update_labels WHERE label_id = ?", (label_id,)) is not None

    def insert_update(
        self,
        model_id: int,
        version_before: int,
        version_after: int,
        label_ids: Sequence[int],
        loss_per_layer: Sequence[float],
        macs: int,
        duration_s: float,
        energy: EnergyRecord,
    ) -> int:
        now = self.clock()
        with self.transaction(replayable=True) as conn:
            cursor = conn.execute(
                "INSERT INTO updates (model_id, version_before, version_after, loss_per_layer,"
                " macs, duration_s, joules, energy_source, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model_id, version_before, version_after, json.dumps([float(x) for x in loss_per_layer]),
                    int(macs), duration_s, energy.joules, energy.source, now,
                ),
            )
            update_id = int(cursor.lastrowid)
            conn.executemany("INSERT INTO update_labels (update_id, label_id) VALUES (?, ?)",
                             [(update_id, int(label_id)) for label_id in label_ids])
            self._insert_energy(conn, energy, now)
        return update_id

    def insert_checkpoint(self, model_id: int, checkpoint: NewCheckpoint) -> int:
        with self.transaction() as conn:
            return self._insert_checkpoint(conn, model_id, checkpoint)

    def _insert_checkpoint(self, conn: sqlite3.Connection, model_id: int, checkpoint: NewCheckpoint) -> int:
        cursor = conn.execute(
            "INSERT INTO checkpoints (model_id, version, applied_seq, kind, reason, blob, sha256, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (model_id, checkpoint.version, checkpoint.applied_seq, checkpoint.kind, checkpoint.reason,
             checkpoint.blob, hashlib.sha256(checkpoint.blob).hexdigest(), self.clock()),
        )
        return int(cursor.lastrowid)

    def checkpoints(self, model_id: int) -> list[dict[str, Any]]:
        """Newest first, without their blobs. The newest row is the base the durability invariant
        replays from."""
        return self._query(
            "SELECT id, model_id, version, applied_seq, kind, reason, sha256, at FROM checkpoints"
            " WHERE model_id = ? ORDER BY id DESC",
            (model_id,),
        )

    def checkpoint_blob(self, checkpoint_id: int) -> bytes:
        """A checkpoint's bytes (empty if the row is gone), for the caller to verify against its sha256."""
        row = self._one("SELECT blob FROM checkpoints WHERE id = ?", (checkpoint_id,))
        return bytes(row["blob"]) if row else b""

    # Metrics ---------------------------------------------------------------------------------

    def prequential(self, model_id: int) -> list[dict[str, Any]]:
        """Per labelled window: the prediction made before any label, and the latest label."""
        return self._query(
            "SELECT w.id AS window_id, p.class AS predicted, l.label FROM predictions p"
            " JOIN windows w ON w.id = p.window_id"
            f" JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            " WHERE w.model_id = ?",
            (model_id,),
        )

    def prequential_trend(self, model_id: int) -> list[dict[str, Any]]:
        """The same pairs as ``prequential``, in the order their labels were given."""
        return self._query(
            "SELECT l.label_id, l.window_id, l.at, l.label, p.class AS predicted FROM predictions p"
            " JOIN windows w ON w.id = p.window_id"
            f" JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            " WHERE w.model_id = ? ORDER BY l.label_id",
            (model_id,),
        )

    def window_counts(self) -> dict[int, dict[str, int]]:
        """Per model: windows stored, windows with a label in force, and labels retracted."""
        rows = self._query(
            "SELECT w.model_id, COUNT(*) AS windows, COUNT(l.window_id) AS labelled,"
            " (SELECT COUNT(*) FROM retractions r WHERE r.model_id = w.model_id) AS retracted"
            f" FROM windows w LEFT JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id GROUP BY w.model_id"
        )
        return {row.pop("model_id"): row for row in rows}

    def count_updates(self, model_id: int) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM updates WHERE model_id = ?", (model_id,))
        return int(row["n"]) if row else 0

    # Energy ----------------------------------------------------------------------------------

    def energy_rows(self, since: float, phase: str | None, limit: int) -> list[dict[str, Any]]:
        """Energy rows from ``since`` on (of one phase, or all), oldest first, with their model's names."""
        return self._query(
            "SELECT e.id, e.at, e.phase, m.modality, m.patient_id, e.n, e.duration_s, e.joules, e.source,"
            " e.rail, e.total FROM energy e LEFT JOIN models m ON m.id = e.model_id"
            " WHERE e.at >= ? AND (? IS NULL OR e.phase = ?) ORDER BY e.id LIMIT ?",
            (since, phase, phase, limit),
        )

    def energy_totals(self) -> list[dict[str, Any]]:
        """Totals per phase, source and rail; figures from different sources are never added together."""
        return self._query(
            "SELECT phase, source, rail, SUM(n) AS n, COUNT(*) AS rows, SUM(joules) AS joules,"
            " SUM(duration_s) AS duration_s FROM energy GROUP BY phase, source, rail ORDER BY phase, source"
        )

    @staticmethod
    def _insert_energy(conn: sqlite3.Connection, energy: EnergyRecord, at: float) -> None:
        conn.execute(
            "INSERT INTO energy (at, phase, model_id, n, duration_s, joules, source, rail, total)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, energy.phase, energy.model_id, energy.n, energy.duration_s, energy.joules,
             energy.source, energy.rail, energy.total),
        )

    # Alarms ----------------------------------------------------------------------------------

    ALARM_COLUMNS = (
        "id, model_id, patient_id, modality, kind, first_window_id, last_window_id, n_windows, start_s, end_s,"
        " raised_at, acknowledged_by, acknowledged_at"
    )

    def prediction_tail(self, model_id: int, before_window_id: int, n: int) -> list[dict[str, Any]]:
        """The model's last ``n`` windows before ``before_window_id``, oldest first, with their predicted class."""
        rows = self._query(
            "SELECT w.id, w.offset_s, p.class AS predicted FROM windows w JOIN predictions p ON p.window_id = w.id"
            " WHERE w.model_id = ? AND w.id < ? ORDER BY w.id DESC LIMIT ?",
            (model_id, before_window_id, n),
        )
        return rows[::-1]

    def newest_segment_windows(self, model_id: int) -> list[dict[str, Any]]:
        """The windows of the model's newest segment, oldest first, with their predicted class."""
        return self._query(
            "SELECT w.id, w.offset_s, p.class AS predicted FROM windows w JOIN predictions p ON p.window_id = w.id"
            " WHERE w.model_id = ? AND w.start = (SELECT start FROM windows WHERE model_id = ? ORDER BY id DESC LIMIT 1)"
            " ORDER BY w.id",
            (model_id, model_id),
        )

    def alarm_containing(self, model_id: int, window_id: int) -> dict[str, Any] | None:
        return self._one(
            f"SELECT {self.ALARM_COLUMNS} FROM alarms WHERE model_id = ? AND first_window_id <= ?"
            " AND last_window_id >= ?",
            (model_id, window_id, window_id),
        )

    def raise_alarm(
        self, model: ModelRow, kind: str, first: dict[str, Any], last: dict[str, Any], webhooks: Sequence[str],
    ) -> int:
        """The alarm of the run from ``first`` to ``last`` and one pending delivery per webhook, in one
        transaction. Raising the same run again (a check repeated after a restart) changes nothing but
        its end."""
        with self.transaction() as conn:
            (alarm_id,) = conn.execute(
                "INSERT INTO alarms (model_id, patient_id, modality, kind, first_window_id, last_window_id, n_windows,"
                " start_s, end_s, raised_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"
                " ON CONFLICT (first_window_id) DO UPDATE SET last_window_id = excluded.last_window_id,"
                " end_s = excluded.end_s RETURNING id",
                (model.id, model.patient_id, model.modality, kind, first["id"], last["id"],
                 first["offset_s"], last["offset_s"], self.clock()),
            ).fetchone()
            self._count_run(conn, alarm_id)
            conn.executemany(
                "INSERT OR IGNORE INTO alarm_deliveries (alarm_id, url) VALUES (?, ?)",
                [(alarm_id, url) for url in webhooks],
            )
        return int(alarm_id)

    def extend_alarm(self, alarm_id: int, last: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE alarms SET last_window_id = ?, end_s = ? WHERE id = ? AND last_window_id <= ?",
                         (last["id"], last["offset_s"], alarm_id, last["id"]))
            self._count_run(conn, alarm_id)

    @staticmethod
    def _count_run(conn: sqlite3.Connection, alarm_id: int) -> None:
        # A run is consecutive windows of one model, so it holds every window of that model between
        # its ends; counted, not added up, so that repeating a check cannot count a window twice.
        conn.execute(
            "UPDATE alarms SET n_windows = (SELECT COUNT(*) FROM windows w WHERE w.model_id = alarms.model_id"
            " AND w.id BETWEEN alarms.first_window_id AND alarms.last_window_id) WHERE id = ?",
            (alarm_id,),
        )

    def alarms(
        self, patient_id: str | None, modality: str | None, acknowledged: bool | None, limit: int, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first."""
        where, params = ["1 = 1"], []
        if patient_id is not None:
            where.append("patient_id = ?")
            params.append(patient_id)
        if modality is not None:
            where.append("modality = ?")
            params.append(modality)
        if acknowledged is not None:
            where.append("acknowledged_at IS NOT NULL" if acknowledged else "acknowledged_at IS NULL")
        return self._query(
            f"SELECT {self.ALARM_COLUMNS} FROM alarms WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    def alarm(self, alarm_id: int) -> dict[str, Any] | None:
        return self._one(f"SELECT {self.ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,))

    def acknowledge_alarm(self, alarm_id: int, by: str, token_id: int | None) -> bool:
        """Record who acknowledged the alarm and when; False if it was acknowledged before (the first one stands)."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE alarms SET acknowledged_by = ?, acknowledged_token_id = ?, acknowledged_at = ?"
                " WHERE id = ? AND acknowledged_at IS NULL",
                (by, token_id, self.clock(), alarm_id),
            )
        return cursor.rowcount == 1

    def alarm_deliveries(self, alarm_id: int) -> list[dict[str, Any]]:
        return self._query(
            "SELECT url, attempts, delivered_at, last_status, last_error FROM alarm_deliveries WHERE alarm_id = ? ORDER BY id",
            (alarm_id,),
        )

    def deliveries_owed(self, max_attempts: int) -> list[dict[str, Any]]:
        """Webhook deliveries not yet made and not given up, oldest first."""
        return self._query(
            "SELECT id, alarm_id, url, attempts FROM alarm_deliveries WHERE delivered_at IS NULL AND attempts < ?"
            " ORDER BY id",
            (max_attempts,),
        )

    def record_delivery_attempt(self, delivery_id: int, status: int | None, error: str | None) -> None:
        delivered = self.clock() if error is None else None
        with self.transaction() as conn:
            conn.execute(
                "UPDATE alarm_deliveries SET attempts = attempts + 1, delivered_at = ?, last_status = ?, last_error = ?"
                " WHERE id = ?",
                (delivered, status, error, delivery_id),
            )

    # Templates, strips and exports -------------------------------------------------------------

    def beats_after(self, model_id: int, after_window_id: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the model's windows after ``after_window_id``, in arrival order, with their
        stored samples (``stored_samples``), marker and features."""
        return self._query(
            "SELECT id, samples, n_channels, n_samples, marker, samples_pruned_at, features FROM windows"
            " WHERE model_id = ? AND id > ? ORDER BY id LIMIT ?",
            (model_id, after_window_id, limit),
        )

    def window_states(self, model_id: int, through_window_id: int) -> dict[int, dict[str, Any]]:
        """Per window of the model up to ``through_window_id``: predicted class and the label in force (or None)."""
        rows = self._query(
            "SELECT w.id, p.class AS predicted, l.label FROM windows w JOIN predictions p ON p.window_id = w.id"
            f" LEFT JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id WHERE w.model_id = ? AND w.id <= ?",
            (model_id, through_window_id),
        )
        return {row["id"]: row for row in rows}

    def windows_between(
        self, model_id: int, start_s: float, end_s: float, with_samples: bool = True
    ) -> list[dict[str, Any]]:
        """The model's windows whose offset lies in [start_s, end_s), in time order, with prediction and
        label in force (and samples, if asked)."""
        samples = ", w.samples, w.n_channels, w.n_samples, w.marker, w.samples_pruned_at" if with_samples else ""
        return self._query(
            f"SELECT w.id, w.offset_s, w.channels, p.class AS predicted, p.model_version, l.label{samples}"
            " FROM windows w JOIN predictions p ON p.window_id = w.id"
            f" LEFT JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            " WHERE w.model_id = ? AND w.offset_s >= ? AND w.offset_s < ? ORDER BY w.offset_s, w.id",
            (model_id, start_s, end_s),
        )

    def windows_with_samples(self, window_ids: Sequence[int]) -> set[int]:
        """Those of ``window_ids`` still stored with their samples."""
        if not window_ids:
            return set()
        placeholders = ",".join("?" for _ in window_ids)
        rows = self._query(
            f"SELECT id FROM windows WHERE id IN ({placeholders}) AND samples_pruned_at IS NULL", list(window_ids)
        )
        return {row["id"] for row in rows}

    def stream_span(self, model_id: int) -> dict[str, Any]:
        """Offsets of the model's first and last window (``lo``, ``hi``; None before any window)."""
        return self._one("SELECT MIN(offset_s) AS lo, MAX(offset_s) AS hi FROM windows WHERE model_id = ?", (model_id,))

    def export_windows(self, model_id: int) -> list[dict[str, Any]]:
        """Every window of a model in time order with its samples, prediction and label in force."""
        return self.windows_between(model_id, float("-inf"), float("inf"))

    def export_labels(self, model_id: int) -> list[dict[str, Any]]:
        """The labels in force of a model's windows, in time order, with who gave them."""
        return self._query(
            "SELECT w.id AS window_id, w.offset_s, l.label, l.labeled_by, l.at FROM windows w"
            f" JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id WHERE w.model_id = ? ORDER BY w.offset_s, w.id",
            (model_id,),
        )


    # Retention and maintenance -----------------------------------------------------------------

    def prune_unlabelled(self, after_id: int, received_before: float, limit: int, drop: str) -> PruneStep:
        """Look at up to ``limit`` windows after ``after_id`` (id order) received before
        ``received_before``; of those with no label (retracted or not) that neither starts nor ends an
        alarm, drop the samples (``drop="samples"``) or the whole window with its prediction
        (``drop="windows"``). One short transaction, so ingest waits for at most one of them.

        Windows kept stay kept (labels are append-only, alarms are never deleted), so the caller may
        resume after ``last_id`` next time instead of scanning them again."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT w.id, w.received_at < ? AS due, w.samples_pruned_at IS NOT NULL AS pruned,"
                " EXISTS (SELECT 1 FROM labels l WHERE l.window_id = w.id)"
                " OR EXISTS (SELECT 1 FROM alarms a WHERE a.first_window_id = w.id)"
                " OR EXISTS (SELECT 1 FROM alarms a WHERE a.last_window_id = w.id) AS kept"
                " FROM windows w WHERE w.id > ? ORDER BY w.id LIMIT ?",
                (received_before, after_id, limit),
            ).fetchall()
            last_id, chosen, caught_up = after_id, [], len(rows) < limit
            for window_id, due, pruned, kept in rows:
                if not due:
                    caught_up = True
                    break
                last_id = window_id
                if not kept and (drop == "windows" or not pruned):
                    chosen.append((window_id,))
            if drop == "samples":
                conn.executemany("UPDATE windows SET samples = x'', samples_pruned_at = ? WHERE id = ?",
                                 [(self.clock(), window_id) for (window_id,) in chosen])
            else:
                conn.executemany("DELETE FROM predictions WHERE window_id = ?", chosen)
                conn.executemany("DELETE FROM windows WHERE id = ?", chosen)
        return PruneStep(last_id, len(chosen), caught_up)

    def prune_checkpoints(self, keep: int, limit: int) -> int:
        """Delete up to ``limit`` periodic and shutdown checkpoints that are not among their model's
        newest ``keep`` and that no retraction names (as the base it rebuilt from or the checkpoint it
        wrote). Fork, rollback and undo checkpoints are always kept: they are the rollback targets and
        the points an undo's rebuild may start from or must not cross. The newest checkpoint, which a
        restart restores from, is always among the ``keep`` (at least one)."""
        with self.transaction() as conn:
            ids = conn.execute(
                "SELECT c.id FROM checkpoints c WHERE c.kind IN ('periodic', 'shutdown')"
                " AND (SELECT COUNT(*) FROM checkpoints n WHERE n.model_id = c.model_id AND n.id > c.id) >= ?"
                " AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.rebuilt_from = c.id OR r.checkpoint_id = c.id)"
                " ORDER BY c.id LIMIT ?",
                (max(1, keep), limit),
            ).fetchall()
            conn.executemany("DELETE FROM checkpoints WHERE id = ?", ids)
        return len(ids)

    def size(self) -> DatabaseSize:
        return _size_of(self._reader().conn, self.path)

    def stats(self) -> dict[str, Any]:
        """What IT asks of the database: rows and bytes per table (indexes included), the windows with and
        without samples, the oldest sample kept, checkpoints and their bytes."""
        tables = [row["name"] for row in self._query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        pages = {row["tbl"]: int(row["bytes"]) for row in self._query(
            "SELECT m.tbl_name AS tbl, SUM(d.pgsize) AS bytes FROM dbstat d JOIN sqlite_master m ON m.name = d.name"
            " GROUP BY m.tbl_name")}
        windows = self._one(
            "SELECT COUNT(*) AS windows, COUNT(samples_pruned_at) AS pruned, MIN(received_at) AS oldest,"
            " MIN(CASE WHEN samples_pruned_at IS NULL THEN received_at END) AS oldest_sample FROM windows")
        checkpoints = self._one("SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(blob)), 0) AS bytes FROM checkpoints")
        return {
            "tables": {
                name: {"rows": int(self._one(f"SELECT COUNT(*) AS n FROM [{name}]")["n"]),  # names from sqlite_master
                       "bytes": pages.get(name, 0)}
                for name in tables
            },
            "windows": int(windows["windows"]),
            "windows_without_samples": int(windows["pruned"]),
            "oldest_window_at": windows["oldest"],
            "oldest_sample_kept_at": windows["oldest_sample"],
            "checkpoints": int(checkpoints["n"]),
            "checkpoint_bytes": int(checkpoints["bytes"]),
        }

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the filesystem in one short write transaction (a
        database whose auto_vacuum is incremental); the number of free pages left."""
        with self._lock:
            try:
                # Run to completion by sqlite3_exec (a plain execute steps this pragma once: one page).
                self.conn.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"incremental vacuum failed: {error}") from error
            return int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])

    def vacuum_full(self) -> None:
        """Rewrite the whole database, and make its auto_vacuum incremental. Holds the database for the
        whole rewrite and needs as much free disk as the database: only with no daemon running."""
        with self._lock:
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.conn.execute("VACUUM")
