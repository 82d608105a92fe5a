"""``biofo bench early-exit``: what Bio-FO's early exit saves, and what it costs in accuracy.

Every Bio-FO layer has its own head, so a beat whose first head is already confident need not go
deeper. A 3 × 256 Bio-FO network is trained on DS1 beats (class-balanced batches, as the base
model), then DS2 beats are classified with exit thresholds on the top-1 probability. Saved energy
is measured with the energy meter around the whole DS2 pass, next to the saved multiply-accumulates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import datasets
from bench.report import markdown_table, write_outputs
from signals.classification import class_scores
from bench.training import balanced_batches, single_thread
from signals.aami import AAMI_CLASSES
from signals.mitbih import DS1, DS2

THRESHOLDS: tuple[float | None, ...] = (None, 0.999, 0.99, 0.95, 0.9, 0.8)
HIDDEN = [256, 256, 256]


def run(out: str = "bench/results", progress: bool = False, steps: int = 1500) -> dict[str, Any]:
    from app.energy import detect_meter
    from models.factory import build_learner

    single_thread()
    started = time.perf_counter()
    train, test = datasets.beats_of(DS1), datasets.beats_of(DS2)
    spec = {
        "input_dim": int(train.X.shape[1]), "classes": list(AAMI_CLASSES), "hidden": HIDDEN,
        "rule": "biofo", "optimizer": {"name": "adam", "lr": 1e-3}, "seed": 0,
        "input_mean": train.X.mean(axis=0).tolist(), "input_std": (train.X.std(axis=0) + 1e-6).tolist(),
    }
    trained = build_learner(spec)
    for index in balanced_batches(train.y, 64, steps, np.random.default_rng(0)):
        trained.learn(train.X[index], train.y[index])
    meter = detect_meter()
    rows: dict[str, dict[str, Any]] = {}
    for threshold in THRESHOLDS:
        learner = build_learner({**spec, "rule_options": {"early_exit": threshold}})
        learner.load_state_dict(trained.state_dict())
        with meter.measure() as measured:
            detail = learner.predict_detail(test.X)
        predicted = np.argmax(detail.probabilities, axis=1)
        scores = class_scores(test.y, predicted, AAMI_CLASSES)
        exits = np.bincount(detail.exit_layer, minlength=len(HIDDEN) + 1)[1:]
        rows["none" if threshold is None else str(threshold)] = {
            "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "macs_per_beat": detail.macs / len(test.y), "macs_saved": detail.macs_saved / detail.macs_full,
            "joules": measured.joules, "energy_source": measured.source,
            "exits_per_layer": [int(n) for n in exits],
        }
    full = rows["none"]
    for row in rows.values():
        row["joules_saved"] = 1.0 - row["joules"] / full["joules"] if full["joules"] else None
    result = {"dataset": "mitbih DS1 -> DS2", "hidden": HIDDEN, "steps": steps, "beats": int(len(test.y)),
              "thresholds": rows, "seconds": time.perf_counter() - started}
    table = markdown_table(
        ["exit when top-1 ≥", "accuracy", "macro-F1", "MACs / beat", "MACs saved", "J (DS2 pass)",
         "J saved", "beats leaving at layer 1 / 2 / 3"],
        [[name, r["accuracy"], r["macro_f1"], r["macs_per_beat"], r["macs_saved"], r["joules"],
          r["joules_saved"], " / ".join(map(str, r["exits_per_layer"]))] for name, r in rows.items()],
    )
    markdown = (
        "# Bio-FO early exit\n\n"
        f"Bio-FO {' × '.join(map(str, HIDDEN))} trained on DS1 beats ({steps} class-balanced batches of 64), "
        f"{len(test.y)} DS2 beats classified in one pass per threshold. Energy source: {meter.source} "
        f"({meter.total}).\n\n{table}\n\nCommand: `biofo bench early-exit`; "
        f"run time {result['seconds']:.0f} s.\n"
    )
    write_outputs(Path(out), "early-exit", markdown, result)
    return result
