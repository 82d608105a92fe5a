"""The onnxruntime engine: the same learner as torch, the same checkpoints, and no torch at all.

Parity is measured on real MIT-BIH beats from the bundled ECG base model; the daemon test runs the
daemon's app in a subprocess (``tests/daemon_without_torch.py``) that fails if torch was imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from app.base_models import base_path
from app.engine import load_learner, resolve_engine
from models import checkpoint
from models.biofo_onnx import UnsupportedSpec, plan_for
from models.biofo_spec import OPTIMIZER_OPTIONS, RULE_OPTIONS
from models.factory import build_learner
from models.optim import Adam, SGD
from models.ort_learner import OrtLearner
from signals.aami import AAMI_CLASSES
from signals.ecg_features import beat_table

REPO = Path(__file__).resolve().parents[1]
PARITY_UPDATES = 1000


@pytest.fixture(scope="module")
def beats_208():
    torch.set_num_threads(1)
    return beat_table("208")


@pytest.fixture(scope="module")
def ecg_base() -> bytes:
    return base_path("ecg").read_bytes()


def float_state(state: dict) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
        for name, value in state.items()
    }


def max_weight_difference(torch_learner, ort_learner: OrtLearner) -> float:
    ours, theirs = float_state(torch_learner.state_dict()), ort_learner.state_dict()
    assert ours.keys() == theirs.keys()
    return max(
        float(np.max(np.abs(ours[name].astype(np.float64) - theirs[name].astype(np.float64))))
        for name in ours if ours[name].dtype.kind == "f"
    )


def test_1000_real_updates_match_torch(beats_208, ecg_base) -> None:
    """Record 208 (DS2, unseen by the base): 1000 consecutive labelled beats, one update each."""
    X, y = beats_208.X, beats_208.y
    reference, candidate = checkpoint.loads(ecg_base), OrtLearner.loads(ecg_base)
    assert np.allclose(reference.predict(X[:64]), candidate.predict(X[:64]), atol=1e-5)
    losses = []
    for i in range(PARITY_UPDATES):
        before = reference.predict(X[i : i + 1]) if i < 20 else None
        expected = reference.learn(X[i : i + 1], y[i : i + 1])
        got = candidate.learn(X[i : i + 1], y[i : i + 1])
        if before is not None:  # the update graph also returns its prediction before the step
            assert np.allclose(got.probabilities, before, atol=1e-5)
        losses.append((expected.loss_per_layer, got.loss_per_layer))
        assert got.macs == expected.macs
    torch_losses, ort_losses = np.array(losses).transpose(1, 0, 2)
    assert np.allclose(ort_losses, torch_losses, rtol=1e-4, atol=1e-5)
    difference = max_weight_difference(reference, candidate)
    assert difference <= 1e-4, difference
    assert candidate.version == reference.version
    state = candidate.state_dict()
    for name in ("rule.steps", "optimizer.layers.1.weight.step", "learner.version"):
        assert int(state[name]) == int(reference.state_dict()[name])
    following = X[PARITY_UPDATES:]
    assert len(following) > 1900
    torch_classes = reference.predict(following).argmax(1)
    agree = np.mean(candidate.predict(following).argmax(1) == torch_classes)
    assert agree >= 0.999, agree


@pytest.mark.parametrize(
    "options",
    [
        # masked layers, shared ternary head, SGD with Nesterov momentum and weight decay
        {"layers": [{"type": "dense", "units": 48, "mask": {"kind": "random", "density": 0.3}},
                    {"type": "dense", "units": 48,
                     "mask": {"kind": "local", "receptive_field": 9}}],
         "rule_options": {"head": "ternary"},
         "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True,
                       "weight_decay": 1e-4}},
        # three Gaussian heads, Adam with weight decay
        {"hidden": [64, 32, 16],
         "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.8, 0.99], "weight_decay": 1e-3}},
        # plain SGD: no optimizer state at all
        {"hidden": [32], "optimizer": {"name": "sgd", "lr": 0.05}},
    ],
)
def test_every_supported_variant_matches_torch(beats_208, options) -> None:
    X, y = beats_208.X, beats_208.y
    spec = {"input_dim": X.shape[1], "classes": list(AAMI_CLASSES), "rule": "biofo", "seed": 5,
            "input_mean": X.mean(0).tolist(), "input_std": (X.std(0) + 1e-6).tolist(), **options}
    reference = build_learner(spec)
    candidate = OrtLearner.loads(checkpoint.dumps(reference))
    for start in range(0, 300, 3):  # batches of three
        reference.learn(X[start : start + 3], y[start : start + 3])
        candidate.learn(X[start : start + 3], y[start : start + 3])
    assert max_weight_difference(reference, candidate) <= 1e-5
    assert np.allclose(reference.predict(X[300:400]), candidate.predict(X[300:400]), atol=1e-5)


def test_checkpoints_load_in_either_engine(beats_208, ecg_base) -> None:
    X, y = beats_208.X, beats_208.y
    # torch -> onnxruntime: the arrays arrive bit for bit.
    torch_learner = checkpoint.loads(ecg_base)
    for i in range(20):
        torch_learner.learn(X[i : i + 1], y[i : i + 1])
    from_torch = OrtLearner.loads(checkpoint.dumps(torch_learner))
    expected = float_state(torch_learner.state_dict())
    got = from_torch.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert expected[name].dtype == got[name].dtype, name
        assert np.array_equal(expected[name], got[name]), name
    # onnxruntime -> torch, through the daemon's engine interface: bit for bit again, and both
    # go on learning the same.
    ort_engine = load_learner(checkpoint.dumps(torch_learner), "onnxruntime")
    for i in range(20, 40):
        ort_engine.learn(X[i : i + 1], y[i : i + 1])
    torch_engine = load_learner(ort_engine.dumps(), "torch")
    assert torch_engine.version == ort_engine.version == 40
    back = OrtLearner.loads(torch_engine.dumps()).state_dict()
    for name, array in OrtLearner.loads(ort_engine.dumps()).state_dict().items():
        assert np.array_equal(array, back[name]), name
    for i in range(40, 60):
        torch_engine.learn(X[i : i + 1], y[i : i + 1])
        ort_engine.learn(X[i : i + 1], y[i : i + 1])
    assert np.allclose(torch_engine.predict(X[60:200]), ort_engine.predict(X[60:200]), atol=1e-5)


def test_onnx_export_is_the_current_model(beats_208, ecg_base) -> None:
    X, y = beats_208.X, beats_208.y
    engine = load_learner(ecg_base, "onnxruntime")
    for i in range(10):
        engine.learn(X[i : i + 1], y[i : i + 1])
    session = ort.InferenceSession(engine.to_onnx(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    exported = session.run(["probabilities"], {"x": X[10:74]})[0]
    # The same graph; with the weights as constants onnxruntime may pick other kernels (an ulp).
    assert np.allclose(exported, engine.predict(X[10:74]), rtol=1e-5, atol=1e-7)
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["classes"]) == list(AAMI_CLASSES)
    assert (props["rule"], props["version"]) == ("biofo", "10")


def test_specs_it_cannot_run_are_refused_with_the_reason(beats_208) -> None:
    base = {"input_dim": beats_208.X.shape[1], "classes": list(AAMI_CLASSES), "hidden": [16, 16]}
    refused = {
        "greedy": ({"rule_options": {"schedule": "greedy"}}, "schedule 'greedy'"),
        "early exit": ({"rule_options": {"early_exit": 0.9}}, "early_exit"),
        "tanh": ({"activation": "tanh"}, "activation 'tanh'"),
        "conv": ({"hidden": [], "layers": [{"type": "conv1d", "channels": 2, "kernel": 5}]},
                 "type 'conv1d'"),
        "float64": ({"dtype": "float64"}, "dtype 'float64'"),
        "backprop": ({"rule": "bp"}, "rule 'bp'"),
    }
    for name, (change, reason) in refused.items():
        spec = {**base, **change}
        if not spec["hidden"]:
            del spec["hidden"]
        blob = checkpoint.dumps(build_learner(spec))
        with pytest.raises(UnsupportedSpec, match=reason):
            OrtLearner.loads(blob)
        # The daemon logs it and tries the previous checkpoint; the message says why.
        with pytest.raises(ValueError, match="onnxruntime engine cannot run"):
            load_learner(blob, "onnxruntime")


def test_graphs_know_every_option_of_the_torch_rule_and_optimizers() -> None:
    """An option added to the torch code must be handled (or refused) here, never ignored."""
    spec = build_learner({"input_dim": 4, "classes": ["a", "b"], "hidden": [8]}).spec
    assert set(spec["rule_options"]) == RULE_OPTIONS
    assert set(Adam(lr=1e-3).describe()) == OPTIMIZER_OPTIONS["adam"]
    assert set(SGD(lr=1e-3).describe()) == OPTIMIZER_OPTIONS["sgd"]
    with pytest.raises(UnsupportedSpec, match="unknown biofo options"):
        plan_for({**spec, "rule_options": {**spec["rule_options"], "new_option": 1}})


def test_engine_choice() -> None:
    assert resolve_engine(None) == "torch"  # installed here: the default where it imports
    assert resolve_engine("onnxruntime") == "onnxruntime"
    with pytest.raises(ValueError, match="unknown engine"):
        resolve_engine("tensorflow")


def _run_daemon(phase: str, db: Path, env: dict[str, str], block_torch: bool) -> dict:
    command = [sys.executable, "-W", "ignore", "-m", "tests.daemon_without_torch", phase, str(db)]
    done = subprocess.run(
        command + (["--block-torch"] if block_torch else []), cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_daemon_learns_checkpoints_and_replays_without_torch(tmp_path) -> None:
    db = tmp_path / "biofo.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BIOFO_")},
        "BIOFO_CHECKPOINT_EVERY": "10", "BIOFO_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1",
    }
    # A base install: torch cannot be imported, so the daemon picks onnxruntime by itself.
    learned = _run_daemon("learn", db, env, block_torch=True)
    assert learned["engine"] == "onnxruntime" and not learned["torch_imported"]
    assert learned["version"] == learned["applied_seq"] > 20
    with sqlite3.connect(db) as conn:
        (newest_checkpoint,) = conn.execute("SELECT MAX(applied_seq) FROM checkpoints").fetchone()
    # The crash left labels after the newest checkpoint: the restart must replay them.
    assert 0 < newest_checkpoint < learned["applied_seq"]
    # torch installed but the engine asked for: it must still never be imported.
    env["BIOFO_ENGINE"] = "onnxruntime"
    restarted = _run_daemon("restart", db, env, block_torch=False)
    assert restarted["engine"] == "onnxruntime" and not restarted["torch_imported"]
    # Restore + replay reproduced the crashed process's model bit for bit (its exported weights).
    assert restarted["restored_version"] == learned["version"]
    assert restarted["restored_onnx_sha256"] == learned["onnx_sha256"]
    assert restarted["version"] > learned["version"]
    # The shutdown checkpoint, written by the onnxruntime engine, loads in torch as the same model.
    with sqlite3.connect(db) as conn:
        blob, version, reason = conn.execute(
            "SELECT blob, version, reason FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert (version, reason) == (restarted["version"], "shutdown")
    session = ort.InferenceSession(
        db.with_suffix(".onnx").read_bytes(), providers=["CPUExecutionProvider"]
    )
    X = beat_table("208").X[:200]
    assert np.allclose(
        checkpoint.loads(bytes(blob)).predict(X), session.run(["probabilities"], {"x": X})[0],
        atol=1e-5,
    )
