"""Undoing a label: the model afterwards is the model that never learned it, bit for bit, also after
a restart; labels stay append-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.base_models import BaseModel
from app.energy import detect_meter
from app.engine import load_learner
from app.registry import AlreadyRetracted, PredatesRollback, Registry
from app.store import LabelRow, Store, WindowRecord
from models import checkpoint
from models.adaptation import PATIENT_POLICY
from models.factory import build_learner
from signals.chbmit import ictal_intervals, read_edf
from signals.datafiles import require
from signals.eeg_features import (
    EEG_CLASSES,
    EEG_FEATURE_DIM,
    EEG_WINDOW_S,
    EegStream,
    window_class,
    window_ictal_fraction,
)

# 93 s of chb01_21 from 60 s after the onset: ictal for 33 s, then post-ictal.
CROP = "chbmit/crops/after60/chb01_21_le.edf"
PATIENT = "chb01"


@pytest.fixture()
def world(tmp_path: Path):
    torch.set_num_threads(1)
    learner = build_learner(
        {"input_dim": EEG_FEATURE_DIM, "classes": list(EEG_CLASSES), "hidden": [32], "rule": "biofo", "seed": 3}
    )
    base = BaseModel("test-eeg", "eeg", "biofo", checkpoint.dumps(learner), {})
    store = Store(tmp_path / "biofo.db")
    meter = detect_meter("estimate")
    registry = Registry(store, {"eeg": base}, meter, checkpoint_every=3, engine="torch")
    live = registry.get_or_fork("eeg", PATIENT)
    edf = require(CROP)
    recording = read_edf(edf)
    windows = EegStream().push(recording.samples_uv, recording.fs, list(recording.channels), 0.0).windows
    records = [
        WindowRecord(w.offset_s, w.samples, None, w.features, "background", {"background": 1.0, "seizure": 0.0}, 0, 0.0)
        for w in windows
    ]
    ids = store.insert_windows(live.row, recording.fs, list(recording.labels), 0.0, records, {}, None)
    intervals = ictal_intervals(edf)
    truth = [EEG_CLASSES[window_class(window_ictal_fraction(intervals, w.offset_s, EEG_WINDOW_S))] for w in windows]
    yield store, registry, base, ids, truth, np.stack([w.features for w in windows])
    meter.close()
    store.close()


def _label(store: Store, registry: Registry, window_id: int, label: str) -> LabelRow:
    model_id = registry.get("eeg", PATIENT).row.id
    (label_id,) = store.insert_labels([(window_id, model_id, label, "dr test", None)])
    return LabelRow(label_id, window_id, model_id, label, "dr test", 0.0)


def _never_learned(base: BaseModel, store: Store, labels: list[LabelRow]) -> np.ndarray:
    """Weights of a model that learned only ``labels``, in order, from the fork, by the daemon's
    adaptation policy: each label's rehearsal draws only from the labels kept before it."""
    learner = load_learner(base.checkpoint, "torch")
    for k, label in enumerate(labels):
        earlier = labels[:k]
        PATIENT_POLICY.learn(
            learner, store.features(label.window_id)[None, :], np.array([EEG_CLASSES.index(label.label)]),
            label.id, [EEG_CLASSES.index(e.label) for e in earlier],
            lambda picks: store.features_of([earlier[p].window_id for p in picks]),
        )
    return learner


def test_undo_rebuilds_the_model_without_the_label(world) -> None:
    store, registry, base, ids, truth, features = world
    live = registry.get("eeg", PATIENT)
    labels = [_label(store, registry, ids[k * 5], truth[k * 5]) for k in range(8)]
    for label in labels:
        registry.apply(label)
    assert live.learner.version == 8

    # Label 5 of 8: rebuilt from the checkpoint after label 3, labels 4, 6, 7, 8 replayed.
    done = registry.retract(labels[4], None, "dr test")
    assert (done.version_before, done.version_after, done.rebuilt_from_version, done.replayed) == (8, 9, 3, 4)
    kept = labels[:4] + labels[5:]
    assert np.array_equal(live.learner.predict(features), _never_learned(base, store, kept).predict(features))

    # Label 7: the checkpoint after label 6 still holds label 5, so the rebuild starts after label 3 again.
    done = registry.retract(labels[6], None, "dr test")
    assert (done.rebuilt_from_version, done.replayed) == (3, 3)
    kept = labels[:4] + [labels[5], labels[7]]
    assert np.array_equal(live.learner.predict(features), _never_learned(base, store, kept).predict(features))

    # A label not learned yet needs no rebuild: the worker skips it.
    late = _label(store, registry, ids[1], truth[1])
    done = registry.retract(late, None, "dr test")
    assert (done.version_before, done.version_after, done.rebuilt_from_version) == (10, 10, None)
    assert registry.apply(late) is None and live.learner.version == 10

    with pytest.raises(AlreadyRetracted):
        registry.retract(labels[4], None, "dr test")
    assert store.db["labels"].count == 9  # append-only
    assert len(store.prequential(live.row.id)) == 6
    unlabelled = {row["id"] for row in store.queue(PATIENT, "eeg", False, "time", 1000)}
    assert {labels[4].window_id, labels[6].window_id, late.window_id} <= unlabelled

    # A restart rebuilds the same weights from the newest checkpoint and the labels in force.
    restarted = Registry(store, {"eeg": base}, registry.meter, checkpoint_every=3, engine="torch")
    restarted.restore()
    again = restarted.get("eeg", PATIENT).learner
    assert again.version == 10
    assert np.array_equal(again.predict(features), live.learner.predict(features))


def test_labels_before_a_rollback_cannot_be_undone(world) -> None:
    store, registry, _, ids, truth, _ = world
    live = registry.get("eeg", PATIENT)
    labels = [_label(store, registry, ids[k], truth[k]) for k in range(4)]
    for label in labels:
        registry.apply(label)
    registry.rollback(live, 3, replay_later_labels=False)
    with pytest.raises(PredatesRollback):
        registry.retract(labels[1], None, "dr test")
    assert not store.is_retracted(labels[1].id)
    newer = _label(store, registry, ids[10], truth[10])
    registry.apply(newer)
    assert registry.retract(newer, None, "dr test").rebuilt_from_version == live.learner.version - 2
