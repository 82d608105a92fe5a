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


@dataclass(frozen=True)
class Sessions:
    """A plan's sessions (each thread-safe to run concurrently): inference, the update of any
    batch, and the update of a batch of one, which the daemon runs once per label."""

    infer: ort.InferenceSession
    update: ort.InferenceSession
    update_single: ort.InferenceSession


@lru_cache(maxsize=16)
def sessions(plan: Plan) -> Sessions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def session(model: onnx.ModelProto) -> ort.InferenceSession:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    return Sessions(
        session(inference_model(plan)), session(update_model(plan)),
        session(update_model(plan, single=True)),
    )


@dataclass
class _Single:
    """Buffers of a batch of one, bound once: a call copies its row in, not a new binding."""

    x: np.ndarray
    y: np.ndarray
    probabilities: np.ndarray


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
        self._sessions = sessions(self.plan)
        self._single = _Single(
            np.zeros((1, self.plan.input_dim), np.float32), np.zeros(1, np.int64),
            np.zeros((1, self.plan.num_classes), np.float32),
        )
        self._bind()
        nonzeros = [
            int(np.count_nonzero(self._state[f"network.layers.{k}.mask"]))
            if masked else int(np.prod(self.plan.layer_shape(k)))
            for k, masked in enumerate(self.plan.masked)
        ]
        self._macs_per_sample = self.plan.macs_per_sample(nonzeros)

    def _bind(self) -> None:
        """Bindings of every graph to each of two buffers of the arrays an update replaces.

        The update writes its outputs straight into the other buffer and the learner then reads
        from it (A -> B, B -> A), so an update allocates nothing and copies nothing; inference
        reads whichever buffer is current. Binding the weights once per buffer leaves only the
        batch to bind per call (feeding arrays by name costs more than the batch-1 graphs), and
        at batch one not even that.
        """
        update = self._sessions.update
        replaced = [o.name[len(NEXT):] for o in update.get_outputs() if o.name.startswith(NEXT)]
        current = {name: self._state[name] for name in replaced}
        other = {name: array.copy() for name, array in current.items()}
        self._losses = np.empty(self.plan.depth, dtype=np.float32)
        self._buffers = (current, other)
        any_batch = {"infer": self._sessions.infer, "update": self._sessions.update}
        batch_one = {"infer": self._sessions.infer, "update": self._sessions.update_single}
        self._bindings: list[dict[tuple[str, bool], tuple[ort.InferenceSession, ort.IOBinding]]]
        self._bindings = []
        for source, target in ((current, other), (other, current)):
            bound = {}
            for single, chosen in ((False, any_batch), (True, batch_one)):
                for kind, session in chosen.items():
                    written = target if kind == "update" else {}
                    bound[kind, single] = (session, self._binding(session, source, written))
            for kind in ("infer", "update"):
                binding = bound[kind, True][1]
                binding.bind_cpu_input(FEATURES, self._single.x)
                self._bind_probabilities(binding, self._single.probabilities)
            bound["update", True][1].bind_cpu_input(LABELS, self._single.y)
            self._bindings.append(bound)
        self._next = 0

    def _binding(
        self, session: ort.InferenceSession, source: dict[str, np.ndarray],
        target: dict[str, np.ndarray],
    ) -> ort.IOBinding:
        """``session`` reading the state from ``source`` and writing what it replaces to
        ``target``; the batch and its probabilities are left to bind."""
        binding = session.io_binding()
        for graph_input in session.get_inputs():
            name = graph_input.name
            if name == LEARNING_RATE:
                binding.bind_cpu_input(name, self._lr)
            elif name not in (FEATURES, LABELS):
                binding.bind_cpu_input(name, source.get(name, self._state.get(name)))
        if target:
            for name, array in target.items():
                binding.bind_output(
                    f"{NEXT}{name}", "cpu", 0, array.dtype, list(array.shape), array.ctypes.data
                )
            binding.bind_output(LOSSES, "cpu", 0, np.float32, [self.plan.depth],
                                self._losses.ctypes.data)
        return binding

    @staticmethod
    def _bind_probabilities(binding: ort.IOBinding, probabilities: np.ndarray) -> None:
        binding.bind_output(PROBABILITIES, "cpu", 0, probabilities.dtype,
                            list(probabilities.shape), probabilities.ctypes.data)

    def _run(self, kind: str, features: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """Run graph ``kind`` on the current buffer; returns the probabilities it computed."""
        single = features.shape[0] == 1
        session, binding = self._bindings[self._next][kind, single]
        if single:
            self._single.x[...] = features
            if labels is not None:
                self._single.y[...] = labels
            session.run_with_iobinding(binding)
            return self._single.probabilities.copy()
        binding.bind_cpu_input(FEATURES, features)
        if labels is not None:
            binding.bind_cpu_input(LABELS, labels)
        probabilities = np.empty((features.shape[0], self.plan.num_classes), dtype=np.float32)
        self._bind_probabilities(binding, probabilities)
        session.run_with_iobinding(binding)
        return probabilities

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
        return self._run("infer", self._features(x), None)

    def learn(self, x: np.ndarray, y: np.ndarray) -> OrtStats:
        """One update from a labelled batch; version += 1. The state changes only if it succeeds."""
        start = time.perf_counter()
        features = self._features(x)
        labels = check_labels(y, features.shape[0], self.plan.num_classes)
        probabilities = self._run("update", features, labels.astype(np.int64))
        self._state.update(self._buffers[1 - self._next])
        self._next = 1 - self._next
        self.version = self.version + 1
        return OrtStats(
            loss_per_layer=self._losses.tolist(),
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
