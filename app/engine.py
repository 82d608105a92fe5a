"""The inference-and-update engine behind each live model.

The daemon talks to a model only through this interface, so the engine that runs it (torch today)
can change without touching the registry, the routes or the checkpoints, which are engine-neutral
bytes from ``models.checkpoint``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

ENGINES = ("torch",)


class UpdateStats(Protocol):
    loss_per_layer: list[float]
    macs: int
    seconds: float


class Engine(Protocol):
    version: int

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def rule(self) -> str: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def learn(self, x: np.ndarray, y: np.ndarray) -> UpdateStats: ...

    def dumps(self) -> bytes: ...

    def to_onnx(self) -> bytes: ...


class TorchEngine:
    """A ``models.learner.Learner`` run eagerly by torch."""

    def __init__(self, blob: bytes):
        from models import checkpoint

        self._learner = checkpoint.loads(blob)

    @property
    def version(self) -> int:
        return int(self._learner.version)

    @version.setter
    def version(self, value: int) -> None:
        self._learner.version = int(value)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self._learner.classes)

    @property
    def rule(self) -> str:
        return str(self._learner.spec["rule"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._learner.predict(x)

    def learn(self, x: np.ndarray, y: np.ndarray) -> UpdateStats:
        return self._learner.learn(x, y)

    def dumps(self) -> bytes:
        from models import checkpoint

        return checkpoint.dumps(self._learner)

    def to_onnx(self) -> bytes:
        from models import export

        return export.to_onnx(self._learner)


def load_learner(blob: bytes, engine: str) -> Engine:
    if engine == "torch":
        return TorchEngine(blob)
    raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
