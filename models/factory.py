"""Build a ``Learner`` from a JSON-able spec.

    {"input_dim": D, "classes": ["N", "S", "V", "F", "Q"],
     "hidden": [256, 256]                       # fully connected widths, or instead:
     "layers": [{"type": "dense", "units": 128, "mask": {"kind": "local", "receptive_field": 9}},
                {"type": "dense", "units": 128, "mask": {"kind": "random", "density": 0.1}},
                {"type": "conv1d", "channels": 8, "kernel": 5, "stride": 1, "padding": 2,
                 "in_channels": 1}],            # each may also say "activation"
     "activation": "relu", "init": "default",   # default: the rule's
     "rule": "biofo", "rule_options": {...},
     "optimizer": {"name": "adam", "lr": 1e-3}, # default: the rule's
     "seed": 0, "dtype": "float32",
     "input_mean": [...], "input_std": [...]}   # default: 0 and 1

Everything random comes from ``seed``: the network's initialisation (masks and weights, layer by
layer, then the read-out), the rule's fixed matrices and the learner's generator each use their
own stream (``models.seeding``), so the same spec always builds the same learner.
``Learner.spec`` returns the normalised form (``layers`` spelled out, defaults filled in).
"""

from __future__ import annotations

from typing import Any

import torch

from models.activations import get_activation
from models.layers import Conv1d, Dense, Layer, init_tensors, local_mask, random_mask
from models.learner import DTYPES, Learner
from models.network import Network
from models.optim import build_optimizer
from models.rules import RULES
from models.seeding import generator

SPEC_KEYS = {
    "input_dim", "classes", "hidden", "layers", "activation", "init", "rule", "rule_options",
    "optimizer", "seed", "dtype", "input_mean", "input_std",
}
LAYER_KEYS = {
    "dense": {"type", "units", "mask", "activation"},
    "conv1d": {"type", "channels", "kernel", "stride", "padding", "in_channels", "activation"},
}


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(given) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return value


def _build_dense(
    where: str, entry: dict[str, Any], in_features: int, init: str, rng: torch.Generator,
    dtype: torch.dtype,
) -> Dense:
    units = _positive_int(f"{where}.units", entry.get("units"))
    mask_spec = entry.get("mask")
    mask = None
    if mask_spec is not None:
        kind = mask_spec.get("kind")
        if kind == "local":
            _check_keys(f"{where}.mask", mask_spec, {"kind", "receptive_field"})
            field = _positive_int(f"{where}.mask.receptive_field", mask_spec.get("receptive_field"))
            mask = local_mask(in_features, units, field, dtype)
        elif kind == "random":
            _check_keys(f"{where}.mask", mask_spec, {"kind", "density"})
            mask = random_mask(in_features, units, float(mask_spec.get("density", 0.0)), rng, dtype)
        else:
            raise ValueError(f"{where}.mask.kind must be 'local' or 'random', got {kind!r}")
    weight = torch.empty(units, in_features, dtype=dtype)
    bias = torch.empty(units, dtype=dtype)
    fan_in = in_features if mask is None else max(1, round(float(mask.sum()) / units))
    init_tensors(weight, bias, fan_in, init, rng)
    return Dense(weight, bias, mask, mask_spec)


def _build_conv(
    where: str, entry: dict[str, Any], in_features: int, previous: Layer | None, init: str,
    rng: torch.Generator, dtype: torch.dtype,
) -> Conv1d:
    default_channels = previous.out_channels if isinstance(previous, Conv1d) else 1
    in_channels = _positive_int(f"{where}.in_channels", entry.get("in_channels", default_channels))
    if in_features % in_channels:
        raise ValueError(f"{where}: {in_features} inputs do not split into {in_channels} channels")
    channels = _positive_int(f"{where}.channels", entry.get("channels"))
    kernel = _positive_int(f"{where}.kernel", entry.get("kernel"))
    stride = _positive_int(f"{where}.stride", entry.get("stride", 1))
    padding = int(entry.get("padding", 0))
    weight = torch.empty(channels, in_channels, kernel, dtype=dtype)
    bias = torch.empty(channels, dtype=dtype)
    layer = Conv1d(weight, bias, in_features // in_channels, stride, padding)
    init_tensors(weight, bias, layer.fan_in, init, rng)
    return layer


def build_learner(spec: dict[str, Any]) -> Learner:
    _check_keys("spec", spec, SPEC_KEYS)
    rule_name = spec.get("rule", "biofo")
    if rule_name not in RULES:
        raise ValueError(f"spec.rule must be one of {sorted(RULES)}, got {rule_name!r}")
    rule_cls = RULES[rule_name]
    input_dim = _positive_int("spec.input_dim", spec.get("input_dim"))
    classes = [str(c) for c in spec.get("classes", [])]
    if len(classes) < 2:
        raise ValueError("spec.classes must name at least two classes")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"spec.seed must be a non-negative integer, got {seed!r}")
    dtype_name = spec.get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ValueError(f"spec.dtype must be one of {sorted(DTYPES)}, got {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    if "hidden" in spec and "layers" in spec:
        raise ValueError("spec: give either 'hidden' or 'layers', not both")
    entries = spec.get("layers")
    if entries is None:
        entries = [{"type": "dense", "units": units} for units in spec.get("hidden", [])]
    activation = spec.get("activation", rule_cls.defaults["activation"])
    init = spec.get("init", rule_cls.defaults["init"])

    rng = generator(seed, "init")
    width = input_dim + rule_cls.extra_inputs(len(classes))
    layers: list[Layer] = []
    activations = []
    for index, entry in enumerate(entries):
        where = f"spec.layers[{index}]"
        kind = entry.get("type")
        if kind not in LAYER_KEYS:
            raise ValueError(f"{where}.type must be one of {sorted(LAYER_KEYS)}, got {kind!r}")
        _check_keys(where, entry, LAYER_KEYS[kind])
        if kind == "dense":
            layer: Layer = _build_dense(where, entry, width, init, rng, dtype)
        else:
            previous = layers[-1] if layers else None
            layer = _build_conv(where, entry, width, previous, init, rng, dtype)
        layers.append(layer)
        activations.append(get_activation(entry.get("activation", activation)))
        width = layer.out_features
    readout_weight = torch.empty(len(classes), width, dtype=dtype)
    readout_bias = torch.empty(len(classes), dtype=dtype)
    init_tensors(readout_weight, readout_bias, width, init, rng)

    mean = torch.as_tensor(spec.get("input_mean", [0.0] * input_dim), dtype=dtype)
    std = torch.as_tensor(spec.get("input_std", [1.0] * input_dim), dtype=dtype)
    if mean.shape != (input_dim,) or std.shape != (input_dim,):
        raise ValueError(f"spec.input_mean and spec.input_std must have {input_dim} values")
    network = Network(
        mean, std, layers, activations, Dense(readout_weight, readout_bias),
        extra_inputs=rule_cls.extra_inputs(len(classes)),
    )
    try:
        rule = rule_cls(network, seed, **spec.get("rule_options", {}))
    except TypeError as error:
        raise ValueError(f"spec.rule_options for {rule_name!r}: {error}") from None
    optimizer = build_optimizer(spec.get("optimizer", rule_cls.defaults["optimizer"]))
    return Learner(network, rule, optimizer, seed, classes)
