"""Direct feedback alignment (Nøkland 2016) and its sign variant sDFA.

The output error is sent straight to every hidden layer through a fixed random matrix:
``δh_k = B_kᵀ e`` (DFA) or ``δh_k = B_kᵀ sign(e)`` (sDFA), with ``e = softmax(logits) − y*``,
``B_k ∈ R^{C×n_k}`` He-uniform U(±√(6/n_k)) as in the DRTP repository; then
``δz_k = δh_k ⊙ f'(z_k)`` and ``ΔW_k = δz_k h_{k-1}ᵀ``. The read-out learns from its own error.
With one hidden layer and ``B_1 = W_out`` this is BP.

Defaults: tanh, zero forward weights, SGD with Nesterov momentum 0.9 and lr 1e-4 (the DRTP
repository's settings for DFA/sDFA; Nøkland shows zero initial weights work).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from models.network import Network
from models.rules.base import (
    Rule,
    StepContext,
    Update,
    counted_forward,
    kaiming_uniform,
    layer_grads,
    readout_grads,
    softmax_error,
)
from models.seeding import generator


class DFA(Rule):
    """DFA: the output error reaches every hidden layer through a fixed random ``B_k``.

    Stores between steps: ``B_k`` for every hidden layer (``C·Σ n_k`` values).
    Cost per sample: forward F + ``C·n_k`` per hidden layer for the feedback + weight gradients F
    (no sequential transport; the hidden updates are independent of each other). Memory: every
    layer's z and h until the error is known (update-locked), plus one layer's gradients.

    One ``C × n_k`` matrix per hidden layer; a step costs forward 36, feedback ``2·4`` per layer
    and gradients 36, and raises the probability of the label it learned:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> dfa = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4],
    ...                      "rule": "dfa"})
    >>> [tuple(b.shape) for b in dfa.rule.fixed.values()]
    [(2, 4), (2, 4)]
    >>> beats = np.array([[0.5, -1.0, 2.0]])
    >>> before = dfa.predict(beats)[0, 1]
    >>> dfa.learn(beats, np.array([1])).macs
    88
    >>> bool(dfa.predict(beats)[0, 1] > before)
    True
    """

    name = "dfa"
    defaults = {
        "activation": "tanh",
        "init": "zero",
        "optimizer": {"name": "sgd", "lr": 1e-4, "momentum": 0.9, "nesterov": True},
    }

    def __init__(self, network: Network, seed: int) -> None:
        super().__init__(network, seed)
        rng = generator(seed, "rule")
        for index, layer in enumerate(network.layers):
            self.fixed[f"feedback.{index}"] = self.draw_feedback(
                network.num_classes, layer.out_features, rng, network.dtype
            )

    @property
    def options(self) -> dict[str, Any]:
        return {}

    def draw_feedback(
        self, num_classes: int, width: int, rng: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        return kaiming_uniform((num_classes, width), width, rng, dtype)

    def signal(self, error: torch.Tensor) -> torch.Tensor:
        """What is broadcast to the hidden layers, from the batch-scaled error ``e/batch``."""
        return error

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        trace = counted_forward(network, h0, ctx.cost)
        error, loss = softmax_error(trace.logits, y)
        broadcast = self.signal(error)
        yield Update(readout_grads(network, error, trace.h[-1], ctx.cost), loss)
        for index in range(network.depth):
            feedback = self.fixed[f"feedback.{index}"]
            dh = broadcast.mm(feedback)
            ctx.cost.add_macs(broadcast.shape[0] * feedback.numel())
            ctx.cost.touch(broadcast, feedback, dh)
            dz = dh * network.activations[index].grad(trace.z[index])
            yield Update(layer_grads(network, index, dz, trace.h[index], ctx.cost))


class SDFA(DFA):
    """Sign DFA: DFA broadcasting ``sign(e)`` instead of ``e``.

    Stores between steps and cost per sample: as DFA (the sign costs no multiplication). What
    is broadcast, for a batch of one:

    >>> import torch
    >>> from models.factory import build_learner
    >>> sdfa = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4], "rule": "sdfa"})
    >>> sorted(sdfa.rule.fixed)
    ['feedback.0']
    >>> sdfa.rule.signal(torch.tensor([[0.3, -0.3]]))
    tensor([[ 1., -1.]])
    """

    name = "sdfa"

    def signal(self, error: torch.Tensor) -> torch.Tensor:
        return torch.sign(error) / error.shape[0]
