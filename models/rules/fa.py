"""Feedback alignment (Lillicrap et al. 2016): BP with every transport ``Wᵀ`` replaced by a fixed
random matrix of the same shape.

``δh_{k-1} = B_kᵀ δz_k`` where ``B_k`` (stored with W_k's shape, masked like W_k) is drawn once,
He-uniform U(±√(6/fan_in)) as the DRTP repository's FA wrapper does. Setting ``B_k = W_k`` gives BP
exactly. The first layer needs no B (nothing below it learns).

Defaults: tanh, zero forward weights, SGD with Nesterov momentum 0.9 and lr 1e-4 (the DRTP
repository's settings for its FA/DFA/DRTP family; its slides note zero init for that family).
"""

from __future__ import annotations

import torch

from models.cost import Cost
from models.network import Network
from models.rules.base import kaiming_uniform
from models.rules.bp import BP
from models.seeding import generator


class FA(BP):
    """Feedback alignment: BP with a fixed random matrix in place of every transport ``Wᵀ``.

    Stores between steps: B for hidden layers 2..L and the read-out (as many values as those
    weights).
    Cost per sample: same as BP (about 3F MACs, sequential backward); memory: every layer's
    activations, like BP, plus the B matrices.

    The feedback matrices have the shapes of ``W_2`` and the read-out's; a step costs BP's MACs:

    >>> from numpy import array
    >>> from models.factory import build_learner
    >>> fa = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4], "rule": "fa"})
    >>> {name: tuple(b.shape) for name, b in fa.rule.fixed.items()}
    {'feedback.1': (4, 4), 'feedback.readout': (2, 4)}
    >>> fa.learn(array([[0.5, -1.0, 2.0]]), array([1])).macs
    96
    """

    name = "fa"
    defaults = {
        "activation": "tanh",
        "init": "zero",
        "optimizer": {"name": "sgd", "lr": 1e-4, "momentum": 0.9, "nesterov": True},
    }

    def __init__(self, network: Network, seed: int) -> None:
        super().__init__(network, seed)
        rng = generator(seed, "rule")
        targets = [(str(i), layer) for i, layer in enumerate(network.layers)][1:]
        if network.depth:
            targets.append(("readout", network.readout))
        for name, layer in targets:
            b = kaiming_uniform(tuple(layer.weight.shape), layer.fan_in, rng, network.dtype)
            mask = layer.buffers().get("mask")
            self.fixed[f"feedback.{name}"] = b * mask if mask is not None else b

    def transport(
        self, network: Network, target: str, dz: torch.Tensor, cost: Cost
    ) -> torch.Tensor:
        layer = network.readout if target == "readout" else network.layers[int(target)]
        feedback = self.fixed[f"feedback.{target}"]
        cost.add_macs(dz.shape[0] * layer.macs_per_sample)
        cost.touch(dz, feedback)
        return layer.input_grad(dz, feedback)
