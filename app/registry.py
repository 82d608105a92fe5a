"""Live per-patient models: fork from a base, learn from labels in order, checkpoint, restore.

Durability invariant: a model's state is its newest checkpoint plus the replay, in acceptance order,
of every label of that model accepted after the checkpoint (``applied_seq``). Every label, live or
replayed, is learned by the one adaptation policy (``models.adaptation.PATIENT_POLICY``: the label's
update plus rehearsal of the patient's earlier labels drawn from a generator seeded by the label's
sequence number) from the features stored with the windows, so a restart after ``kill -9``
reproduces the weights of a run that never crashed, bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from app.base_models import BaseModel
from app.checkpoint_writer import CheckpointWriter
from app.energy import Meter
from app.engine import Engine, load_learner
from app.prequential import PrequentialTally
from app.store import EnergyRecord, LabelRow, ModelRow, NewCheckpoint, Store
from models.adaptation import PATIENT_POLICY, Adapted, Rehearsal

log = logging.getLogger("biofo.registry")



class UnknownCheckpoint(LookupError):
    """No checkpoint of this model holds the requested version."""


class AlreadyRetracted(ValueError):
    """The label was retracted before."""


class PredatesRollback(ValueError):
    """The label was given before the model's newest rollback, which already decided what it keeps."""

    def __init__(self, label_id: int, checkpoint: dict):
        super().__init__(
            f"label {label_id} predates the rollback recorded in checkpoint {checkpoint['id']}"
            f" ({checkpoint['reason']}); only labels given after the newest rollback can be undone"
        )


@dataclass
class LiveModel:
    """A patient's model. Its weights (``learner``) and prequential tally are in memory while the model
    is resident and ``None`` once it is evicted; the rest stays, so listing patients loads no weights.
    ``learner`` is read and changed under ``lock`` only, through ``Registry.using`` or the registry."""

    row: ModelRow
    classes: tuple[str, ...]
    learner: Engine | None
    applied_seq: int
    prequential: PrequentialTally | None
    saved_version: int  # the version of the newest checkpoint, what ``version`` is while evicted
    updates_since_checkpoint: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def resident(self) -> bool:
        return self.learner is not None

    @property
    def version(self) -> int:
        return self.learner.version if self.learner is not None else self.saved_version


@dataclass(frozen=True)
class Retraction:
    id: int
    label_id: int
    version_before: int
    version_after: int
    rebuilt_from_version: int | None  # None: the label had not been learned, nothing to rebuild
    replayed: int
    duration_s: float
    joules: float
    energy_source: str | None


@dataclass(frozen=True)
class AppliedUpdate:
    model_id: int
    label_id: int
    version_before: int
    version_after: int
    duration_s: float
    joules: float


class Registry:
    """Every patient's model, the weights of at most ``max_resident`` of them in memory.

    A model whose patient sent nothing for ``idle_s`` seconds, or the least recently used one when a
    new model would exceed ``max_resident``, is evicted: a checkpoint is written if it learned since the
    last one, and its weights and tally leave memory. Its next use loads it back by the durability
    invariant (newest checkpoint + replay), so an evicted model comes back bit for bit.
    """

    def __init__(
        self, store: Store, bases: dict[str, BaseModel], meter: Meter, checkpoint_every: int, engine: str,
        policy: Rehearsal = PATIENT_POLICY, max_resident: int | None = None, idle_s: float | None = None,
    ):
        self.store = store
        self.policy = policy
        self.bases = bases
        self.meter = meter
        self.checkpoint_every = checkpoint_every
        self.engine = engine
        self.max_resident = max_resident
        self.idle_s = idle_s
        self._models: dict[int, LiveModel] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._classes: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.writer = CheckpointWriter(store)
        self.evictions = 0
        self.loads = 0

    def close(self) -> None:
        """Write the periodic checkpoints still queued."""
        self.writer.close()

    # Lookup and fork ---------------------------------------------------------------------------

    def get(self, modality: str, patient_id: str) -> LiveModel | None:
        with self._lock:
            model_id = self._keys.get((modality, patient_id))
            return self._models.get(model_id) if model_id is not None else None

    def by_id(self, model_id: int) -> LiveModel:
        with self._lock:
            return self._models[model_id]

    def all(self) -> list[LiveModel]:
        with self._lock:
            return list(self._models.values())

    def get_or_fork(self, modality: str, patient_id: str) -> LiveModel:
        """The patient's model; the first window of a new patient forks the modality's base model."""
        live = self.get(modality, patient_id)
        if live is not None:
            return live
        with self._lock:
            model_id = self._keys.get((modality, patient_id))
            if model_id is not None:
                return self._models[model_id]
            base = self.bases[modality]
            learner = fork(base.checkpoint, self.engine)
            row = self.store.create_model(
                modality, patient_id, base.name, base.rule, learner.dumps(), learner.version
            )
            classes = tuple(learner.classes)
            live = LiveModel(row=row, classes=classes, learner=learner, applied_seq=0,
                             prequential=PrequentialTally(classes), saved_version=learner.version)
            self._register(live)
        self.make_room(keep=live)
        return live

    def _register(self, live: LiveModel) -> None:
        self._models[live.row.id] = live
        self._keys[(live.row.modality, live.row.patient_id)] = live.row.id

    def resident(self) -> list[LiveModel]:
        with self._lock:
            return [live for live in self._models.values() if live.resident]

    @contextmanager
    def using(self, live: LiveModel) -> Iterator[Engine]:
        """The model's learner, loaded if it was evicted, held under the model's lock."""
        with live.lock:
            yield self._ensure_resident(live)
        self.make_room(keep=live)

    def _ensure_resident(self, live: LiveModel) -> Engine:
        """The model's learner, loaded first if it was evicted (caller holds ``live.lock``)."""
        live.last_used = time.monotonic()
        if live.learner is None:
            self._load(live)
        assert live.learner is not None
        return live.learner

    def _load(self, live: LiveModel) -> int:
        """Newest readable checkpoint + replay of the labels after it; returns how many were replayed."""
        learner, applied_seq = self._load_newest_checkpoint(live.row)
        live.learner, live.applied_seq, live.updates_since_checkpoint = learner, applied_seq, 0
        live.prequential = self._tally(live.row, live.classes)
        self.loads += 1
        pending = self.store.labels_after(live.row.id, applied_seq)
        for label in pending:
            self._learn(live, label, record=not self.store.has_update_for(label.id))
        return len(pending)

    def _tally(self, row: ModelRow, classes: tuple[str, ...]) -> PrequentialTally:
        tally = PrequentialTally(classes)
        for pair in self.store.prequential(row.id):
            tally.update(pair["window_id"], pair["label"], pair["predicted"])
        return tally

    def note_label(self, model_id: int, window_id: int, label: str, predicted: str) -> None:
        """Count a new label in force in the model's prequential tally (an evicted model recounts on load)."""
        tally = self.by_id(model_id).prequential
        if tally is not None:
            tally.update(window_id, label, predicted)

    def prequential_summary(self, live: LiveModel) -> dict:
        tally = live.prequential
        return (tally if tally is not None else self._tally(live.row, live.classes)).summary()

    # Eviction ----------------------------------------------------------------------------------

    def make_room(self, keep: LiveModel | None = None) -> int:
        """Evict least recently used models until at most ``max_resident`` are resident; returns how many."""
        if self.max_resident is None:
            return 0
        with self._lock:
            resident = [m for m in self._models.values() if m.resident]
        excess = len(resident) - self.max_resident
        if excess <= 0:
            return 0
        resident.sort(key=lambda m: m.last_used)
        return sum(self._evict(live) for live in [m for m in resident if m is not keep][:excess])

    def evict_idle(self, now: float | None = None) -> int:
        """Evict every model not used for ``idle_s`` seconds; returns how many."""
        if self.idle_s is None:
            return 0
        cutoff = (time.monotonic() if now is None else now) - self.idle_s
        return sum(self._evict(live) for live in self.resident() if live.last_used < cutoff)

    def _evict(self, live: LiveModel) -> bool:
        """Drop a model's weights from memory after checkpointing what it learned; a model in use is kept."""
        if not live.lock.acquire(blocking=False):
            return False
        try:
            if live.learner is None:
                return False
            if live.updates_since_checkpoint:
                self._checkpoint(live, "periodic", "evicted")
            live.saved_version = live.learner.version
            live.learner, live.prequential = None, None
            self.evictions += 1
            return True
        finally:
            live.lock.release()

    # Restore -----------------------------------------------------------------------------------

    def restore(self) -> int:
        """Register every stored model and load the ``max_resident`` most recently active ones (newest
        readable checkpoint plus the labels after it); the others load on first use. Returns the number
        of labels replayed."""
        replayed = 0
        now = time.monotonic()  # the most recently active model counts as the most recently used
        rows = self.store.models_by_activity()
        for n, row in enumerate(rows):
            newest = self.store.checkpoints(row.id)[0]
            live = LiveModel(row=row, classes=self._base_classes(row.modality), learner=None,
                             applied_seq=int(newest["applied_seq"]), prequential=None,
                             saved_version=int(newest["version"]), last_used=now - n * 1e-6)
            with self._lock:
                self._register(live)
            if self.max_resident is None or n < self.max_resident:
                with live.lock:
                    replayed += self._load(live)
        return replayed

    def _base_classes(self, modality: str) -> tuple[str, ...]:
        if modality not in self._classes:
            self._classes[modality] = tuple(fork(self.bases[modality].checkpoint, self.engine).classes)
        return self._classes[modality]

    def _load_newest_checkpoint(self, row: ModelRow) -> tuple[Engine, int]:
        for meta in self.store.checkpoints(row.id):
            learner = self._load_checkpoint(meta)
            if learner is not None:
                return learner, int(meta["applied_seq"])
        raise RuntimeError(f"model {row.modality}/{row.patient_id} has no readable checkpoint")

    def _load_checkpoint(self, meta: dict) -> Engine | None:
        """The learner a checkpoint row holds, or None (logged) if it is corrupt or will not load."""
        blob = self.store.checkpoint_blob(meta["id"])
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            log.error("checkpoint %s of model %s is corrupt (sha256 mismatch); trying the previous one",
                      meta["id"], meta["model_id"])
            return None
        try:
            return load_learner(blob, self.engine)
        except Exception as error:  # a checkpoint that will not load must not stop the daemon
            log.error("checkpoint %s of model %s does not load (%s); trying the previous one",
                      meta["id"], meta["model_id"], error)
            return None

    # Learning ----------------------------------------------------------------------------------

    def apply(self, label: LabelRow) -> AppliedUpdate | None:
        """Apply one accepted label as one forward-only update; skip labels a rollback set aside and
        labels retracted before they were learned (and labels an evicted model learned as it loaded)."""
        live = self.by_id(label.model_id)
        with live.lock:
            self._ensure_resident(live)
            if label.id <= live.applied_seq or self.store.is_retracted(label.id):
                update = None
            else:
                update = self._learn(live, label, record=True)
                if live.updates_since_checkpoint >= self.checkpoint_every:
                    self.writer.submit(live.row.id, self._snapshot(live, "periodic"))
                    live.updates_since_checkpoint = 0
        self.make_room(keep=live)
        return update

    def _example(self, label: LabelRow, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The stored features of the label's window and the class index: what one update learns."""
        x = self.store.features(label.window_id)[None, :]
        return x, np.array([classes.index(label.label)], dtype=np.int64)

    def _adapt(
        self, learner: Engine, label: LabelRow, classes: tuple[str, ...], retracting: frozenset[int] = frozenset()
    ) -> Adapted:
        """The policy's updates for one label: its own, then rehearsal of the patient's earlier labels
        (without ``retracting``, the labels an undo is rebuilding the model without)."""
        x, y = self._example(label, classes)
        history = [h for h in self.store.labels_before(label.model_id, label.id) if h.id not in retracting]
        return self.policy.learn(
            learner, x, y, label.id, [classes.index(h.label) for h in history],
            lambda picks: self.store.features_of([history[p].window_id for p in picks]),
        )

    def _learn(self, live: LiveModel, label: LabelRow, record: bool) -> AppliedUpdate:
        """Learn one label on a resident model (caller holds ``live.lock``)."""
        assert live.learner is not None
        before = live.learner.version
        with self.meter.measure() as measurement:
            stats = self._adapt(live.learner, label, live.classes)
        live.updates_since_checkpoint += 1
        energy = EnergyRecord(
            phase="update", model_id=live.row.id, n=1, duration_s=measurement.duration_s,
            joules=measurement.joules, source=measurement.source, rail=measurement.rail,
            total=self.meter.total,
        )
        try:
            if record:
                self.store.insert_update(
                    live.row.id, before, live.learner.version, [label.id], stats.loss_per_layer,
                    stats.macs, stats.seconds, energy,
                )
        finally:
            # Published once the update row is committed, so a reader that sees the label applied
            # also finds its update; and also if the row cannot be written, as the weights learned it.
            live.applied_seq = label.id
        return AppliedUpdate(live.row.id, label.id, before, live.learner.version,
                             stats.seconds, measurement.joules)

    # Checkpoints and rollback ------------------------------------------------------------------

    def checkpoints(self, live: LiveModel) -> list[dict]:
        """The model's checkpoints, newest first, including every periodic one already due."""
        self.writer.flush()
        return self.store.checkpoints(live.row.id)

    @staticmethod
    def _snapshot(live: LiveModel, kind: str, reason: str | None = None) -> NewCheckpoint:
        assert live.learner is not None
        return NewCheckpoint(live.learner.version, live.applied_seq, kind, reason or kind, live.learner.dumps())

    def _checkpoint(self, live: LiveModel, kind: str, reason: str | None = None) -> int:
        self.writer.flush()
        checkpoint_id = self.store.insert_checkpoint(live.row.id, self._snapshot(live, kind, reason))
        live.updates_since_checkpoint = 0
        return checkpoint_id

    def checkpoint_all(self, kind: str) -> int:
        written = 0
        for live in self.resident():
            with live.lock:
                if live.learner is not None and live.updates_since_checkpoint:
                    self._checkpoint(live, kind)
                    written += 1
        return written

    def rollback(self, live: LiveModel, version: int, replay_later_labels: bool) -> int:
        """Restore the newest checkpoint at ``version`` as a new, higher version; return it.

        Labels accepted after that checkpoint stay stored. With ``replay_later_labels`` they are
        learned again on top, in order; without, the new checkpoint's ``applied_seq`` covers them so a
        restart does not learn them either.
        """
        with live.lock:
            current = self._ensure_resident(live)
            target = next((c for c in self.checkpoints(live) if c["version"] == version), None)
            if target is None:
                raise UnknownCheckpoint(version)
            newest_label = self.store.newest_label_seq(live.row.id)
            restored = load_learner(self.store.checkpoint_blob(target["id"]), self.engine)
            restored.version = current.version + 1
            live.learner = restored
            live.applied_seq = int(target["applied_seq"]) if replay_later_labels else int(newest_label)
            self._checkpoint(live, "rollback", f"rollback to {version}")
            if replay_later_labels:
                for label in self.store.labels_after(live.row.id, live.applied_seq):
                    self._learn(live, label, record=True)
            return restored.version

    # Retraction (undo) ---------------------------------------------------------------------------

    def retract(self, label: LabelRow, token_id: int | None, retracted_by: str) -> Retraction:
        """Undo one label; see ``retract_group``."""
        return self.retract_group([label], token_id, retracted_by)[0]

    def retract_group(self, labels: Sequence[LabelRow], token_id: int | None, retracted_by: str) -> list[Retraction]:
        """Undo labels of one model given in one clinician action (a beat, or a whole template): afterwards
        the model is what it would be had they never been given.

        A forward-only update cannot be subtracted, so labels the model has learned are undone by
        rebuilding: the newest checkpoint taken before the first of them was learned, plus the in-order
        replay of every later label the model had learned, minus the retracted ones. The result is
        one new version; the retraction rows and the checkpoint of the rebuilt weights commit in one
        transaction, so "newest checkpoint + replay of the non-retracted labels after it" stays the
        model's state at every instant, across ``kill -9``. Labels not yet learned only need their
        retraction rows: the worker and every replay skip retracted labels.
        """
        live = self.by_id(labels[0].model_id)
        undone = frozenset(label.id for label in labels)
        with live.lock:
            before = self._ensure_resident(live).version
            for label in labels:
                if self.store.is_retracted(label.id):
                    raise AlreadyRetracted(f"label {label.id} is already retracted")
            self.writer.flush()
            learned = [label.id for label in labels if label.id <= live.applied_seq]
            if not learned:
                rows = self.store.insert_retraction(
                    labels, token_id, retracted_by, before, before, None, 0, 0.0, None, None
                )
                self._follow_labels_in_force(live, labels)
                return [Retraction(row["id"], label.id, before, before, None, 0, 0.0, 0.0, None)
                        for row, label in zip(rows, labels)]
            base, learner = self._rebuild_base(live, min(learned))
            replay = [
                later for later in self.store.labels_after(live.row.id, int(base["applied_seq"]))
                if later.id <= live.applied_seq and later.id not in undone
            ]
            with self.meter.measure() as measurement:
                for later in replay:
                    self._adapt(learner, later, live.classes, retracting=undone)
            learner.version = before + 1
            energy = EnergyRecord(
                phase="update", model_id=live.row.id, n=len(replay), duration_s=measurement.duration_s,
                joules=measurement.joules, source=measurement.source, rail=measurement.rail,
                total=self.meter.total,
            )
            what = f"label {labels[0].id}" if len(labels) == 1 else f"{len(labels)} labels from {labels[0].id}"
            checkpoint = NewCheckpoint(learner.version, live.applied_seq, "undo", f"undo {what}", learner.dumps())
            rows = self.store.insert_retraction(
                labels, token_id, retracted_by, before, learner.version, int(base["id"]), len(replay),
                measurement.duration_s, checkpoint, energy,
            )
            live.learner = learner
            live.updates_since_checkpoint = 0
            self._follow_labels_in_force(live, labels)
            return [
                Retraction(row["id"], label.id, before, learner.version, int(base["version"]), len(replay),
                           measurement.duration_s, measurement.joules, measurement.source)
                for row, label in zip(rows, labels)
            ]

    def _follow_labels_in_force(self, live: LiveModel, retracted: Sequence[LabelRow]) -> None:
        """After a retraction each window's prequential pair follows its label in force, if any is left."""
        tally = live.prequential
        assert tally is not None
        windows = self.store.windows_by_id([label.window_id for label in retracted])
        for label in retracted:
            in_force = self.store.label_in_force(label.window_id)
            if in_force is None:
                tally.revert(label.window_id)
            else:
                tally.update(label.window_id, in_force, windows[label.window_id]["predicted"])

    def _rebuild_base(self, live: LiveModel, label_id: int) -> tuple[dict, Engine]:
        """The newest readable checkpoint that does not contain the label and that a replay may start from.

        A checkpoint is skipped when it holds a label retracted after it was written. The search stops
        at a rollback: a rollback decided which labels its model keeps, so no replay may cross it.
        """
        retractions = self.store.retractions(live.row.id)
        for meta in self.store.checkpoints(live.row.id):
            is_rollback = meta["kind"] == "rollback"
            holds_label = meta["applied_seq"] >= label_id
            stale = any(
                r["checkpoint_id"] is not None and r["label_id"] <= meta["applied_seq"] and r["checkpoint_id"] > meta["id"]
                for r in retractions
            )
            if not holds_label and not stale:
                learner = self._load_checkpoint(meta)
                if learner is not None:
                    return meta, learner
            if is_rollback:
                raise PredatesRollback(label_id, meta)
        raise RuntimeError(f"model {live.row.modality}/{live.row.patient_id} has no checkpoint to rebuild from")


def fork(blob: bytes, engine: str) -> Engine:
    """A new patient's model: the base loaded afresh, at version 0."""
    learner = load_learner(blob, engine)
    learner.version = 0
    return learner
