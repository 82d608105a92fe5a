"""Activations, layers, masks and optimizers against their formulas and against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.activations import ACTIVATIONS
from models.layers import Conv1d, Dense, local_mask, random_mask
from models.optim import SGD, Adam

torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    activation = ACTIVATIONS[name]
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_(True)
    (expected,) = torch.autograd.grad(activation.fn(z).sum(), z)
    assert torch.allclose(activation.grad(z.detach()), expected, rtol=0, atol=1e-15)


def test_local_mask_is_a_sliding_receptive_field():
    mask = local_mask(10, 4, 3)
    assert mask.sum(dim=1).tolist() == [3.0, 3.0, 3.0, 3.0]
    starts = [int(row.nonzero()[0]) for row in mask]
    assert starts == [0, 2, 5, 7]  # centres 0, 3, 6, 9; edge windows shifted inwards
    for row, start in zip(mask, starts):
        assert row[start : start + 3].tolist() == [1.0, 1.0, 1.0]


def test_random_mask_has_fixed_fan_in_and_depends_only_on_seed():
    first = random_mask(20, 6, 0.25, torch.Generator().manual_seed(3))
    again = random_mask(20, 6, 0.25, torch.Generator().manual_seed(3))
    other = random_mask(20, 6, 0.25, torch.Generator().manual_seed(4))
    assert first.sum(dim=1).tolist() == [5.0] * 6
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_masked_dense_forward_and_grads_follow_the_mask():
    g = torch.Generator().manual_seed(0)
    mask = random_mask(6, 4, 0.5, g, torch.float64)
    weight = torch.randn(4, 6, generator=g, dtype=torch.float64)
    layer = Dense(weight.clone(), torch.randn(4, generator=g, dtype=torch.float64), mask)
    h = torch.randn(3, 6, generator=g, dtype=torch.float64)
    assert torch.allclose(layer.forward(h), h @ (mask * weight).T + layer.bias)
    dz = torch.randn(3, 4, generator=g, dtype=torch.float64)
    grad_w, grad_b = layer.grads(dz, h)
    assert torch.allclose(grad_w, mask * (dz.T @ h))
    assert torch.allclose(grad_b, dz.sum(0))
    assert torch.all(grad_w[mask == 0] == 0)
    assert layer.macs_per_sample == int(mask.sum())


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 2), (2, 1)])
def test_conv1d_forward_update_and_transport_match_torch(stride, padding):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    layer = Conv1d(weight, bias, in_length=11, stride=stride, padding=padding)
    h = torch.randn(5, 2 * 11, generator=g, dtype=torch.float64, requires_grad=True)
    w = weight.clone().requires_grad_(True)
    b = bias.clone().requires_grad_(True)
    reference = F.conv1d(h.reshape(5, 2, 11), w, b, stride=stride, padding=padding)
    assert torch.allclose(layer.forward(h.detach()), reference.reshape(5, -1), atol=1e-12)

    dz = torch.randn(5, layer.out_features, generator=g, dtype=torch.float64)
    grad_h, grad_w, grad_b = torch.autograd.grad(reference.reshape(5, -1), (h, w, b), dz)
    mine_w, mine_b = layer.grads(dz, h.detach())
    assert torch.allclose(mine_w, grad_w, atol=1e-12)
    assert torch.allclose(mine_b, grad_b, atol=1e-12)
    assert torch.allclose(layer.input_grad(dz), grad_h, atol=1e-12)
    assert layer.macs_per_sample == 3 * layer.out_length * 2 * 4


def _optimizer_pair(kind):
    p_mine = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    p_torch = p_mine.clone().requires_grad_(True)
    if kind == "sgd":
        mine = SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        ref = torch.optim.SGD([p_torch], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    elif kind == "sgd-plain":
        mine = SGD(lr=0.05)
        ref = torch.optim.SGD([p_torch], lr=0.05)
    else:
        mine = Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
        ref = torch.optim.Adam([p_torch], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    mine.bind({"w": p_mine})
    return mine, ref, p_mine, p_torch


@pytest.mark.parametrize("kind", ["sgd", "sgd-plain", "adam"])
def test_optimizers_match_torch_optim(kind):
    mine, ref, p_mine, p_torch = _optimizer_pair(kind)
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        grad = torch.randn(3, 4, generator=g, dtype=torch.float64)
        mine.step({"w": grad})
        p_torch.grad = grad.clone()
        ref.step()
    assert torch.allclose(p_mine, p_torch.detach(), rtol=0, atol=1e-14)


def test_optimizer_state_is_per_parameter():
    """Stepping layers one at a time (update-unlocked rules) equals stepping them together."""
    g = torch.Generator().manual_seed(5)
    grads = [{"a": torch.randn(3, generator=g), "b": torch.randn(2, generator=g)} for _ in range(3)]
    together, apart = Adam(lr=0.1), Adam(lr=0.1)
    together.bind({"a": torch.ones(3), "b": torch.ones(2)})
    apart.bind({"a": torch.ones(3), "b": torch.ones(2)})
    for step in grads:
        together.step(step)
        apart.step({"b": step["b"]})
        apart.step({"a": step["a"]})
    for name in ("a", "b"):
        assert torch.equal(together.params[name], apart.params[name])
    assert int(apart.state["a.step"]) == 3
