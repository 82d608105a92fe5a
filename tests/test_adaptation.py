"""The per-patient adaptation policy: rehearsal, determinism across restarts, one policy everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from app.base_models import load_bases
from app.energy import detect_meter
from app.registry import Registry
from app.store import LabelRow, Store, WindowRecord
from bench import eval_ecg, eval_eeg
from bench.datasets import beats, crop_windows
from models import checkpoint
from models.adaptation import PATIENT_POLICY, Rehearsal
from signals.aami import AAMI_CLASSES

PATIENT = "mitdb-208"
BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_draws_are_class_balanced_and_a_function_of_the_sequence_number() -> None:
    """A rare class among many common ones is drawn about as often as the common one."""
    policy = Rehearsal(rehearse=2, seed=0)
    history = [0] * 200 + [2] * 3
    draws = [policy.draw(seq, history) for seq in range(1, 2001)]
    assert draws == [policy.draw(seq, history) for seq in range(1, 2001)]
    assert draws != [Rehearsal(rehearse=2, seed=1).draw(seq, history) for seq in range(1, 2001)]
    classes = np.array([history[p] for picks in draws for p in picks])
    assert classes.size == 4000 and 0.45 < np.mean(classes == 2) < 0.55
    assert policy.draw(7, []) == [] and Rehearsal(rehearse=0).draw(7, history) == []


def _weights(learner) -> dict[str, np.ndarray]:
    state = checkpoint.loads(learner.dumps()).state_dict()
    return {k: v.numpy().copy() for k, v in state.items() if hasattr(v, "numpy")}


@pytest.fixture()
def ecg_world(tmp_path: Path):
    """The bundled ECG base, a store holding the first 3 minutes of record 208's beats as windows."""
    torch.set_num_threads(1)
    store = Store(tmp_path / "biofo.db")
    meter = detect_meter("estimate")
    bases = {"ecg": load_bases()["ecg"]}
    registry = Registry(store, bases, meter, checkpoint_every=7, engine="torch")
    live = registry.get_or_fork("ecg", PATIENT)
    table = beats("208")
    early = np.flatnonzero(table.time_s < 180.0)
    records = [
        WindowRecord(float(table.time_s[i]), np.zeros((2, 4), np.float32), None, table.X[i], "N",
                     {c: 0.2 for c in AAMI_CLASSES}, 0, 0.0)
        for i in early
    ]
    ids = store.insert_windows(live.row, 360.0, ["MLII", "V1"], 0.0, records, {}, None)
    labels = [AAMI_CLASSES[int(table.y[i])] for i in early]
    yield store, registry, bases, ids, labels, meter
    meter.close()
    store.close()


def _label(store: Store, model_id: int, window_id: int, label: str) -> LabelRow:
    (label_id,) = store.insert_labels([(window_id, model_id, label, "dr test", None)])
    return LabelRow(label_id, window_id, model_id, label, "dr test", 0.0)


def test_rehearsal_replays_bit_identically_after_a_restart(ecg_world) -> None:
    """Real beats of record 208 (N and V) labelled one by one, a relabel among them: a daemon that
    restarts from its newest checkpoint and replays the later labels, rehearsal included, ends
    with exactly the weights of the one that never stopped."""
    store, registry, bases, ids, labels, meter = ecg_world
    live = registry.get("ecg", PATIENT)
    given = [_label(store, live.row.id, ids[k], labels[k]) for k in range(0, 60, 2)]
    given.append(_label(store, live.row.id, ids[0], "S"))  # a relabel: the newest label wins
    rehearsed = []
    for label in given:
        registry.apply(label)
        history = store.labels_before(live.row.id, label.id)
        rehearsed += [history[p].id for p in PATIENT_POLICY.draw(label.id, [AAMI_CLASSES.index(h.label) for h in history])]
    assert live.learner.version == len(given)
    assert {"N", "V"} <= set(labels[:60:2])
    assert given[0].id not in store_ids(store.labels_before(live.row.id, given[-1].id + 1))
    assert len(rehearsed) == PATIENT_POLICY.rehearse * (len(given) - 1) > 0
    newest = registry.checkpoints(live)[0]  # the periodic one after the 28th label; 3 labels follow it
    assert 0 < newest["applied_seq"] < given[-1].id
    expected = _weights(live.learner)

    restarted = Registry(store, bases, meter, checkpoint_every=7, engine="torch")
    replayed = restarted.restore()
    assert replayed == sum(1 for label in given if label.id > newest["applied_seq"]) > 0
    again = restarted.get("ecg", PATIENT).learner
    assert again.version == live.learner.version
    got = _weights(again)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])

    # Rehearsal is part of what was replayed: the same labels without it give other weights.
    plain = Registry(store, bases, meter, checkpoint_every=7, engine="torch", policy=Rehearsal(rehearse=0))
    plain.restore()
    assert any(not np.array_equal(_weights(plain.get("ecg", PATIENT).learner)[n], expected[n]) for n in expected)


def store_ids(rows: list[LabelRow]) -> set[int]:
    return {row.id for row in rows}


def test_the_registry_and_the_evaluation_call_the_same_policy_object(ecg_world, monkeypatch) -> None:
    """Every update the registry, ``biofo eval ecg`` and ``biofo eval eeg`` make goes through
    ``PATIENT_POLICY.learn``; a benchmark that built its own policy, or learned around it, fails here."""
    store, registry, _, ids, labels, _ = ecg_world
    callers: list[tuple[str, object]] = []
    original = Rehearsal.learn
    where = {"who": "registry"}

    def spy(self, *args, **kwargs):
        callers.append((where["who"], self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Rehearsal, "learn", spy)
    live = registry.get("ecg", PATIENT)
    for k in range(5):
        registry.apply(_label(store, live.row.id, ids[k], labels[k]))
    assert registry.policy is PATIENT_POLICY

    where["who"] = "eval"
    table = beats("233")
    first = np.flatnonzero(table.time_s < 20.0)
    learner = eval_ecg.fork(eval_ecg.bundled_base(), "torch")
    eval_ecg.adapt(learner, table.X[first], table.y[first], table.X[first])

    where["who"] = "eval eeg"
    crops = crop_windows(["chb02"])
    rows = eval_eeg._order(crops, crops.patient == "chb02")[:12]
    learner = eval_eeg.adapted_fork(load_bases()["eeg"].checkpoint, "biofo", crops, rows)
    assert learner.version == rows.size
    assert [who for who, _ in callers] == ["registry"] * 5 + ["eval"] * first.size + ["eval eeg"] * rows.size
    assert all(policy is PATIENT_POLICY for _, policy in callers)
    # Nothing under bench/ constructs a policy of its own.
    for path in BENCH.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Rehearsal":
                raise AssertionError(f"{path.name} builds its own adaptation policy")
