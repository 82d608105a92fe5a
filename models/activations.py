"""Element-wise activations and their derivatives, written out so rules can use f'(z) directly.

Every derivative takes the pre-activation ``z`` (not the output), because the local rules keep
``z_k`` and form ``δz_k = δh_k ⊙ f'(z_k)`` without a graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LEAKY_SLOPE = 0.01


def relu(z: torch.Tensor) -> torch.Tensor:
    return torch.clamp_min(z, 0.0)


def relu_grad(z: torch.Tensor) -> torch.Tensor:
    # 0 at z == 0, as autograd does, so explicit and autograd updates agree bit for bit.
    return (z > 0).to(z.dtype)


def tanh(z: torch.Tensor) -> torch.Tensor:
    return torch.tanh(z)


def tanh_grad(z: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(z)
    return 1.0 - t * t


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(z)


def sigmoid_grad(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s)


def leaky_relu(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z > 0, z, z * LEAKY_SLOPE)


def leaky_relu_grad(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))


def identity(z: torch.Tensor) -> torch.Tensor:
    return z


def identity_grad(z: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(z)


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    grad: Callable[[torch.Tensor], torch.Tensor]


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", relu, relu_grad),
        Activation("tanh", tanh, tanh_grad),
        Activation("sigmoid", sigmoid, sigmoid_grad),
        Activation("leaky_relu", leaky_relu, leaky_relu_grad),
        Activation("identity", identity, identity_grad),
    )
}


def get_activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
