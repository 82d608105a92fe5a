"""PEPITA (Dellaferrera & Kreiman, ICML 2022): learning from the difference of two forward passes.

With dropout masks ``m_l`` (inverted, keep rate ``keep``) drawn once per step and used by both
passes, ``y*`` the one-hot target and ``F ∈ R^{d_in×C}`` a fixed random projection:

    pass 1:  h_l = f(z_l) ⊙ m_l,  h_0 = x ;   e = softmax(W_out h_L) − y*
    x_mod = x + F e
    pass 2:  the same network on x_mod gives h_l^mod (same masks) and e^mod
    ΔW_1 = −(h_1 − h_1^mod) x_modᵀ ;  ΔW_l = −(h_l − h_l^mod) (h_{l-1}^mod)ᵀ
    ΔW_out = −e^mod (h_L^mod)ᵀ
    W ← W + η ΔW / B   (the paper's momentum: v ← 0.9 v + η ΔW / B ; W ← W + v)

so the gradient estimate handed to the optimizer is ``(h_l − h_l^mod)ᵀ h_{l-1}^mod / B`` per
hidden layer and ``e^modᵀ h_L^mod / B`` for the read-out; SGD with momentum μ and learning rate η
then performs exactly the paper's update. ``F`` is He-uniform in d_in scaled by
``feedback_scale``: U(±0.05·√(6/d_in)), as in the reference notebook. The reference networks have
no biases; here biases exist (the shared layer type) but PEPITA never updates them, and the
default He initialisation sets them to zero, so the default model is the paper's. Inference uses
no dropout (the masks are inverted, so no rescaling is needed). The loss reported is pass 1's
cross-entropy (the dropped-out network's prediction before the update).

Pass 2 and the updates are interleaved: W_l is released as soon as ``h_l^mod`` is known, since
nothing uses W_l again in this step.

Defaults: the paper's fully connected setting — ReLU, He-uniform weights with zero (frozen)
biases, dropout keep 0.9, ``feedback_scale`` 0.05, SGD with momentum 0.9 — except η, chosen for
the daemon's streaming use on real MIT-BIH beats (records 208, 213, 233, 200; 256×256 network;
600 single labels each; cross-entropy and balanced accuracy on the later beats):

======  =====================  ===========================================
η       record 208, 64×64,     streaming: held-out cross-entropy, bal. acc.
        300 batches of 32
======  =====================  ===========================================
1e-4    training CE −55%       0.37, 0.745 (slowest start)
3e-4    −77%                   0.28, 0.773 (second seed: 0.35, 0.739)
1e-3    −88%                   0.32, 0.755 (second seed: 0.49, 0.706)
1e-2    −95%                   1.37, 0.738 (over-confident)
0.1     −72%                   diverged (NaN) on record 208
======  =====================  ===========================================

η = 3e-4. The paper's 1e-2 (CIFAR-10) fits batches fastest but single labels make it
over-confident; the Bio-FO repository's MIT-BIH value 1e-4 does learn here, only slowest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from models.cost import Cost
from models.layers import Layer
from models.network import Network
from models.rules.base import (
    Rule,
    StepContext,
    Update,
    counted_layer_forward,
    counted_readout,
    one_hot,
)
from models.seeding import generator


class PEPITA(Rule):
    """PEPITA: learning from the difference of two forward passes, the second on ``x + F e``.

    Stores between steps: ``F`` (``d_in·C`` values). Nothing else.
    Cost per sample: two forward passes 2F (F = Σ layer MACs + read-out) + ``d_in·C`` for ``F e`` +
    weight gradients F, i.e. 3F + d_in·C; no feedback matrices and no transport of W. Memory: every
    layer's pass-1 activation (and its dropout mask) until pass 2 reaches it, one layer of pass 2 at
    a time; partially update-locked (pass 2 needs the output error of pass 1).

    The projection is ``d_in × C``; a step costs ``2·36`` (two passes) + ``3·2`` (``F e``) + 36:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> pepita = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4],
    ...                         "rule": "pepita"})
    >>> tuple(pepita.rule.fixed["projection"].shape)
    (3, 2)
    >>> step = pepita.learn(np.array([[0.5, -1.0, 2.0]]), np.array([1]))
    >>> step.macs, len(step.loss_per_layer)  # one loss: pass 1's cross-entropy
    (114, 1)
    """

    name = "pepita"
    defaults = {
        "activation": "relu",
        "init": "kaiming",
        "optimizer": {"name": "sgd", "lr": 3e-4, "momentum": 0.9},
    }

    def __init__(
        self, network: Network, seed: int, keep: float = 0.9, feedback_scale: float = 0.05
    ) -> None:
        super().__init__(network, seed)
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"pepita keep must be in (0, 1], got {keep}")
        if feedback_scale <= 0:
            raise ValueError(f"pepita feedback_scale must be positive, got {feedback_scale}")
        self.keep = float(keep)
        self.feedback_scale = float(feedback_scale)
        bound = self.feedback_scale * math.sqrt(6.0 / network.input_dim)
        shape = (network.input_dim, network.num_classes)
        projection = torch.empty(shape, dtype=network.dtype)
        self.fixed["projection"] = projection.uniform_(
            -bound, bound, generator=generator(seed, "rule")
        )

    @property
    def options(self) -> dict[str, Any]:
        return {"keep": self.keep, "feedback_scale": self.feedback_scale}

    def dropout_masks(
        self, network: Network, batch: int, rng: torch.Generator
    ) -> list[torch.Tensor | None]:
        """One inverted dropout mask per hidden layer (``None`` when nothing is dropped)."""
        if self.keep == 1.0:
            return [None] * network.depth
        masks: list[torch.Tensor | None] = []
        for layer in network.layers:
            keep = torch.full((batch, layer.out_features), self.keep, dtype=network.dtype)
            masks.append(torch.bernoulli(keep, generator=rng) / self.keep)
        return masks

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        batch, cost = h0.shape[0], ctx.cost
        masks = self.dropout_masks(network, batch, ctx.generator)
        target = one_hot(y, network.num_classes, network.dtype)

        pass1: list[torch.Tensor] = []  # h_1 .. h_L of pass 1, dropped as pass 2 reaches them
        h = h0
        for index in range(network.depth):
            h = _masked(counted_layer_forward(network, index, h, cost)[1], masks[index])
            pass1.append(h)
        log_p = torch.log_softmax(counted_readout(network, h, cost), dim=1)
        loss = float(-log_p.gather(1, y[:, None]).mean())
        error = log_p.exp() - target

        projection = self.fixed["projection"]
        h_mod = h0 + error.mm(projection.t())
        cost.add_macs(batch * projection.numel())
        cost.touch(error, projection, h_mod)

        for index, layer in enumerate(network.layers):
            h_next_mod = counted_layer_forward(network, index, h_mod, cost)[1]
            h_next_mod = _masked(h_next_mod, masks[index])
            delta = (pass1.pop(0) - h_next_mod) / batch
            grad = _weight_grad(layer, delta, h_mod, cost)
            yield Update({f"layers.{index}.weight": grad})
            h_mod = h_next_mod
        error_mod = (torch.softmax(counted_readout(network, h_mod, cost), dim=1) - target) / batch
        grad = _weight_grad(network.readout, error_mod, h_mod, cost)
        yield Update({"readout.weight": grad}, loss)


def _masked(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return h if mask is None else h * mask


def _weight_grad(layer: Layer, delta: torch.Tensor, h_in: torch.Tensor, cost: Cost) -> torch.Tensor:
    grad_w, _ = layer.grads(delta, h_in)
    cost.add_macs(delta.shape[0] * layer.macs_per_sample)
    cost.touch(delta, h_in, grad_w)
    return grad_w
