"""Learning on real MIT-BIH beats (record 208: normal, ventricular and fusion beats).

Every rule learns; the forward-only hidden updates align with BP's; a Bio-FO step's working
memory does not grow with depth while BP's does; Bio-FO learns from a stream of single labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cost import Cost
from models.factory import build_learner
from models.learner import Learner
from models.memory import peak_tensor_bytes
from models.rules import RULES, StepContext
from models.rules.bp import BP
from signals.aami import AAMI_CLASSES
from signals.ecg_features import beat_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def beats() -> tuple[np.ndarray, np.ndarray]:
    table = beat_table("208")
    return table.X, table.y


def make(beats, rule: str, hidden: list[int], **spec) -> Learner:
    X, _ = beats
    return build_learner({
        "input_dim": X.shape[1], "classes": list(AAMI_CLASSES), "hidden": hidden, "rule": rule,
        "input_mean": X.mean(0).tolist(), "input_std": (X.std(0) + 1e-6).tolist(), **spec,
    })


def cross_entropy(learner: Learner, X: np.ndarray, y: np.ndarray) -> float:
    p = learner.predict(X)
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def train(learner: Learner, X: np.ndarray, y: np.ndarray, steps: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = rng.integers(0, len(y), batch)
        learner.learn(X[index], y[index])


@pytest.mark.parametrize("optimizer", ["rule default", "adam 1e-3"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_lowers_training_loss(beats, rule, optimizer):
    X, y = beats
    spec = {} if optimizer == "rule default" else {"optimizer": {"name": "adam", "lr": 1e-3}}
    learner = make(beats, rule, [64, 64], seed=1, **spec)
    probe = np.random.default_rng(0).choice(len(y), 512, replace=False)
    before = cross_entropy(learner, X[probe], y[probe])
    train(learner, X, y, steps=300, batch=32, seed=1)
    after = cross_entropy(learner, X[probe], y[probe])
    if optimizer == "rule default":
        # The paper settings of FA/DFA/DRTP (SGD, lr 1e-4) move slowly; they must still move.
        assert after < 0.9 * before
    else:
        assert after < 0.35 * before
        accuracy = np.mean(learner.predict(X[probe]).argmax(1) == y[probe])
        majority = np.bincount(y[probe]).max() / len(probe)
        assert accuracy > majority + 0.25


def _hidden_grads(rule, learner: Learner, X: np.ndarray, y: np.ndarray) -> list[torch.Tensor]:
    net = learner.network
    h0 = net.standardise(torch.as_tensor(X))
    grads = {}
    with torch.no_grad():
        ctx = StepContext(Cost(), torch.Generator())
        for update in rule.updates(net, h0, torch.as_tensor(y), ctx):
            grads.update(update.grads)
    return [grads[f"layers.{k}.weight"].flatten() for k in range(net.depth)]


@pytest.mark.parametrize("rule", ["dfa", "drtp", "biofo"])
def test_forward_only_hidden_updates_align_with_bp(beats, rule):
    X, y = beats
    learner = make(beats, rule, [64, 64, 64], seed=2, optimizer={"name": "adam", "lr": 1e-3})
    train(learner, X, y, steps=200, batch=32, seed=2)
    probe = np.random.default_rng(3).choice(len(y), 1024, replace=False)
    mine = _hidden_grads(learner.rule, learner, X[probe], y[probe])
    reference = _hidden_grads(BP(learner.network, 0), learner, X[probe], y[probe])
    cosines = [float(torch.cosine_similarity(a, b, dim=0)) for a, b in zip(mine, reference)]
    assert all(c > 0.0 for c in cosines), cosines


def test_biofo_step_memory_does_not_grow_with_depth_while_bp_does(beats):
    X, y = beats
    batch, width, depths = 128, 256, (2, 4, 6)
    x, labels = X[:batch], y[:batch]
    peaks = {}
    for rule in ("biofo", "bp"):
        peaks[rule] = []
        for depth in depths:
            learner = make(beats, rule, [width] * depth, optimizer={"name": "sgd", "lr": 0.01})
            learner.learn(x, labels)
            peaks[rule].append(peak_tensor_bytes(lambda: learner.learn(x, labels))[1])
    assert max(peaks["biofo"]) <= 1.01 * min(peaks["biofo"]), peaks
    # BP keeps z and h of every layer until the backward pass reaches it: 2·batch·width floats.
    per_layer = 2 * batch * width * 4
    for shallow, deep, extra in zip(peaks["bp"], peaks["bp"][1:], np.diff(depths)):
        assert deep - shallow >= 0.9 * extra * per_layer, peaks
    assert peaks["bp"][-1] > 1.5 * peaks["biofo"][-1]


def test_biofo_learns_from_a_stream_of_single_labels(beats):
    """The daemon's case: predict a beat, receive its label, update in place, batch of one."""
    X, y = beats
    learner = make(beats, "biofo", [256, 256])  # the rule's streaming defaults
    held_out = slice(1500, None)
    before = cross_entropy(learner, X[held_out], y[held_out])
    hits = []
    for i in range(600):
        hits.append(learner.predict(X[i : i + 1]).argmax() == y[i])
        stats = learner.learn(X[i : i + 1], y[i : i + 1])
        assert len(stats.loss_per_layer) == 2
    assert learner.version == 600
    after = cross_entropy(learner, X[held_out], y[held_out])
    predicted = learner.predict(X[held_out]).argmax(1)
    recalls = [np.mean(predicted[y[held_out] == c] == c) for c in (0, 2, 3)]  # N, V, F
    assert after < 0.3 * before
    assert np.mean(hits[300:]) > np.mean(hits[:100])
    # Fusion beats are few (79 of the first 600) and hard; BP on the same stream gets ~0.47.
    assert recalls[0] > 0.95 and recalls[1] > 0.95 and recalls[2] > 0.35, recalls
