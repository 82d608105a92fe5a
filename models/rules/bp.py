"""Backpropagation, written out by hand (the reference every other rule is compared with).

Step: forward pass keeping every ``z_k`` and ``h_k``; ``e = (softmax(logits) − y*)/batch``;
``δh_L = W_outᵀ e``; then for k = L..1: ``δz_k = δh_k ⊙ f'(z_k)``, ``δh_{k-1} = (S_k ⊙ W_k)ᵀ δz_k``,
``ΔW_k = δz_k h_{k-1}ᵀ``. Each layer's update is released right after its transport product, so
only one layer's gradients are alive at a time; the activations of all layers are.

Defaults: ReLU, PyTorch's default initialisation, Adam lr 1e-4 (the Bio-FO repo's BP baseline).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from models.cost import Cost
from models.network import Network
from models.rules.base import (
    Rule,
    StepContext,
    Update,
    counted_forward,
    layer_grads,
    readout_grads,
    softmax_error,
)


class BP(Rule):
    """Backpropagation, written out: the reference for every other rule.

    Stores between steps: nothing.
    Cost per sample: forward F MACs (F = Σ layer MACs + read-out) + weight gradients F +
    transport F − (first layer), i.e. about 3F, strictly sequential. Memory: every layer's z and h
    (``2·Σ n_k`` values per sample) until the backward pass reaches it, plus one layer's gradients.

    With ``F = 3·4 + 4·4 + 4·2 = 36`` a step costs ``36 + 36 + (36 − 12)`` MACs, and learning the
    same sample again starts from a lower loss:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> bp = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4], "rule": "bp"})
    >>> bp.rule.state_dict()
    {}
    >>> beat, label = np.array([[0.5, -1.0, 2.0]]), np.array([1])
    >>> step = bp.learn(beat, label)
    >>> step.macs
    96
    >>> bp.learn(beat, label).loss_per_layer < step.loss_per_layer
    True
    """

    name = "bp"
    defaults = {
        "activation": "relu",
        "init": "default",
        "optimizer": {"name": "adam", "lr": 1e-4},
    }

    @property
    def options(self) -> dict[str, Any]:
        return {}

    def transport(
        self, network: Network, target: str, dz: torch.Tensor, cost: Cost
    ) -> torch.Tensor:
        """``δh`` below the layer named ``target`` (``"readout"`` or a hidden index): ``Wᵀ δz``."""
        layer = network.readout if target == "readout" else network.layers[int(target)]
        cost.add_macs(dz.shape[0] * layer.macs_per_sample)
        cost.touch(dz, layer.weight)
        return layer.input_grad(dz)

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        trace = counted_forward(network, h0, ctx.cost)
        error, loss = softmax_error(trace.logits, y)
        del trace.logits
        dh = self.transport(network, "readout", error, ctx.cost) if network.depth else None
        yield Update(readout_grads(network, error, trace.h[-1], ctx.cost), loss)
        for index in reversed(range(network.depth)):
            z = trace.z.pop()
            trace.h.pop()
            dz = dh * network.activations[index].grad(z)
            dh = self.transport(network, str(index), dz, ctx.cost) if index else None
            yield Update(layer_grads(network, index, dz, trace.h[-1], ctx.cost))
