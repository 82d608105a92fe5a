"""Models leave memory when idle or over the resident bound and come back exactly on their next use."""

from __future__ import annotations

import gc
import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from app.base_models import load_bases
from app.energy import detect_meter
from app.registry import Registry
from app.store import LabelRow, Store, WindowRecord
from bench.datasets import beats
from models.archive import unpack
from signals.aami import AAMI_CLASSES
from signals.replay import ecg_reference, ecg_requests
from tests.conftest import start_daemon

RECORDS = ("208", "119", "203")  # N with many V (208, 119), and an irregular rhythm (203)


def _windows(store: Store, registry: Registry, record: str) -> tuple[int, list[int], list[str]]:
    """Record ``record``'s first 2 minutes of real beats stored as one patient's windows."""
    live = registry.get_or_fork("ecg", f"mitdb-{record}")
    table = beats(record)
    early = np.flatnonzero(table.time_s < 120.0)
    records = [
        WindowRecord(float(table.time_s[i]), np.zeros((2, 4), np.float32), None, table.X[i], "N",
                     {c: 0.2 for c in AAMI_CLASSES}, 0, 0.0)
        for i in early
    ]
    ids = store.insert_windows(live.row, 360.0, ["MLII", "V1"], 0.0, records, {}, None)
    return live.row.id, ids, [AAMI_CLASSES[int(table.y[i])] for i in early]


def _run(tmp_path: Path, name: str, max_resident: int | None) -> tuple[Registry, dict[str, bytes], Store]:
    """Three patients labelled in turn (three beats each, twelve rounds) on one registry."""
    torch.set_num_threads(1)
    store = Store(tmp_path / f"{name}.db")
    registry = Registry(store, {"ecg": load_bases()["ecg"]}, detect_meter("estimate"), checkpoint_every=50,
                        engine="torch", max_resident=max_resident)
    patients = [_windows(store, registry, record) for record in RECORDS]
    for round_, (model_id, ids, labels) in itertools.product(range(12), patients):
        for k in range(3 * round_, 3 * round_ + 3):
            (label_id,) = store.insert_labels([(ids[k], model_id, labels[k], "dr test", None)])
            registry.apply(LabelRow(label_id, ids[k], model_id, labels[k], "dr test", 0.0))
    weights = {}
    for live in registry.all():
        with registry.using(live) as learner:
            weights[live.row.patient_id] = learner.dumps()
    return registry, weights, store


def test_evicted_models_come_back_bit_identical(tmp_path: Path) -> None:
    """With room for one model, every label of another patient evicts the last one (checkpointed) and
    loads the next (checkpoint + replay): the weights end bit-identical to a registry that kept all."""
    bounded, evicting, store = _run(tmp_path, "bounded", max_resident=1)
    _, keeping, _ = _run(tmp_path, "unbounded", max_resident=None)
    assert evicting.keys() == keeping.keys() == {f"mitdb-{r}" for r in RECORDS}
    for patient in keeping:
        assert evicting[patient] == keeping[patient], patient
    assert bounded.evictions >= 3 * 12 - 1 and len(bounded.resident()) == 1
    reasons = {c["reason"] for live in bounded.all() for c in store.checkpoints(live.row.id)}
    assert "evicted" in reasons


def test_an_evicted_model_is_described_without_loading_it(tmp_path: Path) -> None:
    registry, _, store = _run(tmp_path, "bounded", max_resident=1)
    evicted = [live for live in registry.all() if not live.resident]
    assert len(evicted) == 2
    loads = registry.loads
    for live in evicted:
        summary = registry.prequential_summary(live)
        assert summary["n"] == 36 and live.version == 36 and live.applied_seq == store.newest_label_seq(live.row.id)
    assert registry.loads == loads and not any(live.resident for live in evicted)


def test_idle_models_are_evicted_and_restart_loads_only_the_most_recent(tmp_path: Path) -> None:
    registry, weights, store = _run(tmp_path, "idle", max_resident=None)
    registry.idle_s = 60.0
    newest = max(registry.all(), key=lambda live: live.last_used)
    assert registry.evict_idle(now=newest.last_used + 30.0) == 0
    assert registry.evict_idle(now=newest.last_used + 61.0) == 3 and not registry.resident()
    registry.close()

    restarted = Registry(store, {"ecg": load_bases()["ecg"]}, detect_meter("estimate"), checkpoint_every=50,
                         engine="torch", max_resident=1)
    assert restarted.restore() == 0  # eviction checkpointed every model: nothing to replay
    assert len(restarted.resident()) == 1
    for live in restarted.all():
        with restarted.using(live) as learner:
            assert learner.dumps() == weights[live.row.patient_id]
        assert len(restarted.resident()) == 1


def _stream_two_records(daemon) -> tuple[list, dict[str, int], dict[str, bytes], list[dict]]:
    """Records 208 and 119 streamed in turn, one minute each, one reference label per segment applied
    before the next segment (so every prediction is made by a known model version)."""
    with daemon.client() as api:
        bodies = {r: list(ecg_requests(r, minutes=1.0)) for r in RECORDS[:2]}
        references = {r: ecg_reference(r) for r in RECORDS[:2]}
        predictions = []
        for pair in zip(*bodies.values()):
            for record, body in zip(RECORDS, pair):
                windows = api.post_segment(body)
                predictions += [(w["id"], w["predicted"], w["model_version"]) for w in windows]
                first = next(w for w in windows if references[record].label_at(w["offset_s"]) is not None)
                accepted = api.post_labels([{"window_id": first["id"], "labeled_by": "dr test",
                                             "label": references[record].label_at(first["offset_s"])}])
                api.wait_applied("ecg", f"mitdb-{record}", accepted.update_seq)
        versions = {r: api.model("ecg", f"mitdb-{r}")["version"] for r in RECORDS[:2]}
        onnx = {r: api.get(f"/v1/models/ecg/mitdb-{r}/onnx").content for r in RECORDS[:2]}
        checkpoints = [c for r in RECORDS[:2]
                       for c in api.get(f"/v1/models/ecg/mitdb-{r}/checkpoints").json()["checkpoints"]]
    return predictions, versions, onnx, checkpoints


def test_a_daemon_with_room_for_one_model_answers_and_learns_as_one_without_a_bound(tmp_path: Path) -> None:
    """The same two streams into a daemon that may keep one model in memory and one that keeps both:
    the same predictions and the same models, and the bounded one wrote eviction checkpoints."""
    runs = []
    for name, env in (("bounded", {"BIOFO_MAX_RESIDENT_MODELS": "1"}), ("unbounded", {})):
        daemon = start_daemon(tmp_path / f"{name}.db", tmp_path / f"{name}.log", env)
        try:
            runs.append(_stream_two_records(daemon))
        finally:
            daemon.close()
    (bounded_predictions, bounded_versions, bounded_onnx, bounded_checkpoints), (predictions, versions, onnx, checkpoints) = runs
    assert versions == {r: 6 for r in RECORDS[:2]}
    assert bounded_predictions == predictions and bounded_versions == versions and bounded_onnx == onnx
    assert any(c["reason"] == "evicted" for c in bounded_checkpoints)
    assert not any(c["reason"] == "evicted" for c in checkpoints)


def test_checkpoints_load_concurrently_without_the_ast_race() -> None:
    """Models reloaded on many threads at once: numpy's header parsing goes through CPython's AST
    builder, whose shared depth counter made ~1.6 % of such loads fail on 16 threads before
    ``models.archive`` serialised them. A tight switch interval and frequent garbage collection
    (finalizers run Python code mid-parse) make the interleaving likely within the test."""
    blobs = [base.checkpoint for base in load_bases().values()]

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            sum(range(200))

    def load(n: int) -> str | None:
        try:
            for _ in range(3):
                [Cycle() for _ in range(30)]
            return None if unpack(blobs[n % len(blobs)]).arrays else "empty archive"
        except SystemError as error:
            return repr(error)

    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(5, 1, 1)
    try:
        with ThreadPoolExecutor(16) as pool:
            failures = [f for f in pool.map(load, range(800)) if f is not None]
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
    assert failures == [], failures[:3]


def test_a_label_counts_as_applied_only_once_its_update_row_is_stored(tmp_path: Path) -> None:
    """A reader that sees ``applied_seq`` reach a label must find that label's update row: the
    registry publishes the sequence number after the row commits, not before."""
    store = Store(tmp_path / "order.db")
    registry = Registry(store, {"ecg": load_bases()["ecg"]}, detect_meter("estimate"), checkpoint_every=50,
                        engine="torch")
    model_id, ids, labels = _windows(store, registry, "208")
    live = registry.by_id(model_id)
    seen_while_writing: list[int] = []
    insert_update = store.insert_update

    def observed(*args, **kwargs):
        seen_while_writing.append(live.applied_seq)
        return insert_update(*args, **kwargs)

    store.insert_update = observed  # type: ignore[method-assign]
    label_ids = []
    for k in range(3):
        (label_id,) = store.insert_labels([(ids[k], model_id, labels[k], "dr test", None)])
        registry.apply(LabelRow(label_id, ids[k], model_id, labels[k], "dr test", 0.0))
        label_ids.append(label_id)
    assert seen_while_writing == [0, *label_ids[:-1]]  # each row written before its label counts
    assert live.applied_seq == label_ids[-1] and store.count_updates(model_id) == 3
    store.close()
