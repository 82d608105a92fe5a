"""LLS (Apolinario, Roy & Roy, WACV 2025): local losses through a fixed periodic basis.

Every hidden layer learns from its own cross-entropy, read through a fixed, deterministic basis
instead of a random or learned head (as in mapolinario94/LLS-DNN ``compute_LLS``):

    p_k = pool(h_k) ∈ R^D ;  p̂_k = p_k / max(‖p_k‖, 1e-12)
    Φ_k ∈ R^{C×D},  Φ_{c,t} = sin(ω_c t),  ω_c = linspace(50, 512, C),  t = 0..D−1
          (``waveform="square"``: sign of that)
    q_k = Φ_k p̂_k ;  a_k = q_k / T                    (LLS)
                      a_k = (m_k ⊙ q_k) / T            (LLS-M, m_k ∈ R^C learnable)
                      a_k = M_kᵀ q_k / T                (LLS-MxM, M_k ∈ R^{C×C} learnable; q M)
    L_k = CE(a_k, y*) with label smoothing ε ;  δa_k = softmax(a_k) − ((1 − ε) y* + ε/C)

and the gradient of L_k with the layer input detached is written out: ``δq`` through T (and m or
M), ``δp̂ = Φ_kᵀ δq``, through the normalisation ``δp = (δp̂ − p̂ (p̂·δp̂)) / ‖p‖``, through the
pooling (its transpose spreads each bin's gradient evenly over the bin), then
``δz_k = δh_k ⊙ f'(z_k)`` and ``ΔW_k = δz_k h_{k-1}ᵀ``. ``m_k`` / ``M_k`` get their own gradients
from the same loss. The network's read-out is trained with cross-entropy on the detached last
activity ``h_L``, so every layer is updated right after its own forward pass (update-unlocked).

Pooling: a conv1d layer's output is average-pooled per channel to ``conv_positions`` positions
(adaptive average pooling, as the reference's 4×4 / 2×2 maps), D = channels·conv_positions; a
dense layer is pooled 1-D to ``dense_dim`` (None: no pooling, D = width, as the reference does for
its fully connected block). Φ is computed in float64 and rounded to the network's dtype, so it
is the same on every engine. (The reference evaluates sin(ω t) in float32: for 2 or 5 classes
every ω t is exact there and the two agree to 1e-7; for 10 classes and D = 2048 the rounded
arguments move samples by up to 0.06 and flip 48 signs of the square wave.)

The reference blocks are Linear/Conv → BatchNorm → LeakyReLU; there is no BatchNorm here (a batch
of one, the streaming case, has no batch statistics).

Defaults: square waveform, T = 0.5, no label smoothing (the reference's main tables and command
line); leaky ReLU (slope 0.01, nn.LeakyReLU's) and PyTorch's default initialisation, as the
reference blocks; m and M drawn as 0.01·N(0, 1), as the reference. Optimizer: Adam (the reference:
AdamW-ScheduleFree, lr 5e-3, batch 128), lr 1e-3 for LLS and 3e-4 for LLS-M and LLS-MxM, from
streaming runs on real MIT-BIH beats (records 208, 213, 233, 200; 256×256; 600 single labels
each; held-out cross-entropy, balanced accuracy): LLS 0.32, 0.73 at 1e-3 against 0.42, 0.69 at
3e-4 (5e-3 fits batches fastest but reached 1.9 on record 208 alone, over-confident); LLS-M 0.36,
0.74 at 3e-4 against 0.60, 0.72 at 1e-3; LLS-MxM 0.28, 0.75 at either rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from models.cost import Cost
from models.layers import Layer
from models.network import Network
from models.rules.base import (
    Rule,
    StepContext,
    Update,
    counted_layer_forward,
    counted_readout,
    layer_grads,
    one_hot,
    readout_grads,
    softmax_error,
)
from models.seeding import generator

WAVEFORMS = ("square", "sine")
FREQUENCY_RANGE = (50.0, 512.0)
NORM_EPS = 1e-12  # F.normalize's


def periodic_basis(num_classes: int, dim: int, waveform: str, dtype: torch.dtype) -> torch.Tensor:
    """``Φ`` (C × D): ``sin(ω_c t)`` with ``ω = linspace(50, 512, C)``, or its sign."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"lls waveform must be one of {WAVEFORMS}, got {waveform!r}")
    omega = torch.linspace(*FREQUENCY_RANGE, num_classes, dtype=torch.float64)
    t = torch.arange(dim, dtype=torch.float64)
    basis = torch.sin(omega[:, None] * t[None, :])
    if waveform == "square":
        basis = torch.sign(basis)
    return basis.to(dtype)


def pooling_matrix(length: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """``P`` (length × size) with ``h P`` = ``F.adaptive_avg_pool1d(h, size)``."""
    return F.adaptive_avg_pool1d(torch.eye(length, dtype=dtype)[None], size)[0]


class Pool:
    """Average pooling of a layer's output along its length, per channel, and its transpose."""

    def __init__(self, channels: int, length: int, size: int, dtype: torch.dtype) -> None:
        self.channels = channels
        self.length = length
        self.size = size
        self.matrix = None if size == length else pooling_matrix(length, size, dtype)
        # One MAC per (input position, bin) pair; nothing when the layer is not pooled.
        pairs = 0 if self.matrix is None else int((self.matrix != 0).sum())
        self.macs_per_sample = channels * pairs

    @property
    def dim(self) -> int:
        return self.channels * self.size

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            return h
        grouped = h.reshape(h.shape[0], self.channels, self.length)
        return grouped.matmul(self.matrix).reshape(h.shape[0], self.dim)

    def transpose(self, dp: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            return dp
        grouped = dp.reshape(dp.shape[0], self.channels, self.size)
        return grouped.matmul(self.matrix.t()).reshape(dp.shape[0], self.channels * self.length)


def layer_pool(
    layer: Layer, dense_dim: int | None, conv_positions: int, dtype: torch.dtype
) -> Pool:
    if layer.kind == "conv1d":
        channels, length = layer.out_channels, layer.out_length  # type: ignore[attr-defined]
        return Pool(channels, length, conv_positions, dtype)
    width = layer.out_features
    return Pool(1, width, width if dense_dim is None else dense_dim, dtype)


class LLS(Rule):
    """LLS: each hidden layer's cross-entropy read through a fixed periodic basis ``Φ_k``.

    Stores between steps: Φ_k per layer (``C·D_k`` values; deterministic, kept so that a checkpoint
    is self-contained), and for LLS-M ``C`` / LLS-MxM ``C²`` learnable values per layer.
    Cost per sample: forward F + per layer the pooling and its transpose (one MAC per pooled entry
    each, 0 without pooling), ``2·C·D_k`` for Φ and Φᵀ, LLS-MxM ``3·C²`` more (q M, δa Mᵀ, qᵀ δa);
    weight gradients F. Memory: one layer's input, z, h and gradients at a time, independent of
    depth.

    ``Φ_0`` for 2 classes and 4 units is the square wave ``sign(sin(ω_c t))``, ``ω = (50, 512)``;
    a step costs forward 36, ``Φ`` and ``Φᵀ`` ``2·2·4`` per layer and gradients 36:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> lls = build_learner({"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4],
    ...                      "rule": "lls"})
    >>> lls.rule.fixed["basis.0"]
    tensor([[ 0., -1., -1., -1.],
            [ 0.,  1., -1.,  1.]])
    >>> lls.learn(np.array([[0.5, -1.0, 2.0]]), np.array([1])).macs
    104
    """

    name = "lls"
    # None (LLS), "scale" (LLS-M: m ⊙ q) or "mix" (LLS-MxM: q M).
    modulation: ClassVar[str | None] = None
    defaults = {
        "activation": "leaky_relu",
        "init": "default",
        "optimizer": {"name": "adam", "lr": 1e-3},
    }

    def __init__(
        self,
        network: Network,
        seed: int,
        waveform: str = "square",
        temperature: float = 0.5,
        label_smoothing: float = 0.0,
        dense_dim: int | None = None,
        conv_positions: int = 4,
    ) -> None:
        super().__init__(network, seed)
        if network.depth < 1:
            raise ValueError(f"{self.name} needs at least one hidden layer")
        if temperature <= 0:
            raise ValueError(f"{self.name} temperature must be positive, got {temperature}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"{self.name} label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        if dense_dim is not None and dense_dim < 1:
            raise ValueError(f"{self.name} dense_dim must be >= 1, got {dense_dim}")
        if conv_positions < 1:
            raise ValueError(f"{self.name} conv_positions must be >= 1, got {conv_positions}")
        self.waveform = waveform
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)
        self.dense_dim = dense_dim
        self.conv_positions = conv_positions
        classes, dtype = network.num_classes, network.dtype
        self.pools = [
            layer_pool(layer, dense_dim, conv_positions, dtype) for layer in network.layers
        ]
        self.modulations: dict[str, torch.Tensor] = {}
        rng = generator(seed, "rule")
        for index, pool in enumerate(self.pools):
            self.fixed[f"basis.{index}"] = periodic_basis(classes, pool.dim, waveform, dtype)
            if self.modulation == "scale":
                self.modulations[f"scale.{index}"] = 0.01 * torch.randn(
                    classes, generator=rng, dtype=dtype
                )
            elif self.modulation == "mix":
                self.modulations[f"mix.{index}"] = 0.01 * torch.randn(
                    classes, classes, generator=rng, dtype=dtype
                )

    @property
    def options(self) -> dict[str, Any]:
        return {
            "waveform": self.waveform,
            "temperature": self.temperature,
            "label_smoothing": self.label_smoothing,
            "dense_dim": self.dense_dim,
            "conv_positions": self.conv_positions,
        }

    def parameters(self) -> dict[str, torch.Tensor]:
        return self.modulations

    def local_loss_grad(
        self, index: int, h: torch.Tensor, y: torch.Tensor, cost: Cost
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """``∂L_k/∂h_k``, the gradients of layer ``index``'s m or M, and L_k."""
        batch, pool, basis = h.shape[0], self.pools[index], self.fixed[f"basis.{index}"]
        p = pool.forward(h)
        norm = p.norm(dim=1, keepdim=True)
        inside = (norm > NORM_EPS).to(h.dtype)  # below eps the norm is a constant
        norm = norm.clamp_min(NORM_EPS)
        p_hat = p / norm
        q = p_hat.mm(basis.t())
        grads: dict[str, torch.Tensor] = {}
        if self.modulation == "scale":
            m = self.modulations[f"scale.{index}"]
            logits = q * m / self.temperature
        elif self.modulation == "mix":
            m = self.modulations[f"mix.{index}"]
            logits = q.mm(m) / self.temperature
        else:
            logits = q / self.temperature
        log_p = torch.log_softmax(logits, dim=1)
        classes = logits.shape[1]
        target = (1.0 - self.label_smoothing) * one_hot(y, classes, h.dtype)
        target = target + self.label_smoothing / classes
        loss = float(-(target * log_p).sum(dim=1).mean())
        da = (log_p.exp() - target) / batch
        if self.modulation == "scale":
            grads[f"rule.scale.{index}"] = (da * q).sum(dim=0) / self.temperature
            dq = da * m / self.temperature
        elif self.modulation == "mix":
            grads[f"rule.mix.{index}"] = q.t().mm(da) / self.temperature
            dq = da.mm(m.t()) / self.temperature
            cost.add_macs(3 * batch * m.numel())
        else:
            dq = da / self.temperature
        dp_hat = dq.mm(basis)
        dp = (dp_hat - inside * p_hat * (p_hat * dp_hat).sum(dim=1, keepdim=True)) / norm
        dh = pool.transpose(dp)
        cost.add_macs(batch * (2 * pool.macs_per_sample + 2 * basis.numel()))
        cost.touch(h, p, basis, q, da, basis, dp, dh)
        return dh, grads, loss

    def updates(
        self, network: Network, h0: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> Iterator[Update]:
        h = h0
        for index in range(network.depth):
            z, h_next = counted_layer_forward(network, index, h, ctx.cost)
            dh, grads, loss = self.local_loss_grad(index, h_next, y, ctx.cost)
            dz = dh * network.activations[index].grad(z)
            grads.update(layer_grads(network, index, dz, h, ctx.cost))
            yield Update(grads, loss)
            h = h_next
        error, loss = softmax_error(counted_readout(network, h, ctx.cost), y)
        yield Update(readout_grads(network, error, h, ctx.cost), loss)


class LLSM(LLS):
    """LLS-M: LLS with a learnable scale ``m_k`` (``C`` values per layer) on the basis output.

    Stores between steps: LLS's bases and the scales; cost per sample: LLS's. Every local loss
    falls on a repeated sample:

    >>> import numpy as np
    >>> from models.factory import build_learner
    >>> spec = {"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4], "rule": "lls_m"}
    >>> lls_m = build_learner(spec)
    >>> {name: tuple(m.shape) for name, m in lls_m.rule.parameters().items()}
    {'scale.0': (2,), 'scale.1': (2,)}
    >>> x, y = np.array([[0.5, -1.0, 2.0]]), np.array([1])
    >>> losses = [lls_m.learn(x, y).loss_per_layer for _ in range(2)]
    >>> [later < earlier for earlier, later in zip(*losses)]
    [True, True, True]
    """

    name = "lls_m"
    modulation = "scale"
    defaults = {**LLS.defaults, "optimizer": {"name": "adam", "lr": 3e-4}}


class LLSMxM(LLS):
    """LLS-MxM: LLS with a learnable ``C × C`` mixing matrix ``M_k`` per layer.

    Stores between steps: LLS's bases and the matrices; cost per sample: LLS's plus ``3·C²`` per
    layer (``104 + 2·3·2²``):

    >>> from numpy import array
    >>> from models.factory import build_learner
    >>> spec = {"input_dim": 3, "classes": ["N", "V"], "hidden": [4, 4], "rule": "lls_mxm"}
    >>> mxm = build_learner(spec)
    >>> [tuple(m.shape) for m in mxm.rule.parameters().values()]
    [(2, 2), (2, 2)]
    >>> mxm.learn(array([[0.5, -1.0, 2.0]]), array([1])).macs
    128
    """

    name = "lls_mxm"
    modulation = "mix"
    defaults = {**LLS.defaults, "optimizer": {"name": "adam", "lr": 3e-4}}
