"""A patient's model: network + learning rule + optimizer state + version counter.

The daemon calls ``predict`` for every window and ``learn`` after every clinician label (a batch
of one), in place. Arrays cross this boundary as numpy; tensors stay inside.

``state_dict()`` holds every tensor that determines future behaviour: weights, masks, input
scaling, frozen heads and feedback matrices, optimizer moments and step counts, rule counters,
the random generator a rule may use while learning, and the version. Loading it into a learner
built from the same ``spec`` reproduces the original bit for bit, including what it learns next.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.batch import check_features, check_labels
from models.cost import Cost
from models.network import Network
from models.optim import Optimizer
from models.rules.base import Rule, StepContext, check_fits, copy_exact
from models.seeding import generator

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LearnStats:
    loss_per_layer: list[float]  # every loss the rule minimised this step, in layer order
    macs: int  # see models.cost
    bytes_touched: int
    seconds: float  # wall time of the learn call


@dataclass
class Inference:
    probabilities: np.ndarray  # (batch, C) float32
    exit_layer: np.ndarray  # (batch,) int64: the answer was read from h_k
    macs: int
    macs_full: int

    @property
    def macs_saved(self) -> int:
        return self.macs_full - self.macs


class Learner:
    def __init__(
        self,
        network: Network,
        rule: Rule,
        optimizer: Optimizer,
        seed: int,
        classes: Sequence[str] | None = None,
    ) -> None:
        num_classes = network.num_classes
        names = classes if classes is not None else range(num_classes)
        self.classes: tuple[str, ...] = tuple(str(c) for c in names)
        if len(self.classes) != num_classes:
            raise ValueError(f"{len(self.classes)} class names for {num_classes} outputs")
        if len(set(self.classes)) != num_classes:
            raise ValueError(f"class names must be distinct: {self.classes}")
        self.network = network
        self.rule = rule
        self.optimizer = optimizer
        self.seed = int(seed)
        self._generator = generator(self.seed, "learn")
        self._version = torch.zeros((), dtype=torch.int64)
        rule_params = {f"rule.{name}": tensor for name, tensor in rule.parameters().items()}
        optimizer.bind({**network.parameters(), **rule_params})

    @property
    def version(self) -> int:
        return int(self._version)

    @version.setter
    def version(self, value: int) -> None:
        # The daemon restarts the count when it forks a patient's model from a base model.
        if value < 0:
            raise ValueError(f"version must be >= 0, got {value}")
        self._version.fill_(int(value))

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description that ``models.factory.build_learner`` rebuilds this from."""
        described = self.network.describe()
        dtype = next(name for name, value in DTYPES.items() if value == self.network.dtype)
        return {
            "input_dim": described["input_dim"],
            "classes": list(self.classes),
            "layers": described["layers"],
            "rule": self.rule.name,
            "rule_options": self.rule.options,
            "optimizer": self.optimizer.describe(),
            "seed": self.seed,
            "dtype": dtype,
            "input_mean": self.network.input_mean.tolist(),
            "input_std": self.network.input_std.tolist(),
        }

    def _features(self, x: np.ndarray) -> torch.Tensor:
        x = check_features(x, self.network.input_dim)
        return self.network.standardise(torch.as_tensor(x, dtype=self.network.dtype))

    def predict_detail(self, x: np.ndarray) -> Inference:
        with torch.no_grad():
            prediction = self.rule.predict(self.network, self._features(x))
        return Inference(
            probabilities=prediction.probabilities.to(torch.float32).numpy(),
            exit_layer=prediction.exit_layer.numpy(),
            macs=prediction.macs,
            macs_full=prediction.macs_full,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(batch, C)`` float32."""
        return self.predict_detail(x).probabilities

    def learn(self, x: np.ndarray, y: np.ndarray) -> LearnStats:
        """One update from a labelled batch (one sample in streaming use); version += 1."""
        start = time.perf_counter()
        h0 = self._features(x)
        labels = check_labels(y, h0.shape[0], self.network.num_classes)
        cost = Cost()
        cost.touch(h0)
        losses: list[float] = []
        ctx = StepContext(cost=cost, generator=self._generator)
        with torch.no_grad():
            target = torch.as_tensor(labels, dtype=torch.int64)
            for update in self.rule.updates(self.network, h0, target, ctx):
                self.optimizer.step(update.grads, cost)
                if update.loss is not None:
                    losses.append(update.loss)
                # Drop this layer's gradients before the rule computes the next layer's.
                del update
        self._version.add_(1)
        return LearnStats(
            loss_per_layer=losses,
            macs=cost.macs,
            bytes_touched=cost.bytes_touched,
            seconds=time.perf_counter() - start,
        )

    def _state_refs(self) -> dict[str, torch.Tensor]:
        state = {f"network.{k}": v for k, v in self.network.state_dict().items()}
        state.update({f"optimizer.{k}": v for k, v in self.optimizer.state_dict().items()})
        state.update({f"rule.{k}": v for k, v in self.rule.state_dict().items()})
        state["learner.version"] = self._version
        return state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of every tensor of the model's state, by name."""
        state = {k: v.detach().clone() for k, v in self._state_refs().items()}
        state["learner.generator"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore exactly; keys, shapes and dtypes must match this learner's."""
        own = self._state_refs()
        expected = set(own) | {"learner.generator"}
        if set(state) != expected:
            raise KeyError(
                f"state keys differ: missing {sorted(expected - set(state))}, "
                f"unexpected {sorted(set(state) - expected)}"
            )
        # Check everything before copying anything, so a bad state never leaves a half-loaded model.
        for key, tensor in own.items():
            check_fits(tensor, state[key], key)
        check_fits(self._generator.get_state(), state["learner.generator"], "learner.generator")
        rule_state = {k[len("rule.") :]: v for k, v in state.items() if k.startswith("rule.")}
        self.rule.load_state_dict(rule_state)
        for key, tensor in own.items():
            if not key.startswith("rule."):
                copy_exact(tensor, state[key], key)
        self._generator.set_state(state["learner.generator"].clone())
