"""State round trips and determinism, on real MIT-BIH beats (record 119: normal and ventricular).

The daemon's durability invariant (checkpoint + replay of later labels == never crashed) rests on
these: same state + same labels in the same order -> bit-identical model, and checkpoints that
restore every bit, including optimizer moments, fixed random matrices and counters.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from models import checkpoint
from models.factory import build_learner
from models.learner import Learner
from models.rules import RULES
from signals.aami import AAMI_CLASSES
from signals.ecg_features import beat_table

torch.set_num_threads(1)

VARIANTS = {
    **{rule: {"rule": rule} for rule in sorted(RULES)},
    "biofo-greedy-ternary": {
        "rule": "biofo",
        "rule_options": {
            "schedule": "greedy", "greedy_steps": 3, "head": "ternary", "early_exit": 0.9
        },
    },
    "bp-sgd-float64": {"rule": "bp", "dtype": "float64",
                       "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True}},
    "fa-masked-conv": {
        "rule": "fa",
        "hidden": None,
        "layers": [
            {"type": "conv1d", "channels": 2, "kernel": 5, "stride": 2, "in_channels": 1},
            {"type": "dense", "units": 24, "mask": {"kind": "random", "density": 0.3}},
            {"type": "dense", "units": 24, "mask": {"kind": "local", "receptive_field": 5},
             "activation": "relu"},
        ],
    },
    "pepita-masked-conv-momentum": {
        "rule": "pepita",
        "hidden": None,
        "layers": [
            {"type": "conv1d", "channels": 2, "kernel": 5, "stride": 2, "in_channels": 1},
            {"type": "dense", "units": 24, "mask": {"kind": "local", "receptive_field": 5}},
        ],
        "rule_options": {"keep": 0.5},
    },
    "ff-goodness-all-layers": {
        "rule": "ff",
        "rule_options": {"prediction": "goodness", "readout_from": 1, "peer_normalization": 0.1},
    },
    "lls_mxm-conv-pooled-sine": {
        "rule": "lls_mxm",
        "hidden": None,
        "layers": [
            {"type": "conv1d", "channels": 3, "kernel": 5, "padding": 2, "in_channels": 1},
            {"type": "dense", "units": 24},
        ],
        "rule_options": {"waveform": "sine", "dense_dim": 8, "label_smoothing": 0.1},
    },
}


@pytest.fixture(scope="module")
def beats() -> tuple[np.ndarray, np.ndarray]:
    table = beat_table("119")
    return table.X[:400], table.y[:400]


def make(beats, variant: str, seed: int = 3) -> Learner:
    X, _ = beats
    spec = {
        "input_dim": X.shape[1], "classes": list(AAMI_CLASSES), "hidden": [24, 24], "seed": seed,
        "input_mean": X.mean(0).tolist(), "input_std": (X.std(0) + 1e-6).tolist(),
        **VARIANTS[variant],
    }
    if spec["hidden"] is None:
        del spec["hidden"]
    return build_learner(spec)


def feed(learner: Learner, beats, start: int, count: int) -> None:
    X, y = beats
    for i in range(start, start + count):
        learner.learn(X[i : i + 1], y[i : i + 1])


def assert_identical(a: Learner, b: Learner) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key
    assert a.version == b.version
    assert a.spec == b.spec


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_labels_in_same_order_give_bit_identical_learners(beats, variant):
    a, b = make(beats, variant), make(beats, variant)
    feed(a, beats, 0, 25)
    feed(b, beats, 0, 25)
    assert_identical(a, b)
    X, _ = beats
    assert np.array_equal(a.predict(X[100:150]), b.predict(X[100:150]))
    c = make(beats, variant)
    feed(c, beats, 1, 25)  # same labels, one position later: must differ
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpoint_round_trip_is_exact_and_continues_identically(beats, variant):
    learner = make(beats, variant)
    feed(learner, beats, 0, 20)
    restored = checkpoint.loads(checkpoint.dumps(learner))
    assert_identical(learner, restored)
    assert restored.classes == learner.classes == AAMI_CLASSES
    feed(learner, beats, 20, 20)
    feed(restored, beats, 20, 20)
    assert_identical(learner, restored)
    assert restored.version == 40
    X, _ = beats
    assert np.array_equal(learner.predict(X[200:260]), restored.predict(X[200:260]))


def test_state_dict_restores_fixed_matrices_rather_than_regenerating_them(beats):
    """A learner built with another seed becomes the original once its state is loaded."""
    original = make(beats, "biofo", seed=3)
    feed(original, beats, 0, 10)
    other = make(beats, "biofo", seed=4)
    assert not torch.equal(other.rule.fixed["heads.0"], original.rule.fixed["heads.0"])
    other.load_state_dict(original.state_dict())
    assert torch.equal(other.rule.fixed["heads.0"], original.rule.fixed["heads.0"])
    assert torch.equal(other.network.readout.weight, original.network.readout.weight)
    feed(original, beats, 10, 10)
    feed(other, beats, 10, 10)
    for key, tensor in original.state_dict().items():
        assert torch.equal(other.state_dict()[key], tensor), key


def test_checkpoint_is_npz_with_json_spec_and_no_pickle(beats):
    learner = make(beats, "dfa")
    feed(learner, beats, 0, 5)
    blob = checkpoint.dumps(learner)
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    assert meta["spec"] == learner.spec and meta["version"] == 5
    assert all(array.dtype != object for array in arrays.values())
    assert np.array_equal(arrays["network.readout.weight"], learner.network.readout.weight.numpy())
    assert arrays["optimizer.readout.weight.velocity"].any()  # optimizer moments travel too


def test_load_state_dict_rejects_a_state_of_another_shape_without_partial_load(beats):
    learner = make(beats, "fa")
    before = learner.state_dict()
    wider = build_learner({**learner.spec, "layers": [{"type": "dense", "units": 30}] * 2})
    with pytest.raises(ValueError, match="does not fit"):
        learner.load_state_dict(wider.state_dict())
    for key, tensor in learner.state_dict().items():  # nothing was half-loaded
        assert torch.equal(tensor, before[key]), key
    state = learner.state_dict()
    del state["learner.version"]
    with pytest.raises(KeyError, match="learner.version"):
        learner.load_state_dict(state)


def test_version_counts_learn_calls_and_can_be_reset(beats):
    learner = make(beats, "biofo")
    feed(learner, beats, 0, 3)
    assert learner.version == 3
    learner.version = 0
    restored = checkpoint.loads(checkpoint.dumps(learner))
    assert restored.version == 0
