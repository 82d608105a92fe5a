"""The inference-and-update engine behind each live model.

The daemon talks to a model only through this interface, so the engine that runs it can change
without touching the registry, the routes or the checkpoints, which are engine-neutral bytes
(``models.archive``): a checkpoint written by one engine loads in the other.

- ``torch``: the ``models.learner.Learner`` run eagerly (needs the ``torch`` extra).
- ``onnxruntime``: ``models.ort_learner.OrtLearner``, the inference pass and the whole Bio-FO
  update step as ONNX graphs on plain onnxruntime; it never imports torch.

Each engine's modules are imported only when a model is loaded with it, so a daemon on the
onnxruntime engine runs on the base install, without torch.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from models.denormals import subnormals_flushed

ENGINES = ("torch", "onnxruntime")


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


class _Wrapped:
    """What both engines share: each wraps a learner object with the same small surface."""

    _learner: Any

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
        # Adam's moments of silent units decay into subnormals, which make every later update
        # many times slower (models.denormals).
        with subnormals_flushed():
            return self._learner.learn(x, y)


class TorchEngine(_Wrapped):
    """A ``models.learner.Learner`` run eagerly by torch."""

    def __init__(self, blob: bytes):
        from models import checkpoint

        self._learner = checkpoint.loads(blob)

    def dumps(self) -> bytes:
        from models import checkpoint

        return checkpoint.dumps(self._learner)

    def to_onnx(self) -> bytes:
        from models import export

        return export.to_onnx(self._learner)


class OnnxEngine(_Wrapped):
    """A Bio-FO model run by onnxruntime, inference and updates alike."""

    def __init__(self, blob: bytes):
        from models.ort_learner import OrtLearner

        self._learner = OrtLearner.loads(blob)

    def dumps(self) -> bytes:
        return self._learner.dumps()

    def to_onnx(self) -> bytes:
        return self._learner.to_onnx()


def _torch_imports() -> bool:
    # Imported rather than looked up: a torch that is present but cannot load (a wheel built for
    # another CUDA, say) must count as absent. Where it loads, the torch engine uses it anyway.
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def default_engine() -> str:
    """``torch`` where it can be imported (the ``torch`` extra), else ``onnxruntime``."""
    return "torch" if _torch_imports() else "onnxruntime"


def resolve_engine(engine: str | None) -> str:
    """The engine to run: the one asked for, or the default; refuses one that cannot run here."""
    if engine is None:
        return default_engine()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if engine == "torch" and not _torch_imports():
        raise ValueError("engine 'torch' needs torch: pip install '.[torch]', or use 'onnxruntime'")
    return engine


def load_learner(blob: bytes, engine: str) -> Engine:
    if engine == "torch":
        return TorchEngine(blob)
    if engine == "onnxruntime":
        return OnnxEngine(blob)
    raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
