"""Bio-FO (Huang & Aminifar, MLSys 2025): every hidden layer learns from a fixed random head.

For hidden layer k, with ``h_k = f(z_k)``, ``z_k = (S_k ⊙ W_k) h_{k-1} + b_k``:

    a_k = B_k h_k                       B_k ∈ R^{C×n_k} fixed, no bias
    L_k = CE(softmax(a_k), y*)          δa_k = softmax(a_k) − y*
    δh_k = B_kᵀ δa_k ;  δz_k = δh_k ⊙ f'(z_k)  (= 1[z_k > 0] for ReLU) ;  ΔW_k = δz_k h_{k-1}ᵀ

This is the gradient of L_k with the layer input ``h_{k-1}`` detached, written out. Prediction
is ``softmax(B_L h_L)``: the last layer's head is installed as the network's read-out and frozen,
so no trainable read-out exists (as in the reference code).

Heads (option ``head``):
- ``"gaussian"``: a fresh draw per layer, entries ``head_scale · N(0, 1)``;
- ``"ternary"``: one sparse ternary matrix shared by every layer (needs equal widths): exactly
  ⌊C·n/6⌋ entries +1 and as many −1, the rest 0 (Achlioptas), times ``head_scale``.
The reference code uses unit entries (``head_scale = 1``) with 2000-unit layers and Adam 1e-4 at
batch 100, the Gaussian head for MIT-BIH and the ternary one for CHB-MIT.

Schedules (option ``schedule``):
- ``"simultaneous"``: every layer learns on every batch; layer k's update is released right after
  its own forward pass (its input came from the not-yet-updated layer k−1, so this equals summing
  all local losses and stepping once). This is the streaming mode.
- ``"greedy"``: the paper's schedule. Layer 1 learns for ``greedy_steps`` learn calls, then
  freezes, then layer 2, and so on; the last layer keeps learning afterwards. The frozen prefix is
  re-run forward each step (no cache), and predictions come from the head of the layer currently
  being trained, as the paper reports accuracy after each added layer.

Early exit (option ``early_exit``, a confidence in (0, 1]): at inference a sample stops at the
first layer whose head gives ``max softmax ≥ early_exit``; ``Learner.predict_detail`` reports
what that saved against the full pass (it can be negative: each inspected head costs C·n_k).

Defaults, chosen for the streaming case (one label per update) on real MIT-BIH beats rather
than copied from the paper's batch-100 offline setting:

- heads with entry variance 1/n_k (``head_scale=None``) instead of the code's unit N(0, 1): with
  unit entries the head logits grow like √n_k (×16 at 256 units), the softmax saturates, and a
  single-sample step either does nothing (confident and right) or jumps (confident and wrong).
  Scaled heads keep ``δa = p − y*`` graded; in streaming runs (fresh and forked from a
  DS1-trained base, 8 DS2 records, 600 labels each) they gave the same or better accuracy with
  held-out cross-entropy ~0.13 instead of ~0.18 to 1.3, i.e. probabilities usable for ordering
  the label queue by uncertainty, and tolerated a 10× range of learning rates;
- Adam, lr 3e-4 (the paper: 1e-4 at batch 100): Adam's per-weight normalisation makes the step
  size independent of how small one sample's gradient is; 3e-4 adapted faster than 1e-4 for the
  same calibration, while 1e-3 over-fitted recent beats (held-out cross-entropy and fusion-beat
  recall got worse);
- ReLU and PyTorch's default initialisation, as in the reference code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from models import biofo_spec
from models.biofo_spec import Options, head_key, head_macs_per_sample, own_head
from models.network import Network
from models.rules.base import (
    Prediction,
    Rule,
    StepContext,
    Update,
    counted_layer_forward,
    layer_grads,
    softmax_error,
)
from models.seeding import generator


class BioFO(Rule):
    """Bio-FO: every hidden layer learns from its own fixed random head (formulas above).

    Stores between steps: heads ``B_1..B_{L-1}`` (the last is the read-out), ``C·Σ n_k`` values (one
    ``C×n`` matrix when shared), and the count of learn calls (for the greedy schedule).
    Cost per sample: forward F + ``2·C·n_k`` per layer (head and ``B_kᵀ δa_k``) +
    weight gradients F; no transport of W, no second pass. Memory: one layer's input, z, h and
    gradients at a time, independent of depth.

    A 2-layer network keeps one head (the second layer's is the read-out); a step costs
    ``2·28 + 2·2·(4 + 4)`` MACs and lowers both local losses on the sample it learned:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> learner = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4]})
    >>> {name: tuple(t.shape) for name, t in learner.rule.state_dict().items()}
    {'heads.0': (2, 4), 'steps': ()}
    >>> x, y = np.array([[0.5, -1.0, 2.0]]), np.array([1])
    >>> first, second = learner.learn(x, y), learner.learn(x, y)
    >>> first.macs
    88
    >>> [after < before for before, after in zip(first.loss_per_layer, second.loss_per_layer)]
    [True, True]
    """

    name = biofo_spec.NAME
    defaults = biofo_spec.DEFAULTS

    def __init__(self, network: Network, seed: int, **options: Any) -> None:
        """``options``: those of ``models.biofo_spec.Options`` (head, head_scale, schedule,
        greedy_steps, early_exit), described above."""
        super().__init__(network, seed)
        if network.depth < 1:
            raise ValueError("biofo needs at least one hidden layer")
        self.config = Options(**options)
        self.counters[biofo_spec.STEPS] = torch.zeros((), dtype=torch.int64)
        self._install_heads(network, generator(seed, "rule"))

    @property
    def options(self) -> dict[str, Any]:
        return self.config.as_dict()

    def _install_heads(self, network: Network, rng: torch.Generator) -> None:
        classes, dtype = network.num_classes, network.dtype
        if self.config.shared_head:
            widths = {layer.out_features for layer in network.layers}
            if len(widths) != 1:
                raise ValueError(f"biofo ternary head is shared, so widths must be equal: {widths}")
            last = self._ternary(classes, widths.pop(), rng, dtype)
        else:
            for index, layer in enumerate(network.layers[:-1]):
                head = self._gaussian(classes, layer.out_features, rng, dtype)
                self.fixed[head_key(index)] = head
            last = self._gaussian(classes, network.layers[-1].out_features, rng, dtype)
        network.readout.weight.copy_(last)
        network.readout.bias.zero_()
        network.readout_trainable = False

    def _scale(self, width: int, density: float) -> float:
        """Entry magnitude: ``head_scale`` if given, else such that entries have variance 1/n."""
        if self.config.head_scale is not None:
            return self.config.head_scale
        return math.sqrt(1.0 / (density * width))

    def _gaussian(
        self, classes: int, width: int, rng: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        return self._scale(width, 1.0) * torch.randn(classes, width, generator=rng, dtype=dtype)

    def _ternary(
        self, classes: int, width: int, rng: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        count = classes * width // 6
        flat = torch.zeros(classes * width, dtype=dtype)
        positions = torch.randperm(classes * width, generator=rng)
        flat[positions[:count]] = 1.0
        flat[positions[count : 2 * count]] = -1.0
        return self._scale(width, 2.0 / 6.0) * flat.reshape(classes, width)

    def head(self, network: Network, index: int) -> torch.Tensor:
        """The fixed head ``B`` on hidden layer ``index`` (0-based)."""
        if own_head(index, network.depth, self.config.shared_head):
            return self.fixed[head_key(index)]
        return network.readout.weight

    def active_layer(self, network: Network) -> int:
        """The last layer that learns (and, in the greedy schedule, predicts) now."""
        if self.config.simultaneous:
            return network.depth - 1
        steps = int(self.counters[biofo_spec.STEPS])
        return min(steps // self.config.greedy_steps, network.depth - 1)

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        active = self.active_layer(network)
        first = 0 if self.config.simultaneous else active
        self.counters[biofo_spec.STEPS].add_(1)
        h = h0
        for index in range(active + 1):
            z, h_next = counted_layer_forward(network, index, h, ctx.cost)
            if index >= first:
                head = self.head(network, index)
                error, loss = softmax_error(h_next.mm(head.t()), y)
                dh = error.mm(head)
                ctx.cost.add_macs(y.shape[0] * head_macs_per_sample(*head.shape))
                ctx.cost.touch(h_next, head, error, head, dh)
                dz = dh * network.activations[index].grad(z)
                yield Update(layer_grads(network, index, dz, h, ctx.cost), loss)
            h = h_next

    def predicts_from_readout(self, network: Network) -> bool:
        """Whether a prediction is the plain pass through every layer and the read-out."""
        return self.config.early_exit is None and self.active_layer(network) == network.depth - 1

    def predict(self, network: Network, h0: torch.Tensor) -> Prediction:
        if self.predicts_from_readout(network):
            return super().predict(network, h0)
        last, early_exit = self.active_layer(network), self.config.early_exit
        threshold = float("inf") if early_exit is None else early_exit
        batch = h0.shape[0]
        probabilities = h0.new_empty(batch, network.num_classes)
        exit_layer = torch.full((batch,), last + 1, dtype=torch.int64)
        pending = torch.arange(batch)
        macs = 0
        h = h0
        for index in range(last + 1):
            h = network.layer_forward(index, h)[1]
            head = self.head(network, index)
            p = torch.softmax(h.mm(head.t()), dim=1)
            macs += h.shape[0] * (network.layers[index].macs_per_sample + head.numel())
            if index == last:
                done = torch.ones(h.shape[0], dtype=torch.bool)
            else:
                done = p.max(dim=1).values >= threshold
            probabilities[pending[done]] = p[done]
            exit_layer[pending[done]] = index + 1
            pending, h = pending[~done], h[~done]
            if pending.numel() == 0:
                break
        return Prediction(
            probabilities=probabilities,
            exit_layer=exit_layer,
            macs=macs,
            macs_full=batch * network.forward_macs_per_sample(),
        )
