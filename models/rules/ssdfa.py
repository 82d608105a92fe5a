"""Sparse direct feedback alignment (Crafton et al. 2019): DFA with a sparse feedback matrix.

``δh_k = B_kᵀ e`` as in DFA, but each hidden unit j receives only ``sparse`` of the C error
components (``sparse = 1``: one class per neuron, so its signal is the product of three scalars
``b_j · e_{c(j)} · f'(z_j)``). Connectivity options, as in the reference ``FeedbackMatrix``:

- ``sparse = s, rank = 0``: every unit picks s classes at random, values U(±a) with
  ``a = 1/√(n_k/√(C·s))``;
- ``sparse = 0, rank = r``: a dense rank-r matrix (sum of r random outer products, rescaled so
  its standard deviation is ``1/√n_k``);
- ``sparse = s, rank = r`` (needs ``s·r ≥ C``): r class sets of size s, chosen so classes are
  covered evenly; each unit is assigned one set, values from that set's rank-1 matrix; rescaled;
- ``sparse = 0, rank = 0``: dense DFA with U(±1/√n_k).

Defaults: ``sparse = 1, rank = 0`` (the paper's headline single-connection case); tanh, zero
forward weights, Adam lr 1e-2 (the reference ``results.py`` settings for fully connected MNIST).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.network import Network
from models.rules.dfa import DFA


class SSDFA(DFA):
    """Sparse DFA: DFA whose feedback matrix gives each hidden unit ``sparse`` error components.

    Stores between steps: ``B_k`` (``s·n_k`` nonzeros per layer; stored dense here, since C is
    small).
    Cost per sample: forward F + ``s·n_k`` feedback MACs per layer on sparse hardware + weight
    gradients F. Memory: every layer's activations until the error is known, like DFA.

    With the default ``sparse = 1`` each hidden unit hears one class:

    >>> from models.factory import build_learner
    >>> spec = {"input_dim": 3, "classes": ["N", "S", "V"], "hidden": [4, 4], "rule": "ssdfa"}
    >>> feedback = build_learner(spec).rule.fixed["feedback.0"]
    >>> tuple(feedback.shape), (feedback != 0).sum(dim=0).tolist()
    ((3, 4), [1, 1, 1, 1])
    """

    name = "ssdfa"
    defaults = {
        "activation": "tanh",
        "init": "zero",
        "optimizer": {"name": "adam", "lr": 1e-2},
    }

    def __init__(self, network: Network, seed: int, sparse: int = 1, rank: int = 0) -> None:
        classes = network.num_classes
        if not 0 <= sparse <= classes:
            raise ValueError(f"ssdfa sparse must be in [0, {classes}], got {sparse}")
        if not 0 <= rank <= classes:
            raise ValueError(f"ssdfa rank must be in [0, {classes}], got {rank}")
        if sparse and rank and sparse * rank < classes:
            raise ValueError(f"ssdfa needs sparse·rank >= {classes} classes, got {sparse}·{rank}")
        self.sparse = sparse
        self.rank = rank
        super().__init__(network, seed)

    @property
    def options(self) -> dict[str, Any]:
        return {"sparse": self.sparse, "rank": self.rank}

    def draw_feedback(
        self, num_classes: int, width: int, rng: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        if self.sparse:
            bound = 1.0 / math.sqrt(width / math.sqrt(num_classes * self.sparse))
        else:
            bound = 1.0 / math.sqrt(width)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=rng)

        if self.sparse and self.rank:
            sets = self._balanced_class_sets(num_classes, rng)
            owner = torch.randint(self.rank, (width,), generator=rng)
            fb = torch.zeros(width, num_classes, dtype=torch.float64)
            for r, classes in enumerate(sets):
                mask = torch.zeros(width, num_classes, dtype=torch.float64)
                mask[(owner == r).nonzero()[:, 0][:, None], classes[None, :]] = 1.0
                fb += mask * (uniform(width, 1) @ uniform(1, num_classes))
            fb *= bound / fb.std()
        elif self.sparse:
            order = torch.rand(width, num_classes, generator=rng).argsort(dim=1)
            mask = torch.zeros(width, num_classes, dtype=torch.float64)
            mask.scatter_(1, order[:, : self.sparse], 1.0)
            fb = uniform(width, num_classes) * mask
        elif self.rank:
            fb = sum(uniform(width, 1) @ uniform(1, num_classes) for _ in range(self.rank))
            fb *= bound / fb.std()
        else:
            fb = uniform(width, num_classes)
        return fb.t().contiguous().to(dtype)

    def _balanced_class_sets(self, num_classes: int, rng: torch.Generator) -> list[torch.Tensor]:
        """``rank`` sets of ``sparse`` classes, favouring classes chosen least so far."""
        counts = torch.zeros(num_classes, dtype=torch.float64)
        target = self.sparse * self.rank / num_classes
        sets = []
        for _ in range(self.rank):
            remaining = self.sparse * self.rank - counts.sum()
            pdf = ((target - counts) / remaining).clamp(1e-6, 1.0)
            chosen = torch.multinomial(
                pdf / pdf.sum(), self.sparse, replacement=False, generator=rng
            )
            counts[chosen] += 1.0
            sets.append(chosen)
        return sets
