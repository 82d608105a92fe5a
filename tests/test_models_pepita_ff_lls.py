"""PEPITA, Forward-Forward and LLS against their equations (hand-checked cases, a numpy version of
the paper's update, and autograd of the reference code's losses).

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
from models.rules import StepContext
from models.rules.ff import length_normalise, wrong_labels
from models.rules.lls import periodic_basis, pooling_matrix

torch.set_num_threads(1)

CLASSES = ["a", "b", "c"]


def tiny(rule: str, **spec) -> Learner:
    base = {"input_dim": 8, "classes": CLASSES, "hidden": [5, 4], "rule": rule,
            "dtype": "float64", "seed": 7}
    if "layers" in spec:
        del base["hidden"]
    base.update(spec)
    return build_learner(base)


def batch(seed: int = 0, n: int = 6, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal((n, dim)))
    return x, torch.as_tensor(rng.integers(0, len(CLASSES), n))


def rule_grads(learner: Learner, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
    """Every gradient and loss the rule yields for one batch, without applying any."""
    net = learner.network
    grads, losses = {}, []
    with torch.no_grad():
        ctx = StepContext(Cost(), torch.Generator().manual_seed(seed))
        for update in learner.rule.updates(net, net.standardise(x), y, ctx):
            grads.update(update.grads)
            losses.append(update.loss)
    return grads, losses, ctx.cost


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# PEPITA


def test_hand_checked_pepita_step():
    """2 inputs -> 1 ReLU unit -> 2 classes, no dropout, F chosen by hand."""
    learner = build_learner({"input_dim": 2, "classes": ["a", "b"], "hidden": [1], "rule": "pepita",
                             "dtype": "float64", "rule_options": {"keep": 1.0},
                             "optimizer": {"name": "sgd", "lr": 1.0}})
    net = learner.network
    net.layers[0].weight.copy_(torch.tensor([[0.5, 0.25]]))
    net.readout.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    learner.rule.fixed["projection"].copy_(torch.tensor([[0.1, -0.1], [0.2, 0.0]]))
    stats = learner.learn(np.array([[1.0, 2.0]]), np.array([0]))
    # Pass 1: z = h = 1, logits [1, -1], p0 = σ(2), e = [d, -d] with d = p0 - 1.
    # x_mod = x + F e = [1 + 0.2 d, 2 + 0.2 d]; pass 2: h_mod = 1 + 0.15 d.
    p0 = 1 / (1 + math.exp(-2))
    d = p0 - 1
    x_mod = np.array([1 + 0.2 * d, 2 + 0.2 * d])
    h_mod = 1 + 0.15 * d
    p0_mod = 1 / (1 + math.exp(-2 * h_mod))
    expected_w = np.array([0.5, 0.25]) - (1 - h_mod) * x_mod  # ΔW_1 = -(h - h_mod) x_modᵀ
    expected_out = [1 - (p0_mod - 1) * h_mod, -1 - (1 - p0_mod) * h_mod]  # -e_mod h_modᵀ
    assert net.layers[0].weight.flatten().tolist() == pytest.approx(expected_w.tolist())
    assert net.readout.weight.flatten().tolist() == pytest.approx(expected_out)
    assert net.layers[0].bias.tolist() == [0.0] and net.readout.bias.tolist() == [0.0, 0.0]
    assert stats.loss_per_layer == pytest.approx([-math.log(p0)])
    # two passes of 2 + 2, F e 2·2, outer products 2 + 2
    assert stats.macs == 16


def test_pepita_update_is_the_papers_equation_with_one_dropout_mask_for_both_passes():
    learner = tiny("pepita", hidden=[6, 5], rule_options={"keep": 0.7})
    x, y = batch(1)
    mine, losses, _ = rule_grads(learner, x, y, seed=11)
    net, rule = learner.network, learner.rule
    masks = [m.numpy() for m in rule.dropout_masks(net, len(y), torch.Generator().manual_seed(11))]
    assert all(set(np.unique(m)) == {0.0, 1 / 0.7} for m in masks)
    w = [layer.weight.numpy() for layer in net.layers]
    b = [layer.bias.numpy() for layer in net.layers]
    w_out, b_out = net.readout.weight.numpy(), net.readout.bias.numpy()
    target = np.eye(3)[y.numpy()]

    def forward(h0):
        hs = [h0]
        for k in range(2):
            hs.append(_relu(hs[-1] @ w[k].T + b[k]) * masks[k])
        return hs, _softmax(hs[-1] @ w_out.T + b_out) - target

    hs, e = forward(x.numpy())
    x_mod = x.numpy() + e @ rule.fixed["projection"].numpy().T
    hs_mod, e_mod = forward(x_mod)
    n = len(y)
    expected = {
        "layers.0.weight": (hs[1] - hs_mod[1]).T @ x_mod / n,
        "layers.1.weight": (hs[2] - hs_mod[2]).T @ hs_mod[1] / n,
        "readout.weight": e_mod.T @ hs_mod[2] / n,
    }
    assert set(mine) == set(expected)  # biases are never updated
    for name, grad in expected.items():
        assert np.allclose(mine[name].numpy(), grad, rtol=0, atol=1e-15), name
    # A unit dropped for a sample is dropped in both passes, so it contributes nothing.
    dropped = masks[0][0] == 0
    assert dropped.any()
    single, _, _ = rule_grads(learner, x[:1], y[:1], seed=11)
    assert not single["layers.0.weight"][torch.as_tensor(dropped)].any()
    p = _softmax(hs[2] @ w_out.T + b_out)
    assert losses[:2] == [None, None]  # pass 1's cross-entropy comes with the read-out's update
    assert losses[2] == pytest.approx(-np.mean(np.log(p[np.arange(n), y.numpy()])), abs=1e-15)


def test_pepita_projection_has_the_papers_scale():
    learner = build_learner({"input_dim": 600, "classes": CLASSES, "hidden": [4], "rule": "pepita"})
    projection = learner.rule.fixed["projection"]
    bound = 0.05 * math.sqrt(6 / 600)
    assert projection.shape == (600, 3)
    assert float(projection.abs().max()) <= bound
    assert float(projection.abs().max()) > 0.95 * bound  # uniform over the whole range


# Forward-Forward


def test_ff_never_samples_the_true_label_as_negative():
    rng = torch.Generator().manual_seed(0)
    for classes in (2, 3, 5):
        y = torch.arange(classes).repeat(2000)
        negative = wrong_labels(y, classes, rng)
        assert not torch.any(negative == y)
        counts = torch.bincount(negative * classes + y, minlength=classes * classes).reshape(
            classes, classes
        )
        # every wrong label is drawn, about equally often
        expected = 2000 / (classes - 1)
        off_diagonal = counts[~torch.eye(classes, dtype=torch.bool)].double()
        assert torch.all((off_diagonal - expected).abs() < 5 * math.sqrt(expected))


def test_hand_checked_ff_goodness_gradient():
    learner = tiny("ff", hidden=[2], rule_options={"peer_normalization": 0.0})
    h = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)  # one positive, one negative
    dh, loss = learner.rule.goodness_grad(0, h, positive=1)
    # s = G - n = [5 - 2, 1 - 2]; ∂L/∂h = (σ(s) - t)/2 · 2h
    s_pos, s_neg = 1 / (1 + math.exp(-3)), 1 / (1 + math.exp(1))
    assert dh.flatten().tolist() == pytest.approx([s_pos - 1, 2 * (s_pos - 1), 0.0, s_neg])
    assert loss == pytest.approx((math.log(1 + math.exp(-3)) + math.log(1 + math.exp(-1))) / 2)

    peer = tiny("ff", hidden=[2], rule_options={"peer_normalization": 0.5})
    dh_peer, loss_peer = peer.rule.goodness_grad(0, h, positive=1)
    # r = 0.9·0.5 + 0.1·[1, 2] = [0.55, 0.65], mean 0.6; penalty mean((0.6 - r)²) = 0.0025;
    # ∂/∂h_pos = λ · 2 (r - mean r)/n · (1 - μ)/B = 0.5 · 0.1 · [-0.05, 0.05]
    assert peer.rule.running_means["running_mean.0"].tolist() == pytest.approx([0.55, 0.65])
    assert loss_peer == pytest.approx(loss + 0.5 * 0.0025)
    assert (dh_peer - dh).flatten().tolist() == pytest.approx([-0.0025, 0.0025, 0.0, 0.0])


class _ReluFullGrad(torch.autograd.Function):
    """loeweX's ReLU_full_grad: ReLU forward, gradient passed straight through."""

    @staticmethod
    def forward(ctx, z):
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


def test_ff_step_equals_autograd_of_the_reference_losses():
    """loeweX's ff_model.forward written with autograd: per-layer BCE + peer loss with detached,
    length-normalised inputs, and the classifier's cross-entropy on the neutral pass."""
    learner = tiny("ff", hidden=[6, 5, 4])
    learner.rule.classifier.normal_(generator=torch.Generator().manual_seed(1))
    x, y = batch(2)
    net, rule = learner.network, learner.rule
    before = {k: v.clone() for k, v in rule.running_means.items()}
    mine, losses, _ = rule_grads(learner, x, y, seed=5)
    negative = wrong_labels(y, 3, torch.Generator().manual_seed(5))
    eye = torch.eye(3, dtype=torch.float64)
    n = len(y)
    neutral = torch.full((n, 3), 1 / 3, dtype=torch.float64)
    z = torch.cat([torch.cat([x, labels], 1) for labels in (eye[y], eye[negative], neutral)])
    z = z / (torch.sqrt(torch.mean(z**2, dim=-1, keepdim=True)) + 1e-8)
    target = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    features = []
    for k, layer in enumerate(net.layers):
        w = layer.weight.clone().requires_grad_(True)
        b = layer.bias.clone().requires_grad_(True)
        h = _ReluFullGrad.apply(F.linear(z.detach(), w, b))
        running = before[f"running_mean.{k}"] * 0.9 + h[:n].mean(0) * 0.1
        peer = torch.mean((running.mean() - running) ** 2)
        goodness = torch.sum(h[: 2 * n] ** 2, dim=-1) - h.shape[1]
        loss = F.binary_cross_entropy_with_logits(goodness, target) + 0.03 * peer
        grad_w, grad_b = torch.autograd.grad(loss, (w, b))
        assert torch.allclose(mine[f"layers.{k}.weight"], grad_w, rtol=0, atol=1e-14), k
        assert torch.allclose(mine[f"layers.{k}.bias"], grad_b, rtol=0, atol=1e-14), k
        assert losses[k] == pytest.approx(float(loss.detach()), abs=1e-14)
        assert torch.allclose(rule.running_means[f"running_mean.{k}"], running.detach(), atol=1e-15)
        z = h.detach()
        z = z / (torch.sqrt(torch.mean(z**2, dim=-1, keepdim=True)) + 1e-8)
        if k >= 1:
            features.append(z[2 * n :])
    classifier = rule.classifier.clone().requires_grad_(True)
    ce = F.cross_entropy(torch.cat(features, 1) @ classifier.T, y)
    (grad_c,) = torch.autograd.grad(ce, classifier)
    assert torch.allclose(mine["rule.classifier"], grad_c, rtol=0, atol=1e-15)
    assert losses[-1] == pytest.approx(float(ce.detach()), abs=1e-15)
    assert set(mine) == {f"layers.{k}.{p}" for k in range(3) for p in ("weight", "bias")} | {
        "rule.classifier"
    }


def test_ff_predictions_and_their_macs():
    x, _ = batch(3, n=7)
    readout = tiny("ff", hidden=[6, 5, 4])
    readout.rule.classifier.normal_(generator=torch.Generator().manual_seed(2))
    detail = readout.predict_detail(x.numpy())
    hidden = (8 + 3) * 6 + 6 * 5 + 5 * 4
    assert detail.macs == 7 * (hidden + 3 * (5 + 4))  # classifier on layers 2 and 3
    net = readout.network
    h = length_normalise(torch.cat([x, torch.full((7, 3), 1 / 3, dtype=torch.float64)], 1))
    features = []
    for k in range(3):
        h = length_normalise(torch.relu(net.layers[k].forward(h)))
        features.append(h)
    logits = torch.cat(features[1:], 1) @ readout.rule.classifier.T
    assert np.allclose(detail.probabilities, torch.softmax(logits, 1).numpy(), atol=1e-7)

    goodness = tiny("ff", hidden=[6, 5, 4], rule_options={"prediction": "goodness"})
    detail = goodness.predict_detail(x.numpy())
    assert detail.macs == detail.macs_full == 3 * 7 * hidden  # one pass per label
    scores = []
    for c in range(3):
        label = torch.zeros(7, 3, dtype=torch.float64)
        label[:, c] = 1
        h, score = length_normalise(torch.cat([x, label], 1)), 0
        for k in range(3):
            a = torch.relu(goodness.network.layers[k].forward(h))
            score = score + (a**2).sum(1) * (k >= 1)
            h = length_normalise(a)
        scores.append(score)
    expected = torch.softmax(torch.stack(scores, 1), 1).numpy()
    assert np.allclose(detail.probabilities, expected, atol=1e-7)


def test_ff_counts_macs_of_its_three_passes():
    learner = tiny("ff", hidden=[6, 5])
    x, y = batch(4, n=3)
    stats = learner.learn(x.numpy(), y.numpy())
    hidden = (8 + 3) * 6 + 6 * 5
    # positive, negative and neutral passes; gradients of the positive and negative samples;
    # the classifier (on layer 2: 3 × 5) forward and gradient on the neutral samples
    assert stats.macs == 3 * 3 * hidden + 2 * 3 * hidden + 2 * 3 * (3 * 5)
    assert len(stats.loss_per_layer) == 3


# LLS


def test_lls_basis_and_pooling_are_the_reference_formulas():
    sine = periodic_basis(3, 6, "sine", torch.float64)
    omega = np.array([50.0, 281.0, 512.0])  # linspace(50, 512, 3)
    assert np.allclose(sine.numpy(), np.sin(omega[:, None] * np.arange(6)[None, :]), atol=1e-12)
    square = periodic_basis(3, 6, "square", torch.float64)
    assert torch.equal(square, torch.sign(sine))
    assert set(square[:, 1:].flatten().tolist()) == {-1.0, 1.0}  # t = 0 is the only zero column
    h = torch.randn(4, 2, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pooled = h @ pooling_matrix(10, 4, torch.float64)
    assert torch.allclose(pooled, F.adaptive_avg_pool1d(h, 4), atol=1e-15)


LLS_LAYERS = [
    {"type": "conv1d", "channels": 3, "kernel": 3, "padding": 1, "in_channels": 1},
    {"type": "dense", "units": 7, "activation": "tanh"},
    {"type": "dense", "units": 5},
]


@pytest.mark.parametrize("rule", ["lls", "lls_m", "lls_mxm"])
def test_lls_delta_is_autograd_of_the_reference_local_loss(rule):
    """``compute_LLS`` of the reference, with autograd restricted to one layer."""
    options = {"temperature": 0.7, "label_smoothing": 0.1, "dense_dim": 3, "conv_positions": 4,
               "waveform": "sine"}
    learner = tiny(rule, layers=LLS_LAYERS, rule_options=options)
    x, y = batch(5)
    mine, losses, cost = rule_grads(learner, x, y)
    # Per sample: forward and weight gradients of conv 72, dense 168 and 35, read-out 15; pooling
    # and its transpose over 24, 9 and 7 (input, bin) pairs; Φ and Φᵀ of 3 × (12, 3, 3); for
    # LLS-MxM q M, δa Mᵀ and qᵀ δa (3 × 9) per layer.
    per_sample = 2 * 290 + 2 * (24 + 9 + 7) + 2 * 3 * (12 + 3 + 3)
    assert cost.macs == 6 * (per_sample + (3 * 3 * 9 if rule == "lls_mxm" else 0))
    net, rule_ = learner.network, learner.rule
    h = net.standardise(x)
    sizes = [(3, 8, 4), (1, 7, 3), (1, 5, 3)]  # channels, length, pooled size
    for k, layer in enumerate(net.layers):
        w = layer.weight.clone().requires_grad_(True)
        b = layer.bias.clone().requires_grad_(True)
        h_in = h.detach()
        if layer.kind == "conv1d":
            z = F.conv1d(h_in.reshape(len(y), 1, 8), w, b, padding=1).reshape(len(y), -1)
        else:
            z = F.linear(h_in, w, b)
        out = net.activations[k].fn(z)
        channels, length, size = sizes[k]
        latents = F.adaptive_avg_pool1d(out.reshape(len(y), channels, length), size)
        latents = F.normalize(latents.reshape(len(y), -1), dim=1)
        t = np.arange(latents.shape[1])
        basis = torch.as_tensor(np.sin(np.linspace(50, 512, 3)[:, None] * t))
        pred = latents @ basis.T
        params = [w, b]
        if rule == "lls_m":
            m = rule_.modulations[f"scale.{k}"].clone().requires_grad_(True)
            pred, params = m * pred, params + [m]
        elif rule == "lls_mxm":
            m = rule_.modulations[f"mix.{k}"].clone().requires_grad_(True)
            pred, params = pred @ m, params + [m]
        loss = F.cross_entropy(pred / 0.7, y, label_smoothing=0.1)
        expected = torch.autograd.grad(loss, params)
        assert torch.allclose(mine[f"layers.{k}.weight"], expected[0], rtol=0, atol=1e-14), k
        assert torch.allclose(mine[f"layers.{k}.bias"], expected[1], rtol=0, atol=1e-14), k
        if rule != "lls":
            key = f"rule.{'scale' if rule == 'lls_m' else 'mix'}.{k}"
            assert torch.allclose(mine[key], expected[2], rtol=0, atol=1e-14), k
        assert losses[k] == pytest.approx(float(loss.detach()), abs=1e-14)
        h = out.detach()
    # The read-out learns by cross-entropy on the detached last activity.
    w_out = net.readout.weight.clone().requires_grad_(True)
    ce = F.cross_entropy(F.linear(h, w_out, net.readout.bias), y)
    (grad_out,) = torch.autograd.grad(ce, w_out)
    assert torch.allclose(mine["readout.weight"], grad_out, rtol=0, atol=1e-15)
    assert losses[-1] == pytest.approx(float(ce.detach()), abs=1e-15)
