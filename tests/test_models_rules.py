"""Each rule's update against autograd, against BP in its degenerate cases, and its equation.

These are formula tests, so the inputs are small synthetic tensors in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.cost import Cost
from models.factory import build_learner
from models.learner import Learner
from models.rules import RULES, StepContext

torch.set_num_threads(1)

CLASSES = ["a", "b", "c"]
MIXED_LAYERS = [
    {"type": "conv1d", "channels": 2, "kernel": 3, "padding": 1, "activation": "tanh"},
    {"type": "dense", "units": 5, "mask": {"kind": "local", "receptive_field": 6},
     "activation": "leaky_relu"},
    {"type": "dense", "units": 4, "mask": {"kind": "random", "density": 0.5},
     "activation": "sigmoid"},
    {"type": "dense", "units": 4, "activation": "relu"},
]


def tiny(rule: str, **spec) -> Learner:
    base = {"input_dim": 8, "classes": CLASSES, "hidden": [5, 4], "rule": rule,
            "dtype": "float64", "init": "default", "activation": "tanh", "seed": 7}
    if "layers" in spec:
        del base["hidden"]
    base.update(spec)
    return build_learner(base)


def batch(seed: int = 0, n: int = 6, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)), rng.integers(0, len(CLASSES), n)


def rule_grads(learner: Learner, x: np.ndarray, y: np.ndarray) -> tuple[dict, list]:
    """Every gradient the rule yields for one batch, without applying any."""
    net = learner.network
    h0 = net.standardise(torch.as_tensor(x, dtype=net.dtype))
    grads, losses = {}, []
    with torch.no_grad():
        ctx = StepContext(Cost(), torch.Generator())
        for update in learner.rule.updates(net, h0, torch.as_tensor(y), ctx):
            grads.update(update.grads)
            losses.append(update.loss)
    return grads, losses


def _autograd_of_cross_entropy(learner: Learner, x: np.ndarray, y: np.ndarray):
    params = learner.network.parameters()
    for p in params.values():
        p.requires_grad_(True)
    h0 = learner.network.standardise(torch.as_tensor(x))
    loss = F.cross_entropy(learner.network.logits(h0), torch.as_tensor(y))
    grads = torch.autograd.grad(loss, list(params.values()))
    for p in params.values():
        p.requires_grad_(False)
    return dict(zip(params, grads)), float(loss.detach())


@pytest.mark.parametrize("layers", ["dense", "mixed"])
def test_bp_equals_autograd(layers):
    """Equal to float64 rounding (autograd orders a few sums differently, e.g. p/B − y/B)."""
    if layers == "dense":
        learner = tiny("bp", hidden=[5, 4, 3], activation="relu")
    else:
        learner = tiny("bp", layers=MIXED_LAYERS)
    learner.network.input_std.fill_(2.0)
    x, y = batch()
    mine, losses = rule_grads(learner, x, y)
    expected, loss = _autograd_of_cross_entropy(learner, x, y)
    assert set(mine) == set(expected)
    for name, grad in expected.items():
        assert torch.allclose(mine[name], grad, rtol=0, atol=1e-16), name
    assert losses[0] == loss and losses[1:] == [None] * (len(losses) - 1)


def test_fa_with_feedback_equal_to_forward_weights_is_bp():
    fa, bp = tiny("fa", layers=MIXED_LAYERS), tiny("bp", layers=MIXED_LAYERS)
    for name, tensor in fa.rule.fixed.items():
        target = name.removeprefix("feedback.")
        layer = fa.network.readout if target == "readout" else fa.network.layers[int(target)]
        tensor.copy_(layer.weight)
    x, y = batch(1)
    fa_grads, bp_grads = rule_grads(fa, x, y)[0], rule_grads(bp, x, y)[0]
    assert set(fa_grads) == set(bp_grads)
    for name in bp_grads:
        assert torch.equal(fa_grads[name], bp_grads[name]), name


def test_dfa_with_one_hidden_layer_and_output_weights_as_feedback_is_bp():
    dfa, bp = tiny("dfa", hidden=[6]), tiny("bp", hidden=[6])
    dfa.rule.fixed["feedback.0"].copy_(dfa.network.readout.weight)
    x, y = batch(2)
    dfa_grads, bp_grads = rule_grads(dfa, x, y)[0], rule_grads(bp, x, y)[0]
    for name in bp_grads:
        assert torch.equal(dfa_grads[name], bp_grads[name]), name


@pytest.mark.parametrize("head", ["gaussian", "ternary"])
def test_biofo_delta_is_autograd_of_the_local_loss_with_detached_input(head):
    learner = tiny("biofo", hidden=[5, 5, 5], activation="relu", rule_options={"head": head})
    x, y = batch(3)
    mine, losses = rule_grads(learner, x, y)
    net, rule = learner.network, learner.rule
    h = net.standardise(torch.as_tensor(x))
    for k, layer in enumerate(net.layers):
        w = layer.weight.clone().requires_grad_(True)
        b = layer.bias.clone().requires_grad_(True)
        h_in = h.detach()
        h_out = torch.relu(F.linear(h_in, w, b))
        loss = F.cross_entropy(h_out @ rule.head(net, k).T, torch.as_tensor(y))
        grad_w, grad_b = torch.autograd.grad(loss, (w, b))
        assert torch.allclose(mine[f"layers.{k}.weight"], grad_w, rtol=0, atol=1e-15)
        assert torch.allclose(mine[f"layers.{k}.bias"], grad_b, rtol=0, atol=1e-15)
        assert losses[k] == pytest.approx(float(loss.detach()), abs=1e-15)
        h = h_out.detach()
    assert "readout.weight" not in mine  # the last head is the frozen read-out


def _numpy_forward(learner: Learner, x: np.ndarray):
    net = learner.network
    f = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}[net.activations[0].name]
    hs, zs = [x], []
    for layer in net.layers:
        zs.append(hs[-1] @ layer.weight.numpy().T + layer.bias.numpy())
        hs.append(f(zs[-1]))
    logits = hs[-1] @ net.readout.weight.numpy().T + net.readout.bias.numpy()
    return hs, zs, logits


def _relu_grad(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(float)


def _tanh_grad(z: np.ndarray) -> np.ndarray:
    return 1 - np.tanh(z) ** 2


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# The rules of the δh_k table; PEPITA, FF and LLS: tests/test_models_pepita_ff_lls.py.
TABLE_RULES = ("biofo", "bp", "dfa", "drtp", "fa", "sdfa", "ssdfa")


@pytest.mark.parametrize("rule", TABLE_RULES)
def test_each_rule_update_matches_its_equation(rule):
    """The learning-rules table in numpy: ΔW_k = δz_kᵀ h_{k-1}, δz_k = δh_k ⊙ f'(z_k)."""
    activation = "relu" if rule == "biofo" else "tanh"
    learner = tiny(rule, activation=activation)
    x, y = batch(4)
    mine, _ = rule_grads(learner, x, y)
    hs, zs, logits = _numpy_forward(learner, x)
    n = len(y)
    target = np.eye(len(CLASSES))[y]
    e = (_softmax(logits) - target) / n
    fixed = {k: v.numpy() for k, v in learner.rule.fixed.items()}
    weights = [layer.weight.numpy() for layer in learner.network.layers]
    w_out = learner.network.readout.weight.numpy()
    df = _relu_grad if activation == "relu" else _tanh_grad

    depth = len(weights)
    delta_h = [None] * depth
    if rule in ("bp", "fa"):
        if rule == "bp":
            back = [*weights, w_out]
        else:
            back = [None, fixed["feedback.1"], fixed["feedback.readout"]]
        upper = e
        for k in reversed(range(depth)):
            delta_h[k] = upper @ back[k + 1]
            upper = delta_h[k] * df(zs[k])
    for k in range(depth):
        if rule in ("dfa", "ssdfa"):
            delta_h[k] = e @ fixed[f"feedback.{k}"]
        elif rule == "sdfa":
            delta_h[k] = np.sign(e) @ fixed[f"feedback.{k}"] / n
        elif rule == "drtp":
            delta_h[k] = target @ fixed[f"feedback.{k}"] / n
        elif rule == "biofo":
            head = fixed[f"heads.{k}"] if k < depth - 1 else w_out
            delta_h[k] = (_softmax(hs[k + 1] @ head.T) - target) / n @ head
    for k in range(depth):
        dz = delta_h[k] * df(zs[k])
        assert np.allclose(mine[f"layers.{k}.weight"].numpy(), dz.T @ hs[k], rtol=0, atol=1e-14)
        assert np.allclose(mine[f"layers.{k}.bias"].numpy(), dz.sum(0), rtol=0, atol=1e-14)
    if rule != "biofo":
        assert np.allclose(mine["readout.weight"].numpy(), e.T @ hs[-1], rtol=0, atol=1e-14)


def _one_unit_net(rule: str) -> Learner:
    """2 inputs -> 1 ReLU unit -> 2 classes, with hand-picked weights: z = 0.5·1 + 0.25·2 = 1."""
    learner = build_learner({"input_dim": 2, "classes": ["a", "b"], "hidden": [1], "rule": rule,
                             "dtype": "float64", "activation": "relu", "init": "default",
                             "optimizer": {"name": "sgd", "lr": 1.0}})
    net = learner.network
    net.layers[0].weight.copy_(torch.tensor([[0.5, 0.25]]))
    net.layers[0].bias.zero_()
    net.readout.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    net.readout.bias.zero_()
    return learner


def test_hand_checked_biofo_step():
    learner = _one_unit_net("biofo")
    x, y = np.array([[1.0, 2.0]]), np.array([0])
    stats = learner.learn(x, y)
    # h = 1, head [1, -1] -> logits [1, -1], p0 = 1/(1+e^-2); δa = [p0-1, 1-p0]; δh = 2(p0-1).
    p0 = 1.0 / (1.0 + math.exp(-2.0))
    dz = 2.0 * (p0 - 1.0)
    weight = learner.network.layers[0].weight.flatten().tolist()
    assert weight == pytest.approx([0.5 - dz, 0.25 - 2 * dz])
    assert learner.network.layers[0].bias.tolist() == pytest.approx([-dz])
    assert learner.network.readout.weight.tolist() == [[1.0], [-1.0]]  # frozen head
    assert stats.loss_per_layer == pytest.approx([-math.log(p0)])
    # forward 2 + head 2 + B^T δa 2 + outer product 2
    assert stats.macs == 8


def test_hand_checked_drtp_dfa_and_sdfa_steps():
    x, y = np.array([[1.0, 2.0]]), np.array([1])
    p = 1.0 / (1.0 + math.exp(-2.0))  # softmax([1, -1])[0]
    e = np.array([p, -p])  # softmax - onehot(1) = [p, 1-p-1]
    expected_dh = {
        "drtp": -2.0,  # B[y] with B = [[0.5], [-2]]: the target selects a row
        "dfa": 0.5 * e[0] - 2.0 * e[1],
        "sdfa": 0.5 * 1.0 - 2.0 * -1.0,
    }
    for rule, dh in expected_dh.items():
        learner = _one_unit_net(rule)
        learner.rule.fixed["feedback.0"].copy_(torch.tensor([[0.5], [-2.0]]))
        learner.learn(x, y)
        net = learner.network
        weight, readout = net.layers[0].weight.flatten(), net.readout.weight.flatten()
        assert weight.tolist() == pytest.approx([0.5 - dh, 0.25 - 2 * dh]), rule
        assert readout.tolist() == pytest.approx([1.0 - e[0], -1.0 - e[1]]), rule


@pytest.mark.parametrize("sparse,rank", [(1, 0), (2, 0), (0, 2), (3, 2), (0, 0)])
def test_ssdfa_feedback_connectivity(sparse, rank):
    learner = build_learner({"input_dim": 4, "classes": list("abcde"), "hidden": [40, 30],
                             "rule": "ssdfa", "rule_options": {"sparse": sparse, "rank": rank}})
    for k, width in enumerate((40, 30)):
        feedback = learner.rule.fixed[f"feedback.{k}"].double()
        assert feedback.shape == (5, width)
        per_unit = (feedback != 0).sum(dim=0)
        assert torch.all(per_unit == (sparse or 5))
        if rank:
            assert int(torch.linalg.matrix_rank(feedback, rtol=1e-5)) <= rank
        if not rank:
            bound = 1 / math.sqrt(width / math.sqrt(5 * sparse)) if sparse else 1 / math.sqrt(width)
            assert float(feedback.abs().max()) <= bound


def test_biofo_ternary_head_is_shared_and_achlioptas():
    learner = tiny("biofo", hidden=[12] * 3, activation="relu", rule_options={"head": "ternary"})
    net, rule = learner.network, learner.rule
    head = rule.head(net, 0)
    assert all(rule.head(net, k) is head for k in range(3))
    values, counts = torch.unique(head / head.abs().max(), return_counts=True)
    assert values.tolist() == [-1.0, 0.0, 1.0]
    assert counts.tolist() == [6, 24, 6]  # floor(3·12/6) of each sign
    assert rule.fixed == {}


def test_biofo_greedy_schedule_trains_one_layer_at_a_time_and_predicts_from_its_head():
    learner = tiny("biofo", hidden=[5, 5, 5], activation="relu",
                   rule_options={"schedule": "greedy", "greedy_steps": 2})
    x, y = batch(5)
    before = [layer.weight.clone() for layer in learner.network.layers]
    changed = []
    for _ in range(6):
        detail = learner.predict_detail(x)
        stats = learner.learn(x, y)
        assert len(stats.loss_per_layer) == 1
        now = [layer.weight.clone() for layer in learner.network.layers]
        changed.append([int(not torch.equal(a, b)) for a, b in zip(before, now)])
        before = now
        changed[-1].append(int(detail.exit_layer[0]))
    # columns: layer 1, 2, 3 changed; layer the prediction was read from
    assert changed == [
        [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 2], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 1, 3]
    ]


def test_biofo_early_exit_reports_macs_saved():
    x, _ = batch(6, n=10)
    plain = tiny("biofo", hidden=[5, 4, 3], activation="relu")
    full = plain.predict_detail(x)
    head_macs = [3 * 5, 3 * 4]  # the heads a sample passes on its way to the last layer
    layer_macs = [8 * 5, 5 * 4, 4 * 3]

    never = tiny("biofo", hidden=[5, 4, 3], activation="relu", rule_options={"early_exit": 1.0})
    late = never.predict_detail(x)
    assert np.array_equal(late.probabilities, full.probabilities)
    assert late.exit_layer.tolist() == [3] * 10
    assert late.macs_saved == -10 * sum(head_macs)

    first = tiny("biofo", hidden=[5, 4, 3], activation="relu", rule_options={"early_exit": 1e-9})
    early = first.predict_detail(x)
    assert early.exit_layer.tolist() == [1] * 10
    assert early.macs == 10 * (layer_macs[0] + head_macs[0])
    assert early.macs_saved == 10 * (layer_macs[1] + layer_macs[2] + 3 * 3) - 10 * head_macs[0]
    head = first.rule.head(first.network, 0)
    h1 = torch.relu(first.network.layers[0].forward(torch.as_tensor(x)))
    assert np.allclose(early.probabilities, torch.softmax(h1 @ head.T, 1).numpy(), atol=1e-7)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rules_count_macs_of_what_they_compute(rule):
    learner = tiny(rule, hidden=[5, 4])
    x, y = batch(7, n=3)
    inputs = 8 + RULES[rule].extra_inputs(3)  # FF appends the label
    hidden = 3 * (inputs * 5 + 5 * 4)
    # Bio-FO's read-out is the last head, below; FF's is its classifier on layer 2 (3 × 4).
    readout = 0 if rule == "biofo" else 3 * 4 * 3
    forward = outer = hidden + readout
    extra = {
        "bp": 3 * (5 * 4 + 4 * 3),  # transport W_2ᵀ, W_outᵀ
        "fa": 3 * (5 * 4 + 4 * 3),
        "dfa": 3 * 3 * (5 + 4),  # B_kᵀ e
        "sdfa": 3 * 3 * (5 + 4),
        "ssdfa": 3 * 3 * (5 + 4),
        "drtp": 0,  # the target selects a row of B_k
        "biofo": 2 * 3 * 3 * (5 + 4),  # head and its transpose, per layer; last head = read-out
        "pepita": forward + 3 * 8 * 3,  # the second pass and F e
        "ff": 3 * hidden,  # negative and neutral passes, gradients of the negative samples
        "lls": 2 * 3 * 3 * (5 + 4),  # Φ_k and Φ_kᵀ (dense layers are not pooled by default)
        "lls_m": 2 * 3 * 3 * (5 + 4),
        "lls_mxm": 2 * 3 * 3 * (5 + 4) + 2 * 3 * 3 * 3 * 3,  # and q M, δa Mᵀ, qᵀ δa per layer
    }[rule]
    stats = learner.learn(x, y)
    assert stats.macs == forward + outer + extra
    assert stats.bytes_touched > 0 and stats.seconds > 0
