"""Forward-Forward (Hinton 2022), as loeweX/Forward-Forward implements it (Bio-FO's baseline).

The label is an input: the first layer sees ``[features, label embedding]`` (``extra_inputs = C``;
the reference overwrites the first C pixels, here the C entries are appended). Every step builds
three versions of each sample: positive (true label one-hot), negative (a random *wrong* label,
``(y + u) mod C`` with u uniform in 1..C−1, so never the true one) and neutral (uniform 1/C).
Inputs of every layer are length-normalised and detached, ``ĥ = h / (√mean(h²) + 1e-8)``; then

    z = W ĥ + b ;  h = ReLU(z) ;  G = Σ_j h_j²  (goodness) ;  s = G − n  (n = layer width)
    L = BCE(s, 1 for positive, 0 for negative)  + λ · peer,     mean over the 2B samples
    ∂L/∂h = (σ(s) − t)/(2B) · 2h  (+ the peer term) ;  δz = ∂L/∂h

ReLU passes gradients straight through, as the reference's ``ReLU_full_grad`` (for the goodness
term that equals the true derivative, since 2h is 0 where z ≤ 0; it matters for the peer term).
Other activations use their derivative. Peer normalisation (option ``peer_normalization`` = λ):
a running mean ``r ← μ r + (1 − μ) mean_pos(h)`` of each unit's activity on positive samples
(momentum μ, initialised at 0.5), penalised by ``mean_j (mean(r) − r_j)²`` so that no unit stays
silent or dominates; λ = 0 turns it off.

Read-out: a linear classifier (no bias, zero-initialised, rule parameter ``classifier``) on the
concatenated normalised activities of layers ``readout_from``..L of the neutral pass, trained
with cross-entropy on those detached activities. The three passes of a step use the weights
before the step, as in the reference.

Prediction (option ``prediction``):
- ``"readout"``: one pass with the neutral label and the classifier, softmax;
- ``"goodness"``: C passes, one per label; the score of label c is the summed goodness of layers
  ``readout_from``..L (loeweX's multi-pass evaluation), probabilities are their softmax (its
  argmax is the reference's prediction). ``Prediction.macs`` counts all C passes.

The network's own read-out is unused: it is zeroed and frozen.

Defaults: ReLU; He-uniform weights and zero biases (loeweX draws N(0, 1/n_out): half He's
variance for its square layers; with unit-RMS inputs He puts the initial goodness at the
threshold n whatever the layer shapes);
``readout_from`` 2 (loeweX skips the first layer; 1 for a single-layer network); λ = 0.03,
μ = 0.9 (loeweX). Optimizer: Adam, lr 1e-3. loeweX uses SGD with momentum 0.9, lr 1e-3 and weight
decay 3e-4 for the layers, lr 1e-2 for the classifier (one optimizer here has one rate). On real
MIT-BIH beats that SGD fits batches (training cross-entropy −90% in 300 batches of 32) but learns
poorly from single labels (record 208, 600 labels: held-out cross-entropy 1.79, accuracy 0.73).
With Adam, streaming over records 208, 213, 233 and 200 (256×256, 600 labels each) gave held-out
cross-entropy 0.15 and balanced accuracy 0.76 at lr 1e-3, 0.18 and 0.78 at 3e-4 (two seeds,
agreeing to about 0.01); 1e-3 also fits batches faster (−91% against −77%): the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from models.network import Network
from models.rules.base import (
    Prediction,
    Rule,
    StepContext,
    Update,
    counted_layer_forward,
    layer_grads,
    one_hot,
    softmax_error,
)

PREDICTIONS = ("readout", "goodness")
NORM_EPS = 1e-8
RUNNING_MEAN_START = 0.5


def length_normalise(h: torch.Tensor) -> torch.Tensor:
    """``h / (√mean(h²) + 1e-8)`` per sample (loeweX's ``_layer_norm``)."""
    return h / (torch.sqrt(torch.mean(h * h, dim=1, keepdim=True)) + NORM_EPS)


def wrong_labels(y: torch.Tensor, num_classes: int, rng: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from ``y`` for every sample."""
    shift = torch.randint(1, num_classes, y.shape, generator=rng)
    return (y + shift) % num_classes


class FF(Rule):
    """Forward-Forward: goodness of positive and negative label passes, layer by layer.

    Stores between steps: the classifier (``C·Σ_{k ≥ readout_from} n_k`` values) and one running
    mean per layer (``Σ n_k``). No fixed matrices.
    Cost per sample: three passes through the hidden layers 3H (H = Σ layer MACs, the first layer
    including its C label inputs) + weight gradients of the positive and negative samples 2H +
    classifier forward and gradient 2·C·Σ n_k. Prediction: H + C·Σ n_k (read-out) or C·H (goodness).
    Memory: one layer's three activations at a time, plus the neutral activities that feed the
    classifier.

    The first layer sees the 3 features and 2 label entries (``H = 5·4 + 4·4 = 36``); a step
    costs ``3·36 + 2·36 + 2·2·4`` MACs:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> ff = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4], "rule": "ff"})
    >>> tuple(ff.network.layers[0].weight.shape)
    (4, 5)
    >>> {name: tuple(t.shape) for name, t in ff.rule.state_dict().items()}
    {'classifier': (2, 4), 'running_mean.0': (4,), 'running_mean.1': (4,)}
    >>> ff.learn(np.array([[0.5, -1.0, 2.0]]), np.array([1])).macs
    196
    """

    name = "ff"
    defaults = {
        "activation": "relu",
        "init": "kaiming",
        "optimizer": {"name": "adam", "lr": 1e-3},
    }

    def __init__(
        self,
        network: Network,
        seed: int,
        prediction: str = "readout",
        readout_from: int | None = None,
        peer_normalization: float = 0.03,
        peer_momentum: float = 0.9,
    ) -> None:
        super().__init__(network, seed)
        if network.depth < 1:
            raise ValueError("ff needs at least one hidden layer")
        if prediction not in PREDICTIONS:
            raise ValueError(f"ff prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if readout_from is None:
            readout_from = 2 if network.depth > 1 else 1
        if not 1 <= readout_from <= network.depth:
            raise ValueError(f"ff readout_from must be in [1, {network.depth}], got {readout_from}")
        if peer_normalization < 0:
            raise ValueError(f"ff peer_normalization must be >= 0, got {peer_normalization}")
        if not 0.0 <= peer_momentum < 1.0:
            raise ValueError(f"ff peer_momentum must be in [0, 1), got {peer_momentum}")
        self.prediction = prediction
        self.readout_from = readout_from
        self.peer_normalization = float(peer_normalization)
        self.peer_momentum = float(peer_momentum)
        dtype = network.dtype
        width = sum(layer.out_features for layer in network.layers[readout_from - 1 :])
        self.classifier = torch.zeros(network.num_classes, width, dtype=dtype)
        self.running_means = {
            f"running_mean.{index}": torch.full(
                (layer.out_features,), RUNNING_MEAN_START, dtype=dtype
            )
            for index, layer in enumerate(network.layers)
        }
        network.readout.weight.zero_()
        network.readout.bias.zero_()
        network.readout_trainable = False

    @property
    def options(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction,
            "readout_from": self.readout_from,
            "peer_normalization": self.peer_normalization,
            "peer_momentum": self.peer_momentum,
        }

    @classmethod
    def extra_inputs(cls, num_classes: int) -> int:
        return num_classes

    def parameters(self) -> dict[str, torch.Tensor]:
        return {"classifier": self.classifier}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), **self.running_means}

    def feeds_classifier(self, index: int) -> bool:
        """Whether hidden layer ``index`` (0-based) feeds the classifier and the goodness score."""
        return index >= self.readout_from - 1

    def goodness_grad(
        self, index: int, h: torch.Tensor, positive: int
    ) -> tuple[torch.Tensor, float]:
        """``∂L/∂h`` and L for one layer; the first ``positive`` rows of ``h`` are positive samples,
        the rest negative. Advances the layer's running mean."""
        width = h.shape[1]
        target = torch.zeros(h.shape[0], dtype=h.dtype)
        target[:positive] = 1.0
        logits = (h * h).sum(dim=1) - width
        loss = F.binary_cross_entropy_with_logits(logits, target)
        dh = ((torch.sigmoid(logits) - target) / h.shape[0])[:, None] * (2.0 * h)
        if self.peer_normalization:
            running = self.running_means[f"running_mean.{index}"]
            mu = self.peer_momentum
            running.mul_(mu).add_(h[:positive].mean(dim=0), alpha=1.0 - mu)
            centred = running - running.mean()
            loss = loss + self.peer_normalization * (centred * centred).mean()
            # ∂ mean_j (mean(r) − r_j)² / ∂r = 2 (r − mean(r)) / n, and ∂r/∂h_i = (1 − μ)/B.
            scale = self.peer_normalization * 2.0 * (1.0 - mu) / (width * positive)
            dh[:positive] += scale * centred
        return dh, float(loss)

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        batch, classes, dtype = h0.shape[0], network.num_classes, network.dtype
        labels = torch.cat([
            one_hot(y, classes, dtype),
            one_hot(wrong_labels(y, classes, ctx.generator), classes, dtype),
            torch.full((batch, classes), 1.0 / classes, dtype=dtype),
        ])
        x = length_normalise(torch.cat([h0.repeat(3, 1), labels], dim=1))
        signed = 2 * batch  # positive and negative rows learn; the neutral rows feed the classifier
        features = []
        for index in range(network.depth):
            z, h = counted_layer_forward(network, index, x, ctx.cost)
            dh, loss = self.goodness_grad(index, h[:signed], batch)
            activation = network.activations[index]
            dz = dh if activation.name == "relu" else dh * activation.grad(z[:signed])
            grads = layer_grads(network, index, dz, x[:signed], ctx.cost)
            x = length_normalise(h)
            if self.feeds_classifier(index):
                features.append(x[signed:])
            yield Update(grads, loss)
        activity = torch.cat(features, dim=1)
        error, loss = softmax_error(activity.mm(self.classifier.t()), y)
        grad = error.t().mm(activity)
        ctx.cost.add_macs(2 * batch * self.classifier.numel())
        ctx.cost.touch(activity, self.classifier, error, grad)
        yield Update({"rule.classifier": grad}, loss)

    def predict(self, network: Network, h0: torch.Tensor) -> Prediction:
        batch, classes, dtype = h0.shape[0], network.num_classes, network.dtype
        hidden = sum(layer.macs_per_sample for layer in network.layers)
        if self.prediction == "readout":
            neutral = torch.full((batch, classes), 1.0 / classes, dtype=dtype)
            x = length_normalise(torch.cat([h0, neutral], dim=1))
            features = []
            for index in range(network.depth):
                x = length_normalise(network.layer_forward(index, x)[1])
                if self.feeds_classifier(index):
                    features.append(x)
            logits = torch.cat(features, dim=1).mm(self.classifier.t())
            macs = batch * (hidden + self.classifier.numel())
        else:
            labels = torch.eye(classes, dtype=dtype).repeat_interleave(batch, dim=0)
            x = length_normalise(torch.cat([h0.repeat(classes, 1), labels], dim=1))
            score = torch.zeros(classes * batch, dtype=dtype)
            for index in range(network.depth):
                h = network.layer_forward(index, x)[1]
                if self.feeds_classifier(index):
                    score = score + (h * h).sum(dim=1)
                x = length_normalise(h)
            logits = score.reshape(classes, batch).t()
            macs = classes * batch * hidden
        return Prediction(
            probabilities=torch.softmax(logits, dim=1),
            exit_layer=torch.full((batch,), network.depth, dtype=torch.int64),
            macs=macs,
            macs_full=macs,
        )
