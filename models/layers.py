"""Trainable layers on flat feature vectors, with their local weight updates written out.

Every layer maps ``(batch, in_features) -> (batch, out_features)`` pre-activations, so dense,
masked and convolutional layers stack freely and every rule sees the same shapes.

Each layer exposes the three products a learning rule needs, all explicit:

- ``forward(h) -> z``;
- ``grads(dz, h)``: the weight and bias gradients for a given ``δz`` (``ΔW = δzᵀ h``). ``dz`` must
  already carry the ``1/batch`` factor of a batch-mean loss, so these are plain sums and agree with
  autograd of the mean loss;
- ``input_grad(dz, weight)``: ``δh_{k-1} = (S ⊙ W)ᵀ δz`` (backpropagation's transport), or the same
  product through another matrix of W's shape (feedback alignment).

Masks (``S`` in ``z = (S ⊙ W) h + b``) are fixed 0/1 tensors: ``None`` for fully connected,
``local_mask`` for a 1-D locally connected layer, ``random_mask`` for fixed random sparsity.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class Layer(Protocol):
    kind: str
    in_features: int
    out_features: int
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def fan_in(self) -> int: ...

    @property
    def macs_per_sample(self) -> int: ...

    def forward(self, h: torch.Tensor) -> torch.Tensor: ...

    def grads(self, dz: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def input_grad(self, dz: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor: ...

    def buffers(self) -> dict[str, torch.Tensor]: ...

    def describe(self) -> dict[str, Any]: ...


def local_mask(
    in_features: int, out_features: int, receptive_field: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """1-D locally connected: unit j sees ``receptive_field`` consecutive inputs near its position.

    Unit centres are spread evenly over the input; windows at the edges are shifted inwards so
    every unit keeps the full receptive field.
    """
    if not 1 <= receptive_field <= in_features:
        raise ValueError(f"receptive_field must be in [1, {in_features}], got {receptive_field}")
    mask = torch.zeros(out_features, in_features, dtype=dtype)
    for j in range(out_features):
        centre = round(j * (in_features - 1) / max(out_features - 1, 1))
        start = min(max(centre - receptive_field // 2, 0), in_features - receptive_field)
        mask[j, start : start + receptive_field] = 1.0
    return mask


def random_mask(
    in_features: int,
    out_features: int,
    density: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed random sparsity: every unit keeps the same number of inputs (no dead units)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    keep = max(1, round(density * in_features))
    order = torch.rand(out_features, in_features, generator=generator).argsort(dim=1)
    mask = torch.zeros(out_features, in_features, dtype=dtype)
    mask.scatter_(1, order[:, :keep], 1.0)
    return mask


def init_tensors(
    weight: torch.Tensor, bias: torch.Tensor, fan_in: int, scheme: str, generator: torch.Generator
) -> None:
    """Fill weight and bias in place.

    ``default`` is PyTorch's nn.Linear/nn.Conv1d initialisation, U(±1/√fan_in) for both (the
    Bio-FO and BP reference code); ``kaiming`` is He-uniform U(±√(6/fan_in)) with zero bias;
    ``zero`` is all zeros (the DFA/DRTP option).
    """
    if scheme == "default":
        bound = 1.0 / math.sqrt(fan_in)
        weight.uniform_(-bound, bound, generator=generator)
        bias.uniform_(-bound, bound, generator=generator)
    elif scheme == "kaiming":
        bound = math.sqrt(6.0 / fan_in)
        weight.uniform_(-bound, bound, generator=generator)
        bias.zero_()
    elif scheme == "zero":
        weight.zero_()
        bias.zero_()
    else:
        raise ValueError(f"unknown init {scheme!r}; known: default, kaiming, zero")


class Dense:
    """``z = (S ⊙ W) h + b`` with an optional fixed 0/1 mask ``S`` of W's shape."""

    kind = "dense"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_spec: dict[str, Any] | None = None,
    ) -> None:
        if mask is not None and mask.shape != weight.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}"
            )
        self.weight = weight
        self.bias = bias
        self.mask = mask
        self.mask_spec = mask_spec
        self.out_features, self.in_features = weight.shape
        if mask is not None:
            # Keep W zero off the mask so the stored weights already equal S ⊙ W.
            weight.mul_(mask)

    @property
    def fan_in(self) -> int:
        if self.mask is None:
            return self.in_features
        return max(1, round(float(self.mask.sum()) / self.out_features))

    @property
    def macs_per_sample(self) -> int:
        return self.weight.numel() if self.mask is None else int(self.mask.sum())

    def effective_weight(self) -> torch.Tensor:
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.effective_weight(), self.bias)

    def grads(self, dz: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad_w = dz.t().mm(h)
        if self.mask is not None:
            grad_w.mul_(self.mask)
        return grad_w, dz.sum(0)

    def input_grad(self, dz: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return dz.mm(self.effective_weight() if weight is None else weight)

    def buffers(self) -> dict[str, torch.Tensor]:
        return {} if self.mask is None else {"mask": self.mask}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "dense", "units": self.out_features}
        if self.mask_spec is not None:
            out["mask"] = dict(self.mask_spec)
        return out


class Conv1d:
    """1-D convolution on a flat ``(batch, channels·length)`` input, channel-major.

    The input is cut into patches (``unfold``), so the forward pass is one matrix product and the
    weight update is the explicit sum over positions ``ΔW = Σ_t δz_t ⊗ patch_t``.
    """

    kind = "conv1d"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        in_length: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.out_channels, self.in_channels, self.kernel_size = weight.shape
        self.in_length = in_length
        self.stride = stride
        self.padding = padding
        self.out_length = (in_length + 2 * padding - self.kernel_size) // stride + 1
        if self.out_length < 1:
            raise ValueError(
                f"conv1d kernel {self.kernel_size} does not fit input length {in_length} "
                f"with padding {padding}"
            )
        self.in_features = self.in_channels * in_length
        self.out_features = self.out_channels * self.out_length

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size

    @property
    def macs_per_sample(self) -> int:
        return self.out_channels * self.out_length * self.in_channels * self.kernel_size

    def patches(self, h: torch.Tensor) -> torch.Tensor:
        """``(batch, out_length, in_channels·kernel)``: the input each output position sees."""
        x = h.reshape(h.shape[0], self.in_channels, self.in_length)
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        windows = x.unfold(2, self.kernel_size, self.stride)  # (B, Ci, Lout, k)
        return windows.permute(0, 2, 1, 3).reshape(h.shape[0], self.out_length, -1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat_weight = self.weight.reshape(self.out_channels, -1)
        z = self.patches(h).matmul(flat_weight.t()) + self.bias  # (B, Lout, Co)
        return z.transpose(1, 2).reshape(h.shape[0], self.out_features)

    def grads(self, dz: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dz3 = dz.reshape(dz.shape[0], self.out_channels, self.out_length)
        grad_w = torch.einsum("bol,blk->ok", dz3, self.patches(h))
        return grad_w.reshape(self.weight.shape), dz3.sum(dim=(0, 2))

    def input_grad(self, dz: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = (self.weight if weight is None else weight).reshape(self.out_channels, -1)
        batch = dz.shape[0]
        dz3 = dz.reshape(batch, self.out_channels, self.out_length)
        dpatch = dz3.transpose(1, 2).matmul(w)  # (B, Lout, Ci·k)
        dpatch = dpatch.reshape(batch, self.out_length, self.in_channels, self.kernel_size)
        padded = dz.new_zeros(batch, self.in_channels, self.in_length + 2 * self.padding)
        span = self.stride * (self.out_length - 1) + 1
        for j in range(self.kernel_size):
            padded[:, :, j : j + span : self.stride] += dpatch[:, :, :, j].transpose(1, 2)
        dx = padded[:, :, self.padding : self.padding + self.in_length]
        return dx.reshape(batch, self.in_features)

    def buffers(self) -> dict[str, torch.Tensor]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {
            "type": "conv1d",
            "channels": self.out_channels,
            "in_channels": self.in_channels,
            "kernel": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
        }
