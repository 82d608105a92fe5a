"""ONNX export: onnxruntime's answer equals ``Learner.predict`` within 1e-5 on real MIT-BIH beats
(record 208) and real CHB-MIT windows (one chb01 seizure and the 60 s later crop), for every rule
and every network shape the factory builds."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import export
from models.factory import build_learner
from models.learner import Learner
from models.rules import RULES
from signals import chbmit
from signals.aami import AAMI_CLASSES
from signals.ecg_features import beat_table
from signals.eeg_features import EEG_CLASSES, edf_windows, window_class, window_ictal_fraction

torch.set_num_threads(1)

TOLERANCE = 1e-5
CONV_AND_MASKS = [
    {"type": "conv1d", "channels": 4, "kernel": 5, "stride": 2, "padding": 2, "in_channels": 1},
    {"type": "dense", "units": 24, "mask": {"kind": "random", "density": 0.3},
     "activation": "sigmoid"},
    {"type": "dense", "units": 16, "mask": {"kind": "local", "receptive_field": 5},
     "activation": "tanh"},
]


@pytest.fixture(scope="module")
def beats() -> tuple[np.ndarray, np.ndarray]:
    table = beat_table("208")
    return table.X, table.y


@pytest.fixture(scope="module")
def windows() -> tuple[np.ndarray, np.ndarray]:
    row = chbmit.read_crops()[0]
    features, labels = [], []
    for kind in chbmit.CROP_KINDS:
        X, offsets = edf_windows(row.file(kind))
        intervals = row.ictal_intervals(kind)
        features.append(X)
        labels += [window_class(window_ictal_fraction(intervals, o)) for o in offsets]
    return np.concatenate(features), np.array(labels)


def trained(data, classes, rule: str, steps: int = 30, **spec) -> Learner:
    X, y = data
    spec = {"input_dim": X.shape[1], "classes": list(classes), "hidden": [32, 32], "rule": rule,
            "input_mean": X.mean(0).tolist(), "input_std": (X.std(0) + 1e-6).tolist(), "seed": 4,
            **spec}
    if "layers" in spec:
        del spec["hidden"]
    learner = build_learner(spec)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        index = rng.integers(0, len(y), 16)
        learner.learn(X[index], y[index])
    return learner


def run(blob: bytes, X: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"x": X.astype(np.float32)})[0]


def assert_parity(learner: Learner, X: np.ndarray) -> float:
    expected = learner.predict(X)
    got = run(export.to_onnx(learner), X)
    assert got.dtype == np.float32 and got.shape == expected.shape
    difference = float(np.abs(got - expected).max())
    assert difference <= TOLERANCE, difference
    return difference


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_exports_its_prediction_on_real_beats(beats, rule):
    X, _ = beats
    learner = trained(beats, AAMI_CLASSES, rule)
    assert_parity(learner, X)


@pytest.mark.parametrize("rule", ["biofo", "bp", "pepita", "ff", "lls_mxm"])
def test_conv1d_and_masked_networks_export_on_real_beats(beats, rule):
    X, _ = beats
    learner = trained(beats, AAMI_CLASSES, rule, layers=CONV_AND_MASKS)
    assert_parity(learner, X[:500])


@pytest.mark.parametrize("rule", ["biofo", "drtp", "ff", "lls"])
@pytest.mark.parametrize("shape", ["dense", "conv1d"])
def test_export_on_real_chbmit_windows(windows, rule, shape):
    X, y = windows
    assert set(y.tolist()) == {0, 1}  # ictal windows and (mostly) post-ictal ones
    layers = {} if shape == "dense" else {"layers": [
        {"type": "conv1d", "channels": 2, "kernel": 9, "stride": 4, "in_channels": 1},
        {"type": "dense", "units": 32, "mask": {"kind": "random", "density": 0.2}},
    ]}
    learner = trained(windows, EEG_CLASSES, rule, **layers)
    assert_parity(learner, X)


def test_biofo_early_exit_and_greedy_schedule_export(beats):
    X, _ = beats
    # Unit-variance heads (the reference's) are confident early, so samples leave at every layer.
    early = trained(beats, AAMI_CLASSES, "biofo", steps=60, hidden=[32, 32, 32],
                    rule_options={"early_exit": 0.8, "head_scale": 1.0})
    exits = np.bincount(early.predict_detail(X).exit_layer, minlength=4)
    assert np.all(exits[1:] > 100), exits
    assert_parity(early, X)
    greedy = trained(beats, AAMI_CLASSES, "biofo", steps=45, hidden=[32, 32, 32],
                     rule_options={"schedule": "greedy", "greedy_steps": 20, "head": "ternary"})
    assert greedy.predict_detail(X[:1]).exit_layer.tolist() == [3]
    assert_parity(greedy, X)
    mid = trained(beats, AAMI_CLASSES, "biofo", steps=25, hidden=[32, 32, 32],
                  rule_options={"schedule": "greedy", "greedy_steps": 20})
    assert mid.predict_detail(X[:1]).exit_layer.tolist() == [2]  # predicts from layer 2's head
    assert_parity(mid, X)


def test_ff_goodness_prediction_exports(beats):
    X, _ = beats
    learner = trained(beats, AAMI_CLASSES, "ff", rule_options={"prediction": "goodness"})
    assert_parity(learner, X)


def test_float64_network_exports_in_float64(beats):
    X, _ = beats
    learner = trained(beats, AAMI_CLASSES, "bp", dtype="float64")
    model = onnx.load_from_string(export.to_onnx(learner))
    weights = [t for t in model.graph.initializer if t.name == "layers.0.z.weight"]
    assert weights[0].data_type == onnx.TensorProto.DOUBLE
    assert assert_parity(learner, X) < 1e-7


def test_graph_interface_and_metadata(beats):
    X, _ = beats
    learner = trained(beats, AAMI_CLASSES, "biofo")
    model = onnx.load_from_string(export.to_onnx(learner))
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "x" and graph_output.name == "probabilities"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == X.shape[1]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == list(AAMI_CLASSES)
    assert props["rule"] == "biofo" and props["version"] == "30"
    # dynamic batch: one beat at a time gives the same rows as the whole record
    blob = export.to_onnx(learner)
    rows = np.concatenate([run(blob, X[i : i + 1]) for i in range(5)])
    assert np.abs(rows - learner.predict(X[:5])).max() <= TOLERANCE
