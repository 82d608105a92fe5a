"""Direct random target projection (Frenkel, Lefebvre & Bol 2021).

Hidden layers learn from the target alone: ``δh_k = B_kᵀ y*`` (for a one-hot target this selects
row ``y`` of ``B_k ∈ R^{C×n_k}``, so it costs no multiplications), ``δz_k = δh_k ⊙ f'(z_k)``,
``ΔW_k = δz_k h_{k-1}ᵀ``. The read-out learns from its own error ``softmax(logits) − y*``.
``B_k`` is He-uniform U(±√(6/n_k)) as in the reference code. Because the signal does not depend on
the output, layer k is updated right after its own forward pass (update-unlocked).

Defaults: tanh hidden units, PyTorch's default initialisation, SGD with Nesterov momentum 0.9 and
lr 1e-4 (the reference code's defaults; its sigmoid/BCE output is replaced by the softmax/CE
read-out every rule here shares, which has the same error form ``ŷ − y*``).
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
    counted_layer_forward,
    counted_readout,
    kaiming_uniform,
    layer_grads,
    readout_grads,
    softmax_error,
)
from models.seeding import generator


class DRTP(Rule):
    """Direct random target projection: hidden layers learn from the target alone, update-unlocked.

    Stores between steps: ``B_k`` for every hidden layer (``C·Σ n_k`` values).
    Cost per sample: forward F + weight gradients F; no feedback products. Memory: one layer's
    input, z and gradients at a time, independent of depth.

    One ``C × n_k`` projection per hidden layer; a step is forward 36 plus gradients 36 MACs:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> drtp = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4],
    ...                       "rule": "drtp"})
    >>> sorted(drtp.rule.fixed)
    ['feedback.0', 'feedback.1']
    >>> drtp.learn(np.array([[0.5, -1.0, 2.0]]), np.array([1])).macs
    72
    """

    name = "drtp"
    defaults = {
        "activation": "tanh",
        "init": "default",
        "optimizer": {"name": "sgd", "lr": 1e-4, "momentum": 0.9, "nesterov": True},
    }

    def __init__(self, network: Network, seed: int) -> None:
        super().__init__(network, seed)
        rng = generator(seed, "rule")
        for index, layer in enumerate(network.layers):
            width = layer.out_features
            self.fixed[f"feedback.{index}"] = kaiming_uniform(
                (network.num_classes, width), width, rng, network.dtype
            )

    @property
    def options(self) -> dict[str, Any]:
        return {}

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        h = h0
        for index in range(network.depth):
            z, h_next = counted_layer_forward(network, index, h, ctx.cost)
            dh = self.fixed[f"feedback.{index}"][y] / y.shape[0]
            ctx.cost.touch(dh)
            dz = dh * network.activations[index].grad(z)
            yield Update(layer_grads(network, index, dz, h, ctx.cost))
            h = h_next
        error, loss = softmax_error(counted_readout(network, h, ctx.cost), y)
        yield Update(readout_grads(network, error, h, ctx.cost), loss)
