"""Optimizers that apply a rule's gradient estimates, written as explicit tensor code.

A rule produces, per parameter name, an estimate ``g`` of the gradient of its loss; the optimizer
moves the bound parameter against it in place. ``step`` may be called with any subset of the bound
parameters (update-unlocked rules apply one layer at a time), so all state is per parameter,
including Adam's step count. State is plain tensors, created at ``bind`` so that a fresh
optimizer and a trained one have the same ``state_dict`` keys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from models.cost import Cost


class Optimizer(ABC):
    name: str

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}
        self.state: dict[str, torch.Tensor] = {}

    def bind(self, params: dict[str, torch.Tensor]) -> None:
        self.params = dict(params)
        self.state = {}
        for name, param in self.params.items():
            for slot, tensor in self._new_state(param).items():
                self.state[f"{name}.{slot}"] = tensor

    @abstractmethod
    def _new_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _update(self, name: str, param: torch.Tensor, grad: torch.Tensor, cost: Cost) -> None: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def step(self, grads: dict[str, torch.Tensor], cost: Cost | None = None) -> None:
        cost = cost if cost is not None else Cost()
        with torch.no_grad():
            for name, grad in grads.items():
                if name not in self.params:
                    raise KeyError(f"optimizer has no parameter {name!r}")
                param = self.params[name]
                if grad.shape != param.shape:
                    raise ValueError(
                        f"gradient for {name} has shape {tuple(grad.shape)}, "
                        f"parameter has {tuple(param.shape)}"
                    )
                self._update(name, param, grad, cost)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.state)


class SGD(Optimizer):
    """``p ← p − lr·d`` with ``g' = g + wd·p``; momentum ``v ← μv + g'``; ``d = v`` or, with
    Nesterov, ``d = g' + μv`` (PyTorch's convention)."""

    name = "sgd"

    def __init__(
        self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__()
        if nesterov and momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay

    def _new_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"velocity": torch.zeros_like(param)} if self.momentum else {}

    def _update(self, name: str, param: torch.Tensor, grad: torch.Tensor, cost: Cost) -> None:
        g = grad + self.weight_decay * param if self.weight_decay else grad
        cost.touch(param, grad)
        if self.momentum:
            velocity = self.state[f"{name}.velocity"]
            velocity.mul_(self.momentum).add_(g)
            cost.touch(velocity, velocity)
            g = g + self.momentum * velocity if self.nesterov else velocity
        param.sub_(self.lr * g)
        cost.touch(param)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Kingma & Ba: ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) g²``,
    ``p ← p − lr · m̂ / (√v̂ + ε)`` with bias-corrected ``m̂ = m/(1−β1ᵗ)``, ``v̂ = v/(1−β2ᵗ)``;
    ``weight_decay`` adds ``wd·p`` to g (L2, as torch.optim.Adam)."""

    name = "adam"

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = eps
        self.weight_decay = weight_decay

    def _new_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "m": torch.zeros_like(param),
            "v": torch.zeros_like(param),
            "step": torch.zeros((), dtype=torch.int64),
        }

    def _update(self, name: str, param: torch.Tensor, grad: torch.Tensor, cost: Cost) -> None:
        g = grad + self.weight_decay * param if self.weight_decay else grad
        m, v, step = (self.state[f"{name}.{slot}"] for slot in ("m", "v", "step"))
        step.add_(1)
        t = int(step)
        m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
        cost.touch(param, grad, m, v, param, m, v)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.lr,
            "betas": [self.beta1, self.beta2],
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}


def build_optimizer(config: dict[str, Any]) -> Optimizer:
    options = dict(config)
    name = options.pop("name", None)
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    try:
        return OPTIMIZERS[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options for optimizer {name!r}: {error}") from None
