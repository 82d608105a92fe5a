"""A feed-forward network: fixed input standardisation, hidden layers, an explicit read-out.

``forward`` returns every pre-activation ``z_k`` and activation ``h_k`` (``h_0`` is the
standardised input), which is what the rules that wait for the output error need. Rules that are
update-unlocked walk the stack one layer at a time with ``layer_forward`` and keep nothing else.

The read-out is a dense layer ``logits = W_out h_L + b_out``. It is trainable for every rule
except Bio-FO, which installs the last layer's fixed random head there and freezes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.activations import Activation
from models.layers import Dense, Layer


@dataclass
class Trace:
    h: list[torch.Tensor]  # h[0] = standardised input, h[k] = f(z_k)
    z: list[torch.Tensor]  # z[k-1] = pre-activation of hidden layer k
    logits: torch.Tensor


class Network:
    def __init__(
        self,
        input_mean: torch.Tensor,
        input_std: torch.Tensor,
        layers: list[Layer],
        activations: list[Activation],
        readout: Dense,
        readout_trainable: bool = True,
        extra_inputs: int = 0,
    ) -> None:
        if len(layers) != len(activations):
            raise ValueError("one activation per hidden layer is required")
        width = input_mean.numel() + extra_inputs
        for index, layer in enumerate([*layers, readout]):
            if layer.in_features != width:
                raise ValueError(
                    f"layer {index} expects {layer.in_features} inputs but receives {width}"
                )
            width = layer.out_features
        if torch.any(input_std <= 0):
            raise ValueError("input_std must be positive")
        self.input_mean = input_mean
        self.input_std = input_std
        self.layers = layers
        self.activations = activations
        self.readout = readout
        self.readout_trainable = readout_trainable
        # Inputs a rule appends to the standardised features (e.g. a label embedding).
        self.extra_inputs = extra_inputs

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def input_dim(self) -> int:
        return self.input_mean.numel()

    @property
    def num_classes(self) -> int:
        return self.readout.out_features

    @property
    def dtype(self) -> torch.dtype:
        return self.readout.weight.dtype

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def layer_forward(self, index: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden layer ``index`` (0-based): returns ``(z, f(z))``."""
        z = self.layers[index].forward(h)
        return z, self.activations[index].fn(z)

    def forward(self, h0: torch.Tensor) -> Trace:
        hs, zs = [h0], []
        for index in range(self.depth):
            z, h = self.layer_forward(index, hs[-1])
            zs.append(z)
            hs.append(h)
        return Trace(h=hs, z=zs, logits=self.readout.forward(hs[-1]))

    def logits(self, h0: torch.Tensor) -> torch.Tensor:
        h = h0
        for index in range(self.depth):
            h = self.layer_forward(index, h)[1]
        return self.readout.forward(h)

    def forward_macs_per_sample(self) -> int:
        return sum(layer.macs_per_sample for layer in self.layers) + self.readout.macs_per_sample

    def parameters(self) -> dict[str, torch.Tensor]:
        """Trainable tensors by name (the optimizer's keys)."""
        params: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            params[f"layers.{index}.weight"] = layer.weight
            params[f"layers.{index}.bias"] = layer.bias
        if self.readout_trainable:
            params["readout.weight"] = self.readout.weight
            params["readout.bias"] = self.readout.bias
        return params

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor defining the network: trainable, frozen read-out, masks, input scaling."""
        state = {"input_mean": self.input_mean, "input_std": self.input_std}
        for index, layer in enumerate(self.layers):
            state[f"layers.{index}.weight"] = layer.weight
            state[f"layers.{index}.bias"] = layer.bias
            for name, tensor in layer.buffers().items():
                state[f"layers.{index}.{name}"] = tensor
        state["readout.weight"] = self.readout.weight
        state["readout.bias"] = self.readout.bias
        return state

    def describe(self) -> dict[str, Any]:
        layers = []
        for layer, activation in zip(self.layers, self.activations):
            layers.append({**layer.describe(), "activation": activation.name})
        return {"input_dim": self.input_dim, "layers": layers}
