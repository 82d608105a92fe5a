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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from app.migrations import migrate

ROLES = ("device", "clinician", "admin")


class StoreUnavailable(RuntimeError):
    """The database cannot take writes right now (disk full, read-only, locked)."""


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
    label_seq: int
    reason: str
    blob: bytes


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
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            connection = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
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

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self._reader().query(sql, params))

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # Tokens -------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, token: str | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        plaintext = token or secrets.token_urlsafe(32)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, hash_token(plaintext), time.time()),
            )
        return plaintext

    def has_admin(self) -> bool:
        return self.one("SELECT 1 AS x FROM tokens WHERE role = 'admin' AND revoked_at IS NULL") is not None

    def find_token(self, token: str) -> Token | None:
        digest = hash_token(token)
        row = self.one(
            "SELECT id, name, role, token_hash FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (digest,),
        )
        # The lookup is by a hash of a high-entropy secret; the final comparison is constant-time.
        if row is None or not secrets.compare_digest(row["token_hash"], digest):
            return None
        return Token(id=row["id"], name=row["name"], role=row["role"])

    # Models and streams --------------------------------------------------------------------

    def model(self, modality: str, patient_id: str) -> ModelRow | None:
        row = self.one(
            "SELECT id, modality, patient_id, base, rule FROM models WHERE modality = ? AND patient_id = ?",
            (modality, patient_id),
        )
        return ModelRow(**row) if row else None

    def model_by_id(self, model_id: int) -> ModelRow:
        row = self.one("SELECT id, modality, patient_id, base, rule FROM models WHERE id = ?", (model_id,))
        if row is None:
            raise KeyError(model_id)
        return ModelRow(**row)

    def models(self) -> list[ModelRow]:
        rows = self.query("SELECT id, modality, patient_id, base, rule FROM models ORDER BY id")
        return [ModelRow(**row) for row in rows]

    def create_model(self, modality: str, patient_id: str, base: str, rule: str, checkpoint: bytes, version: int) -> ModelRow:
        """Fork a base model for a new patient: the model row and its first checkpoint together."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO models (modality, patient_id, base, rule, created_at) VALUES (?, ?, ?, ?, ?)",
                (modality, patient_id, base, rule, time.time()),
            )
            model_id = int(cursor.lastrowid)
            self._insert_checkpoint(conn, model_id, version, 0, "fork", checkpoint)
        return ModelRow(model_id, modality, patient_id, base, rule)

    def stream_state(self, model_id: int) -> dict[str, Any] | None:
        row = self.one("SELECT state FROM streams WHERE model_id = ?", (model_id,))
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
        now = time.time()
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

    def window(self, window_id: int) -> dict[str, Any] | None:
        return self.one(
            "SELECT w.*, p.model_version, p.class AS predicted, p.probabilities, p.margin, p.latency_ms"
            " FROM windows w JOIN predictions p ON p.window_id = w.id WHERE w.id = ?",
            (window_id,),
        )

    def windows_by_id(self, window_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not window_ids:
            return {}
        placeholders = ",".join("?" for _ in window_ids)
        rows = self.query(
            f"SELECT id, model_id, modality, patient_id FROM windows WHERE id IN ({placeholders})",
            list(window_ids),
        )
        return {row["id"]: row for row in rows}

    def features(self, window_id: int) -> np.ndarray:
        row = self.one("SELECT features FROM windows WHERE id = ?", (window_id,))
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
        order_by = {"uncertainty": "p.margin ASC, w.id ASC", "time": "w.offset_s ASC, w.id ASC",
                    "recent": "w.id DESC"}[order]
        params.extend([limit, offset])
        return self.query(
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
        now = time.time()
        ids: list[int] = []
        with self.transaction() as conn:
            for window_id, model_id, label, labeled_by, token_id in labels:
                cursor = conn.execute(
                    "INSERT INTO labels (window_id, model_id, label, labeled_by, token_id, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (window_id, model_id, label, labeled_by, token_id, now),
                )
                ids.append(int(cursor.lastrowid))
        return ids

    def labels_after(self, model_id: int, label_seq: int) -> list[LabelRow]:
        rows = self.query(
            "SELECT id, window_id, model_id, label, labeled_by, at FROM labels"
            " WHERE model_id = ? AND id > ? AND id NOT IN (SELECT label_id FROM retractions) ORDER BY id",
            (model_id, label_seq),
        )
        return [LabelRow(**row) for row in rows]

    def labels_before(self, model_id: int, label_id: int) -> list[LabelRow]:
        """The model's labels accepted before ``label_id``, not retracted, the latest per window as of
        ``label_id`` (a window relabelled later, or by ``label_id`` itself, keeps only its newest
        label), oldest first: what rehearsal may draw from when that label is learned."""
        rows = self.query(
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

    def labels_pending(self) -> list[LabelRow]:
        """Accepted labels without an update row, in acceptance order."""
        rows = self.query(
            "SELECT l.id, l.window_id, l.model_id, l.label, l.labeled_by, l.at FROM labels l"
            " WHERE NOT EXISTS (SELECT 1 FROM updates u WHERE u.label_ids = '[' || l.id || ']')"
            " AND l.id NOT IN (SELECT label_id FROM retractions)"
            " ORDER BY l.id"
        )
        return [LabelRow(**row) for row in rows]

    def label(self, label_id: int) -> dict[str, Any] | None:
        """One label with its window's patient, the update that learned it and its retraction, if any."""
        return self.one(
            "SELECT l.id, l.window_id, l.model_id, l.label, l.labeled_by, l.at, w.patient_id, w.modality,"
            " u.seq AS update_seq, u.version_before, u.version_after, u.duration_s, u.joules, u.energy_source,"
            " r.id AS retraction_id"
            " FROM labels l JOIN windows w ON w.id = l.window_id"
            " LEFT JOIN updates u ON u.label_ids = '[' || l.id || ']'"
            " LEFT JOIN retractions r ON r.label_id = l.id WHERE l.id = ?",
            (label_id,),
        )

    def is_retracted(self, label_id: int) -> bool:
        return self.one("SELECT 1 AS x FROM retractions WHERE label_id = ?", (label_id,)) is not None

    def retractions(self, model_id: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, label_id, checkpoint_id, version_before, version_after FROM retractions"
            " WHERE model_id = ? ORDER BY id",
            (model_id,),
        )

    def insert_retraction(
        self,
        label: LabelRow,
        token_id: int | None,
        retracted_by: str,
        version_before: int,
        version_after: int,
        rebuilt_from: int | None,
        replayed: int,
        duration_s: float,
        checkpoint: NewCheckpoint | None,
        energy: EnergyRecord | None,
    ) -> dict[str, Any]:
        """Retract a label, with the checkpoint of the rebuilt model and its energy, in one transaction:
        no moment exists where the retraction is stored but the newest checkpoint still holds the label."""
        now = time.time()
        with self.transaction() as conn:
            checkpoint_id = None
            if checkpoint is not None:
                checkpoint_id = self._insert_checkpoint(
                    conn, label.model_id, checkpoint.version, checkpoint.label_seq, checkpoint.reason, checkpoint.blob
                )
            cursor = conn.execute(
                "INSERT INTO retractions (label_id, model_id, token_id, retracted_by, at, version_before,"
                " version_after, rebuilt_from, checkpoint_id, replayed, duration_s, joules, energy_source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    label.id, label.model_id, token_id, retracted_by, now, version_before, version_after,
                    rebuilt_from, checkpoint_id, replayed, duration_s,
                    energy.joules if energy else 0.0, energy.source if energy else None,
                ),
            )
            if energy is not None:
                self._insert_energy(conn, energy, now)
        return {"id": int(cursor.lastrowid), "checkpoint_id": checkpoint_id, "at": now}

    def has_update_for(self, label_id: int) -> bool:
        return self.one("SELECT 1 AS x FROM updates WHERE label_ids = ?", (json.dumps([label_id]),)) is not None

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
        now = time.time()
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO updates (model_id, version_before, version_after, label_ids, loss_per_layer,"
                " macs, duration_s, joules, energy_source, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model_id, version_before, version_after, json.dumps(list(label_ids)),
                    json.dumps([float(x) for x in loss_per_layer]), int(macs), duration_s,
                    energy.joules, energy.source, now,
                ),
            )
            self._insert_energy(conn, energy, now)
        return int(cursor.lastrowid)

    def insert_checkpoint(self, model_id: int, version: int, label_seq: int, reason: str, blob: bytes) -> int:
        with self.transaction() as conn:
            return self._insert_checkpoint(conn, model_id, version, label_seq, reason, blob)

    @staticmethod
    def _insert_checkpoint(
        conn: sqlite3.Connection, model_id: int, version: int, label_seq: int, reason: str, blob: bytes
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO checkpoints (model_id, version, label_seq, reason, blob, sha256, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model_id, version, label_seq, reason, blob, hashlib.sha256(blob).hexdigest(), time.time()),
        )
        return int(cursor.lastrowid)

    def checkpoints(self, model_id: int, with_blob: bool = False) -> list[dict[str, Any]]:
        """Newest first. The newest row is the base the durability invariant replays from."""
        columns = "id, model_id, version, label_seq, reason, sha256, at" + (", blob" if with_blob else "")
        return self.query(
            f"SELECT {columns} FROM checkpoints WHERE model_id = ? ORDER BY id DESC", (model_id,)
        )

    # Metrics ---------------------------------------------------------------------------------

    def prequential(self, model_id: int) -> list[dict[str, Any]]:
        """Per labelled window: the prediction made before any label, and the latest label."""
        return self.query(
            "SELECT p.class AS predicted, l.label FROM predictions p"
            " JOIN windows w ON w.id = p.window_id"
            f" JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            " WHERE w.model_id = ?",
            (model_id,),
        )

    def prequential_trend(self, model_id: int) -> list[dict[str, Any]]:
        """The same pairs as ``prequential``, in the order their labels were given."""
        return self.query(
            "SELECT l.label_id, l.window_id, l.at, l.label, p.class AS predicted FROM predictions p"
            " JOIN windows w ON w.id = p.window_id"
            f" JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id"
            " WHERE w.model_id = ? ORDER BY l.label_id",
            (model_id,),
        )

    def window_counts(self) -> dict[int, dict[str, int]]:
        """Per model: windows stored, windows with a label in force, and labels retracted."""
        rows = self.query(
            "SELECT w.model_id, COUNT(*) AS windows, COUNT(l.window_id) AS labelled,"
            " (SELECT COUNT(*) FROM retractions r WHERE r.model_id = w.model_id) AS retracted"
            f" FROM windows w LEFT JOIN {EFFECTIVE_LABELS} l ON l.window_id = w.id GROUP BY w.model_id"
        )
        return {row.pop("model_id"): row for row in rows}

    def count_updates(self, model_id: int) -> int:
        row = self.one("SELECT COUNT(*) AS n FROM updates WHERE model_id = ?", (model_id,))
        return int(row["n"]) if row else 0

    # Energy ----------------------------------------------------------------------------------

    def insert_energy(self, energy: EnergyRecord) -> None:
        with self.transaction() as conn:
            self._insert_energy(conn, energy, time.time())

    @staticmethod
    def _insert_energy(conn: sqlite3.Connection, energy: EnergyRecord, at: float) -> None:
        conn.execute(
            "INSERT INTO energy (at, phase, model_id, n, duration_s, joules, source, rail, total)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, energy.phase, energy.model_id, energy.n, energy.duration_s, energy.joules,
             energy.source, energy.rail, energy.total),
        )
