"""Retention on real records: what it drops, what it must keep, and that everything reading the
database still works (and says so) afterwards; ``biofo db stats`` / ``vacuum`` and ``bench soak`` as
a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from fastapi.testclient import TestClient

from app.base_models import BaseModel
from app.energy import detect_meter
from app.registry import Registry
from app.retention import Retention, RetentionPolicy
from app.server import _instance_lock, create_app
from app.settings import Settings
from app.store import LabelRow, Store, WindowRecord, stored_samples
from models import checkpoint
from models.factory import build_learner
from signals import replay
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

REPO = Path(__file__).resolve().parents[1]
BIOFO = str(Path(sys.executable).parent / "biofo")
CROP = "chbmit/crops/after60/chb01_21_le.edf"  # 93 s of chb01_21, ictal for the first 33 s
DAY_S = 86400.0
POLICY = RetentionPolicy(samples_hours=24.0, windows_hours=72.0, checkpoints=2, batch=7)


def _biofo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [BIOFO, *args], check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1.7e9

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def eeg_crop():
    edf = require(CROP)
    recording = read_edf(edf)
    windows = (
        EegStream().push(recording.samples_uv, recording.fs, list(recording.channels), 0.0).windows
    )
    intervals = ictal_intervals(edf)
    truth = [
        EEG_CLASSES[window_class(window_ictal_fraction(intervals, w.offset_s, EEG_WINDOW_S))]
        for w in windows
    ]
    return recording, windows, truth


def _world(
    path: Path, eeg_crop, clock: Clock
) -> tuple[Store, Registry, BaseModel, list[int], list[LabelRow]]:
    """A patient's EEG model that learned 10 labels (checkpoint every 2), was rolled back, learned 2 more
    and had one of those undone: every checkpoint kind is in the database."""
    recording, windows, truth = eeg_crop
    torch.set_num_threads(1)
    learner = build_learner(
        {
            "input_dim": EEG_FEATURE_DIM,
            "classes": list(EEG_CLASSES),
            "hidden": [32],
            "rule": "biofo",
            "seed": 3,
        }
    )
    base = BaseModel("test-eeg", "eeg", "biofo", checkpoint.dumps(learner), {})
    store = Store(path, clock)
    registry = Registry(
        store, {"eeg": base}, detect_meter("estimate"), checkpoint_every=2, engine="torch"
    )
    live = registry.get_or_fork("eeg", "chb01")
    records = [
        WindowRecord(
            w.offset_s,
            w.samples,
            None,
            w.features,
            "background",
            {"background": 1.0, "seizure": 0.0},
            0,
            0.0,
        )
        for w in windows
    ]
    ids = store.insert_windows(
        live.row, recording.fs, list(recording.labels), 0.0, records, {}, None
    )

    def label(k: int) -> LabelRow:
        (label_id,) = store.insert_labels([(ids[k], live.row.id, truth[k], "dr test", None)])
        row = LabelRow(label_id, ids[k], live.row.id, truth[k], "dr test", clock())
        registry.apply(row)
        return row

    labels = [label(3 * k) for k in range(10)]
    registry.rollback(live, 6, replay_later_labels=True)
    labels += [label(31), label(34), label(37)]
    registry.retract(labels[11], None, "dr test")
    registry.writer.flush()
    return store, registry, base, ids, labels


def test_retention_keeps_labelled_windows_and_rollback_targets_and_restores_exactly(
    tmp_path, eeg_crop
) -> None:
    _, windows, _ = eeg_crop
    features = np.stack([w.features for w in windows])
    clock, reference_clock = Clock(), Clock()
    store, registry, base, ids, labels = _world(tmp_path / "pruned.db", eeg_crop, clock)
    reference, reference_registry, _, _, reference_labels = _world(
        tmp_path / "kept.db", eeg_crop, reference_clock
    )
    live = registry.get("eeg", "chb01")
    kinds_before = [c["kind"] for c in store.checkpoints(live.row.id)]
    labelled = {label.window_id for label in labels}
    retention = Retention(store, POLICY)

    # A day and a bit later: unlabelled windows keep their features and predictions, not their samples.
    clock.now += DAY_S + 60
    done = retention.run_once()
    assert done.samples_dropped == len(ids) - len(labelled) and done.windows_deleted == 0
    assert done.transactions > len(ids) // POLICY.batch  # small transactions, not one big one
    for window_id in ids:
        row = store.window(window_id)
        assert (stored_samples(row) is None) == (window_id not in labelled)
        assert store.features(window_id).shape == (EEG_FEATURE_DIM,)
    assert retention.run_once().samples_dropped == 0  # nothing twice

    # Three days on: unlabelled windows are gone; labelled ones are whole.
    clock.now += 2 * DAY_S
    assert retention.run_once().windows_deleted == len(ids) - len(labelled)
    kept = store.windows_by_id(ids)
    assert set(kept) == labelled
    assert all(stored_samples(store.window(w)) is not None for w in labelled)

    # Checkpoints: fork, rollback and undo kept; of the periodic ones the newest two only.
    kinds_after = [c["kind"] for c in store.checkpoints(live.row.id)]
    assert kinds_before.count("periodic") > 2 and kinds_after.count("periodic") <= 2
    for kind in ("fork", "rollback", "undo"):
        assert kinds_after.count(kind) == kinds_before.count(kind) >= 1

    # A restart restores the model exactly (newest checkpoint + labels since).
    restarted = Registry(store, {"eeg": base}, registry.meter, checkpoint_every=2, engine="torch")
    restarted.restore()
    assert np.array_equal(
        restarted.get("eeg", "chb01").learner.predict(features), live.learner.predict(features)
    )

    # Undo after retention gives the weights of the same undo on a database nothing was pruned from.
    undone = registry.retract(labels[10], None, "dr test")
    expected = reference_registry.retract(reference_labels[10], None, "dr test")
    assert (undone.version_after, undone.rebuilt_from_version) == (
        expected.version_after,
        expected.rebuilt_from_version,
    )
    reference_live = reference_registry.get("eeg", "chb01")
    assert np.array_equal(live.learner.predict(features), reference_live.learner.predict(features))

    # Rollback to the fork (version 0) still works: the fork is a rollback target retention keeps.
    registry.rollback(live, 0, replay_later_labels=False)
    fork = Registry(
        Store(tmp_path / "fresh.db"), {"eeg": base}, registry.meter, 2, "torch"
    ).get_or_fork("eeg", "x")
    assert np.array_equal(live.learner.predict(features), fork.learner.predict(features))
    for world in (registry, reference_registry):
        world.close()
    store.close()
    reference.close()


def test_pages_exports_and_db_commands_after_retention(tmp_path) -> None:
    db = tmp_path / "biofo.db"
    clock = Clock()
    admin = "retention-admin-token-0123456789ab"
    settings = replace(
        Settings(db=db, admin_token=admin, workers=0),
        retain_samples_hours=1.0,
        retain_windows_hours=3.0,
        retain_every_s=3600.0,
    )
    patient, record = "mitdb-100", "100"
    reference = replay.ecg_reference(record)
    with TestClient(
        create_app(settings, clock),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {admin}"},
    ) as client:
        beats = [
            w
            for body in replay.ecg_requests(
                record, patient_id=patient, minutes=1.0, include_r_peaks=True
            )
            for w in client.post("/v1/windows", json=body).json()["windows"]
        ]
        chosen = [w for w in beats[5:40:7] if reference.label_at(w["offset_s"])]
        labels = [
            {
                "window_id": w["id"],
                "label": reference.label_at(w["offset_s"]),
                "labeled_by": "Dr Ada",
            }
            for w in chosen
        ]
        assert client.post("/v1/labels", json={"labels": labels}).status_code == 202
        labelled = {w["id"] for w in chosen}
        unlabelled = [w for w in beats if w["id"] not in labelled]

        clock.now += 2 * 3600.0
        client.app.state.retention.run_once()
        pruned = client.get(f"/v1/windows/{unlabelled[3]['id']}").json()
        assert pruned["samples"] == [] and pruned["samples_pruned_at"] == clock.now
        assert pruned["predicted"] and pruned["probabilities"]
        whole = client.get(f"/v1/windows/{chosen[0]['id']}").json()
        assert whole["samples_pruned_at"] is None and len(whole["samples"]) == 2
        strip = client.get(f"/v1/strips/ecg/{patient}", params={"start": 0, "duration": 30}).json()
        in_strip = [w for w in beats if w["offset_s"] < 30]
        assert len(strip["beats"]) == len(in_strip)
        assert strip["beats_without_samples"] == sum(w["id"] not in labelled for w in in_strip) > 0
        # Beats without samples leave the labelling queue; labelled ones are still listed.
        assert (
            client.get("/v1/windows", params={"patient_id": patient, "labeled": "false"}).json()[
                "windows"
            ]
            == []
        )
        assert len(
            client.get("/v1/windows", params={"patient_id": patient, "labeled": "true"}).json()[
                "windows"
            ]
        ) == len(chosen)
        templates = client.get(f"/v1/templates/ecg/{patient}", params={"labeled": "true"}).json()[
            "templates"
        ]
        templates += client.get(f"/v1/templates/ecg/{patient}").json()["templates"]
        for template in templates:
            detail = client.get(f"/v1/templates/ecg/{patient}/{template['index']}").json()
            assert set(detail["overlay_ids"]) <= labelled
    wrote = _biofo(
        "export", "wfdb", "--patient", patient, "--out", str(tmp_path / "wfdb"), "--db", str(db)
    )
    assert wrote.returncode == 0, wrote.stderr
    assert "have no samples" in wrote.stdout
    exported = wfdb.rdrecord(str(tmp_path / "wfdb" / f"{patient}_ecg"))
    assert any("have no samples" in line for line in exported.comments)
    at = [round(w["offset_s"] * 360) for w in beats]
    held = {w["id"]: not np.isnan(exported.p_signal[a, 0]) for w, a in zip(beats, at)}
    assert (
        all(held[w] for w in labelled) and not held[unlabelled[-1]["id"]]
    )  # far from any labelled beat's context
    assert len(wfdb.rdann(str(tmp_path / "wfdb" / f"{patient}_ecg"), "pred").sample) == len(beats)

    # Later still the unlabelled beats are deleted: the pages and labels answer for what is left.
    with TestClient(
        create_app(settings, clock),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {admin}"},
    ) as client:
        clock.now += 2 * 3600.0
        assert client.app.state.retention.run_once().windows_deleted == len(unlabelled)
        assert client.get(f"/v1/windows/{unlabelled[0]['id']}").status_code == 404
        gone = {"window_id": unlabelled[0]["id"], "label": "N", "labeled_by": "Dr Ada"}
        assert client.post("/v1/labels", json={"labels": [gone]}).status_code == 404
        listed = client.get(f"/v1/templates/ecg/{patient}", params={"labeled": "true"}).json()[
            "templates"
        ]
        assert sum(t["members"] for t in listed) == len(chosen)
        strip = client.get(f"/v1/strips/ecg/{patient}", params={"start": 0, "duration": 60}).json()
        assert {b["id"] for b in strip["beats"]} == labelled

    stats = _biofo("db", "stats", "--db", str(db), "--json")
    assert stats.returncode == 0, stats.stderr
    found = json.loads(stats.stdout.splitlines()[-1])
    assert found["windows"] == len(chosen) and found["tables"]["windows"]["rows"] == len(chosen)
    assert (
        found["auto_vacuum"] == "incremental"
        and found["free_bytes"] > 0
        and found["oldest_sample_kept"]
    )

    vacuumed = _biofo("db", "vacuum", "--db", str(db), "--json")
    assert vacuumed.returncode == 0, vacuumed.stderr
    result = json.loads(vacuumed.stdout.splitlines()[-1])
    assert (
        result["mode"] == "incremental"
        and result["freed_bytes"] > 0
        and result["free_bytes_after"] == 0
    )

    lock = _instance_lock(db)  # as a running daemon holds it
    refused = _biofo("db", "vacuum", "--full", "--db", str(db))
    assert refused.returncode == 2 and "stop the daemon" in refused.stderr
    lock.close()
    full = _biofo("db", "vacuum", "--full", "--db", str(db), "--json")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout.splitlines()[-1])["mode"] == "full"


def test_bench_soak_levels_off_with_retention(tmp_path) -> None:
    done = _biofo(
        "bench",
        "soak",
        "--hours",
        "0.5",
        "--streams",
        "1",
        "--samples-hours",
        "0.1",
        "--windows-hours",
        "0.2",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    per_hour = result["db_bytes_per_stream_hour"]
    steady = result["steady_bytes_per_stream_hour"]
    assert per_hour["with"] < per_hour["without"]
    assert steady["with"] < 0.25 * steady["without"]
    assert result["arms"]["with"]["labels"] > 0 and result["longest_retention_transaction_ms"] > 0
    assert (tmp_path / "soak-1x0.5h.png").stat().st_size > 0
