"""The one interface every learning rule implements.

A rule turns a labelled batch into explicit gradient estimates, one group per layer, and never
touches the weights itself: the ``Learner`` hands each group to the optimizer. Concretely,

``Rule.updates(network, h0, y, ctx) -> Iterator[Update]``

- ``h0`` is the standardised input ``(batch, network.input_dim)``; ``y`` the int64 labels;
- each ``Update`` holds ``grads``, a dict from parameter name (``"layers.0.weight"``,
  ``"readout.bias"``, or a rule-owned ``"rule.…"`` name) to ``∂L/∂θ`` as the rule estimates it,
  already averaged over the batch, and the ``loss`` that produced it when the rule has one;
- **the Learner applies each update as soon as it is yielded**, before the generator resumes. A
  rule must therefore finish every use of a parameter before yielding that parameter's update
  (BP computes ``δh_{k-1} = W_kᵀ δz_k`` before yielding ``W_k``'s gradient). Update-unlocked rules
  (Bio-FO, DRTP) yield layer k right after its forward pass, so at any time only one layer's
  activations and gradients are alive, which is what makes their memory independent of depth;
- ``ctx.cost`` receives the MACs and bytes the step performs, ``ctx.generator`` is the only
  source of randomness a rule may use while learning (its state is checkpointed with the Learner).

``updates`` is called under ``torch.no_grad()``. A rule may enable autograd inside a single layer
for a local loss (detached input), never across layers; BP is the one exception by definition,
and even BP here is written out by hand.

Fixed random matrices (heads, feedback matrices) are drawn once in ``__init__`` from ``seed`` and
kept in ``self.fixed``; they are part of ``state_dict()``, so a checkpoint carries them and an
inference engine that is not torch never needs torch's random generator to rebuild them.

Other hooks, with defaults that fit most rules:

- ``predict(network, h0) -> Prediction``: softmax of the read-out. Bio-FO overrides it for early
  exit and for the greedy schedule (prediction from the head of the layer being trained), FF to
  predict through its own classifier. ``models.export`` writes each of these as an ONNX graph.
- ``parameters()``: trainable tensors the rule owns, by short name; the optimizer knows them as
  ``"rule.<name>"``, which is also the name an ``Update`` uses for them.
- ``extra_inputs(num_classes)``: inputs the first layer needs besides the features.
- ``counters``: int64 tensors the rule advances while learning (e.g. a schedule position).

How PEPITA, FF and LLS use these hooks:

- PEPITA (``pepita.py``): ``F`` (``d_in × C``) lives in ``fixed``; ``updates`` runs the two
  forward passes with dropout masks from ``ctx.generator`` shared by both, and yields
  ``(h_k − h_k^mod) ⊗ h_{k-1}^mod`` per layer as soon as pass 2 has passed it, then the
  read-out's ``e^mod ⊗ h_L^mod``.
- FF (``ff.py``): ``extra_inputs`` returns C, so the first layer sees ``[features, label]``;
  negative labels come from ``ctx.generator``; each layer's goodness-loss gradient is written out;
  the linear classifier on the activities is a rule-owned parameter, its per-layer running means
  are extra ``state_dict`` entries, and ``predict`` is overridden to use the classifier.
- LLS (``lls.py``): the periodic bases ``Φ_k`` live in ``fixed``; ``updates`` is Bio-FO's walk with
  ``Φ_k·norm(pool(h_k))/T`` as the local head; LLS-M / LLS-MxM's ``m`` / ``M`` are rule-owned
  ``parameters()``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from models.cost import Cost
from models.network import Network, Trace


@dataclass
class Update:
    grads: dict[str, torch.Tensor]
    loss: float | None = None


@dataclass
class StepContext:
    cost: Cost
    generator: torch.Generator


@dataclass
class Prediction:
    probabilities: torch.Tensor  # (batch, C)
    exit_layer: torch.Tensor  # (batch,) int64: k such that the answer was read from h_k
    macs: int
    macs_full: int  # what the plain forward pass through every layer and the read-out costs


class Rule(ABC):
    name: ClassVar[str]
    # Spec fields the factory uses when a spec leaves them out: "activation", "init", "optimizer".
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, network: Network, seed: int) -> None:
        self.seed = seed
        self.fixed: dict[str, torch.Tensor] = {}
        self.counters: dict[str, torch.Tensor] = {}

    @property
    @abstractmethod
    def options(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this rule (the spec's ``rule_options``)."""

    @abstractmethod
    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]: ...

    @classmethod
    def extra_inputs(cls, num_classes: int) -> int:
        return 0

    def parameters(self) -> dict[str, torch.Tensor]:
        return {}

    def predict(self, network: Network, h0: torch.Tensor) -> Prediction:
        batch = h0.shape[0]
        macs = batch * network.forward_macs_per_sample()
        return Prediction(
            probabilities=torch.softmax(network.logits(h0), dim=1),
            exit_layer=torch.full((batch,), network.depth, dtype=torch.int64),
            macs=macs,
            macs_full=macs,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.fixed, **self.parameters(), **self.counters}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        if set(state) != set(own):
            raise KeyError(
                f"rule {self.name} state keys differ: missing {sorted(set(own) - set(state))}, "
                f"unexpected {sorted(set(state) - set(own))}"
            )
        for key, tensor in own.items():
            copy_exact(tensor, state[key], f"rule.{key}")


def check_fits(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if source.shape != target.shape or source.dtype != target.dtype:
        raise ValueError(
            f"{name}: stored {source.dtype} {tuple(source.shape)} does not fit "
            f"{target.dtype} {tuple(target.shape)}"
        )


def copy_exact(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    check_fits(target, source, name)
    target.copy_(source)


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, num_classes).to(dtype)


def softmax_error(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(softmax(logits) − y*) / batch`` (the gradient of the batch-mean cross-entropy with
    respect to the logits) and that cross-entropy."""
    log_p = torch.log_softmax(logits, dim=1)
    loss = -log_p.gather(1, y[:, None]).mean()
    error = log_p.exp() - one_hot(y, logits.shape[1], logits.dtype)
    return error / logits.shape[0], float(loss)


def kaiming_uniform(
    shape: tuple[int, ...], fan: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """U(±√(6/fan)): torch.nn.init.kaiming_uniform_ with its default gain, as the DRTP code uses."""
    bound = math.sqrt(6.0 / fan)
    return torch.empty(shape, dtype=dtype).uniform_(-bound, bound, generator=generator)


def layer_grads(
    network: Network, index: int, dz: torch.Tensor, h_in: torch.Tensor, cost: Cost
) -> dict[str, torch.Tensor]:
    """Named gradients of hidden layer ``index`` for ``δz`` and its input, with their cost."""
    layer = network.layers[index]
    grad_w, grad_b = layer.grads(dz, h_in)
    cost.add_macs(dz.shape[0] * layer.macs_per_sample)
    cost.touch(dz, h_in, grad_w, grad_b)
    return {f"layers.{index}.weight": grad_w, f"layers.{index}.bias": grad_b}


def readout_grads(
    network: Network, error: torch.Tensor, h_last: torch.Tensor, cost: Cost
) -> dict[str, torch.Tensor]:
    grad_w, grad_b = network.readout.grads(error, h_last)
    cost.add_macs(error.shape[0] * network.readout.macs_per_sample)
    cost.touch(error, h_last, grad_w, grad_b)
    return {"readout.weight": grad_w, "readout.bias": grad_b}


def counted_layer_forward(
    network: Network, index: int, h: torch.Tensor, cost: Cost
) -> tuple[torch.Tensor, torch.Tensor]:
    layer = network.layers[index]
    z, h_next = network.layer_forward(index, h)
    cost.add_macs(h.shape[0] * layer.macs_per_sample)
    cost.touch(h, layer.weight, layer.bias, z, h_next)
    return z, h_next


def counted_forward(network: Network, h0: torch.Tensor, cost: Cost) -> Trace:
    """The full forward pass, keeping every layer's z and h (for rules that wait for the error)."""
    trace = network.forward(h0)
    cost.add_macs(h0.shape[0] * network.forward_macs_per_sample())
    for layer in [*network.layers, network.readout]:
        cost.touch(layer.weight, layer.bias)
    cost.touch(*trace.h, *trace.z, trace.logits)
    return trace


def counted_readout(network: Network, h_last: torch.Tensor, cost: Cost) -> torch.Tensor:
    logits = network.readout.forward(h_last)
    cost.add_macs(h_last.shape[0] * network.readout.macs_per_sample)
    cost.touch(h_last, network.readout.weight, network.readout.bias, logits)
    return logits
