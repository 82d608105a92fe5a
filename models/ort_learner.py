"""A Bio-FO learner run by onnxruntime alone: no torch is imported, installed or needed.

It holds the same state as ``models.learner.Learner`` (every ``state_dict`` array, by the same
names, as numpy) and reads and writes the same checkpoint bytes (``models.archive``), so a
checkpoint written by either engine loads in the other and continues learning. Inference and the
whole update step are two ONNX graphs from ``models.biofo_onnx``, built from the checkpoint's spec
and shared by every learner with the same shapes and optimizer settings.

Sessions run on one thread: the daemon's matrices (a batch of one through 256-unit layers) are
too small for a thread pool to pay for its wake-ups, and idle pool threads would spin on the
battery of a bedside box.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort

from models.archive import Archive, pack, unpack
from models.batch import check_features, check_labels
from models.biofo_onnx import (
    FEATURES,
    LABELS,
    LEARNING_RATE,
    LOSSES,
    NEXT,
    PROBABILITIES,
    Plan,
    inference_model,
    plan_for,
    update_model,
)
from models.biofo_spec import STEP_SLOT
from models.onnx_graph import set_metadata

# Carried through unchanged: the torch learner's counter and random generator state.
LEARNER_KEYS = ("learner.version", "learner.generator")


@dataclass
class OrtStats:
    loss_per_layer: list[float]  # every layer's local loss, in layer order
    macs: int  # counted as models.cost counts them
    seconds: float  # wall time of the learn call
    probabilities: np.ndarray  # (batch, C) before the update


@lru_cache(maxsize=16)
def sessions(plan: Plan) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """The inference and update sessions of a plan (thread-safe to run concurrently)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def session(model: onnx.ModelProto) -> ort.InferenceSession:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    return session(inference_model(plan)), session(update_model(plan))


class OrtLearner:
    def __init__(self, archive: Archive) -> None:
        self.plan = plan_for(archive.spec)
        self.spec = archive.spec
        self.classes: tuple[str, ...] = tuple(archive.classes)
        shapes = self.plan.state_shapes()
        expected = set(shapes) | set(LEARNER_KEYS)
        if set(archive.arrays) != expected:
            raise KeyError(
                f"state keys differ: missing {sorted(expected - set(archive.arrays))}, "
                f"unexpected {sorted(set(archive.arrays) - expected)}"
            )
        for name, (shape, dtype) in {**shapes, "learner.version": ((), np.dtype(np.int64))}.items():
            array = archive.arrays[name]
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"{name}: stored {array.dtype} {array.shape} does not fit {dtype} {shape}"
                )
        steps = {int(archive.arrays[name]) for name in shapes if name.endswith(f".{STEP_SLOT}")}
        if len(steps) > 1:
            raise ValueError(f"optimizer step counts differ across parameters: {sorted(steps)}")
        self._state = {name: np.array(array) for name, array in archive.arrays.items()}
        self._lr = np.array(self.spec["optimizer"]["lr"], dtype=np.float32)
        self._infer, self._update = sessions(self.plan)
        self._infer_state = [i.name for i in self._infer.get_inputs() if i.name != FEATURES]
        self._bind_update()
        nonzeros = [
            int(np.count_nonzero(self._state[f"network.layers.{k}.mask"]))
            if masked else int(np.prod(self.plan.layer_shape(k)))
            for k, masked in enumerate(self.plan.masked)
        ]
        self._macs_per_sample = self.plan.macs_per_sample(nonzeros)

    def _bind_update(self) -> None:
        """Two bindings of the update graph that swap the arrays it replaces (A -> B, B -> A).

        The step writes its outputs straight into the other buffer and the learner then reads
        from it, so an update allocates nothing and copies nothing (~20 % of a batch-1 step).
        """
        outputs = [o.name for o in self._update.get_outputs()]
        replaced = [name[len(NEXT):] for name in outputs if name.startswith(NEXT)]
        current = {name: self._state[name] for name in replaced}
        other = {name: array.copy() for name, array in current.items()}
        self._losses = np.empty(self.plan.depth, dtype=np.float32)
        self._bindings = []
        for source, target in ((current, other), (other, current)):
            binding = self._update.io_binding()
            for graph_input in self._update.get_inputs():
                name = graph_input.name
                if name not in (FEATURES, LABELS, LEARNING_RATE):
                    binding.bind_cpu_input(name, source.get(name, self._state.get(name)))
            binding.bind_cpu_input(LEARNING_RATE, self._lr)
            for name, array in target.items():
                binding.bind_output(
                    f"{NEXT}{name}", "cpu", 0, array.dtype, list(array.shape), array.ctypes.data
                )
            binding.bind_output(LOSSES, "cpu", 0, np.float32, [self.plan.depth],
                                self._losses.ctypes.data)
            self._bindings.append((binding, target))
        # Inference reads whichever buffer is current: binding the weights once per buffer leaves
        # only the features to bind per call (feeding them by name costs more than the graph).
        self._infer_bindings = []
        for source in (current, other):
            binding = self._infer.io_binding()
            for name in self._infer_state:
                binding.bind_cpu_input(name, source.get(name, self._state.get(name)))
            self._infer_bindings.append(binding)
        self._next = 0

    @classmethod
    def loads(cls, blob: bytes) -> OrtLearner:
        return cls(unpack(blob))

    def dumps(self) -> bytes:
        return pack(Archive(self.spec, self.version, list(self.classes), self._state))

    @property
    def version(self) -> int:
        return int(self._state["learner.version"])

    @version.setter
    def version(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"version must be >= 0, got {value}")
        self._state["learner.version"] = np.array(int(value), dtype=np.int64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every state array, by the torch learner's names."""
        return {name: array.copy() for name, array in self._state.items()}

    def _features(self, x: np.ndarray) -> np.ndarray:
        x = check_features(x, self.plan.input_dim)
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(batch, C)`` float32. Not re-entrant: callers serialise use of
        one learner (the daemon holds the model's lock), as they must for ``learn`` anyway."""
        features = self._features(x)
        binding = self._infer_bindings[self._next]
        binding.bind_cpu_input(FEATURES, features)
        probabilities = np.empty((features.shape[0], self.plan.num_classes), dtype=np.float32)
        binding.bind_output(PROBABILITIES, "cpu", 0, probabilities.dtype, list(probabilities.shape),
                            probabilities.ctypes.data)
        self._infer.run_with_iobinding(binding)
        return probabilities

    def learn(self, x: np.ndarray, y: np.ndarray) -> OrtStats:
        """One update from a labelled batch; version += 1. The state changes only if it succeeds."""
        start = time.perf_counter()
        features = self._features(x)
        labels = check_labels(y, features.shape[0], self.plan.num_classes).astype(np.int64)
        binding, target = self._bindings[self._next]
        binding.bind_cpu_input(FEATURES, features)
        binding.bind_cpu_input(LABELS, labels)
        probabilities = np.empty((features.shape[0], self.plan.num_classes), dtype=np.float32)
        binding.bind_output(PROBABILITIES, "cpu", 0, probabilities.dtype,
                            list(probabilities.shape), probabilities.ctypes.data)
        self._update.run_with_iobinding(binding)
        self._state.update(target)
        self._next = 1 - self._next
        self.version = self.version + 1
        return OrtStats(
            loss_per_layer=[float(loss) for loss in self._losses],
            macs=self._macs_per_sample * features.shape[0],
            seconds=time.perf_counter() - start,
            probabilities=probabilities,
        )

    def to_onnx(self) -> bytes:
        """The inference graph, current weights as initializers: ``x`` -> ``probabilities``,
        with the metadata ``models.export`` writes (classes, rule, version)."""
        model = inference_model(self.plan, self._state)
        set_metadata(model, self.classes, str(self.spec["rule"]), self.version)
        return model.SerializeToString()
