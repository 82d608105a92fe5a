"""Training with a clock and an energy meter, shared by the benchmarks.

``train`` runs a list of index batches through ``Learner.learn`` and, every ``eval_every``
steps, scores a validation set. Only the learn calls are inside the timer and the meter, so a
curve point (step, training seconds, joules, validation accuracy) says what reaching that
accuracy cost; evaluation is not charged to the rule. Both wall seconds and the training
thread's CPU seconds are kept: on a shared machine wall time also counts other people's work,
so time to target is read in CPU seconds. The learner keeps the state with the best
validation accuracy (early stopping), which is what "trained to its best accuracy" means here.

Energy comes from ``app.energy.detect_meter()``. On a machine without a power sensor that is the
estimate (thread CPU seconds × watts); torch is then limited to one thread so that the thread's
CPU time is all the work (``torch.set_num_threads(1)`` in ``single_thread``).

``with_rule`` lets a benchmark compare another learning rule on a base's weights; the daemon's
own per-patient path is ``app.registry.fork`` plus ``models.adaptation.PATIENT_POLICY``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.learner import Learner
from models.memory import peak_tensor_bytes

MIB = 1024.0 * 1024.0


def single_thread() -> None:
    torch.set_num_threads(1)


def balanced_batches(
    y: np.ndarray, batch: int, steps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``steps`` index batches in which every class present is drawn equally often (with
    replacement), as ``biofo train-base`` trains the bundled models."""
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    picks = rng.integers(0, len(by_class), size=(steps, batch))
    return [
        np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in row]) for row in picks
    ]


def epoch_batches(n: int, batch: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``steps`` shuffled full batches, a new permutation every epoch of ``n // batch`` steps
    (the tail of a permutation that does not fill a batch is dropped)."""
    per_epoch = n // batch
    if per_epoch < 1:
        raise ValueError(f"{n} samples do not fill one batch of {batch}")
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        order = rng.permutation(n)
        batches += [order[i * batch : (i + 1) * batch] for i in range(per_epoch)]
    return batches[:steps]


def accuracy(learner: Learner, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(learner.predict(X), axis=1) == y))


@dataclass
class CurvePoint:
    step: int
    train_s: float
    cpu_s: float
    joules: float
    val_accuracy: float


@dataclass
class TrainRun:
    curve: list[CurvePoint] = field(default_factory=list)
    train_s: float = 0.0
    cpu_s: float = 0.0
    joules: float = 0.0
    energy_source: str = ""
    energy_total: str = ""
    macs_per_step: int = 0
    peak_mem_mib: float = 0.0
    best_step: int = 0
    best_val_accuracy: float = 0.0

    def to_target(
        self, target: float, first_step: int = 0
    ) -> tuple[float | None, float | None]:
        """(training CPU seconds, joules) at the first evaluation reaching ``target``, among
        those after ``first_step`` learn calls."""
        for point in self.curve:
            if point.step >= first_step and point.val_accuracy >= target:
                return point.cpu_s, point.joules
        return None, None


def step_cost(learner: Learner, X: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """MACs and peak working memory (MiB) of one learn call on a copy of the learner."""
    from models import checkpoint

    twin = checkpoint.loads(checkpoint.dumps(learner))
    stats, peak = peak_tensor_bytes(lambda: twin.learn(X, y))
    return stats.macs, peak / MIB


def train(
    learner: Learner,
    X: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    X_val: np.ndarray,
    y_val: np.ndarray,
    meter: Any,
    eval_every: int,
    desc: str = "train",
    progress: bool = False,
) -> TrainRun:
    run = TrainRun(energy_source=meter.source, energy_total=meter.total)
    run.macs_per_step, run.peak_mem_mib = step_cost(learner, X[batches[0]], y[batches[0]])
    best_state = learner.state_dict()
    run.best_val_accuracy = accuracy(learner, X_val, y_val)
    run.curve.append(CurvePoint(0, 0.0, 0.0, 0.0, run.best_val_accuracy))
    bar = tqdm(total=len(batches), desc=desc, disable=not progress)
    for start in range(0, len(batches), eval_every):
        chunk = batches[start : start + eval_every]
        with meter.measure() as measured:
            began, began_cpu = time.perf_counter(), time.thread_time()
            for index in chunk:
                learner.learn(X[index], y[index])
            run.train_s += time.perf_counter() - began
            run.cpu_s += time.thread_time() - began_cpu
        run.joules += measured.joules
        bar.update(len(chunk))
        val = accuracy(learner, X_val, y_val)
        run.curve.append(CurvePoint(start + len(chunk), run.train_s, run.cpu_s, run.joules, val))
        if val > run.best_val_accuracy:
            run.best_val_accuracy, run.best_step = val, start + len(chunk)
            best_state = learner.state_dict()
    bar.close()
    learner.load_state_dict(best_state)
    return run


def with_rule(blob: bytes, rule: str) -> Learner:
    """A base's weights, input scaling and learning rate under another rule, at version 0."""
    from models import checkpoint
    from models.factory import build_learner

    base = checkpoint.loads(blob)
    other = build_learner({**base.spec, "rule": rule, "rule_options": {}})
    for name, tensor in base.network.parameters().items():
        other.network.parameters()[name].copy_(tensor)
    other.optimizer.lr = base.optimizer.lr
    other.version = 0
    return other
