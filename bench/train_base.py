"""``biofo train-base``: the bundled base models, trained reproducibly on real PhysioNet data.

- ECG: the reference beats of the 22 de Chazal DS1 records only; DS2 stays unseen so that the
  inter-patient figures in the card are honest and DS2 patients are new to the daemon.
- EEG: windows of the staged CHB-MIT crops of every patient (seizure vs post-ictal background).

Both are Bio-FO networks trained in the simultaneous mode the daemon uses, with class-balanced
mini-batches (N beats outnumber F beats 100 to 1 in DS1), a fixed seed and a fixed data order, so a
re-run writes the same weights on the same machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.base_models import PRETRAINED, base_path, card_path
from signals.classification import class_scores


@dataclass(frozen=True)
class Recipe:
    name: str
    hidden: tuple[int, ...]
    lr: float
    epochs: int
    batch: int
    streaming_lr: float = 3e-4  # what a patient's fork learns with, one label at a time
    seed: int = 0


# Mini-batches learn well at 1e-3; at batch 1 that rate over-fits the last few beats, so the fork
# each patient gets carries 3e-4 (measured on DS2 records: see models/rules/biofo.py).
ECG_RECIPE = Recipe(name="ecg-ds1-biofo", hidden=(256, 256), lr=1e-3, epochs=4, batch=64)
EEG_RECIPE = Recipe(name="eeg-chbmit-crops-biofo", hidden=(256, 256), lr=1e-3, epochs=20, batch=64)


def balanced_batches(y: np.ndarray, batch: int, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches in which every class present is drawn equally often (with replacement)."""
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    per_epoch = len(y) // batch
    batches = []
    for _ in range(epochs * per_epoch):
        picks = rng.integers(0, len(classes), size=batch)
        batches.append(np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in picks]))
    return batches


def fit(X: np.ndarray, y: np.ndarray, classes: tuple[str, ...], recipe: Recipe, progress: bool) -> Any:
    from models.factory import build_learner

    spec = {
        "input_dim": int(X.shape[1]),
        "classes": list(classes),
        "hidden": list(recipe.hidden),
        "rule": "biofo",
        "optimizer": {"name": "adam", "lr": recipe.lr},
        "seed": recipe.seed,
        "input_mean": X.mean(axis=0).astype(np.float32).tolist(),
        "input_std": (X.std(axis=0) + 1e-6).astype(np.float32).tolist(),
    }
    learner = build_learner(spec)
    rng = np.random.default_rng(recipe.seed)
    for index in tqdm(balanced_batches(y, recipe.batch, recipe.epochs, rng), desc=recipe.name, disable=not progress):
        learner.learn(X[index], y[index])
    learner.optimizer.lr = recipe.streaming_lr
    return learner


def scores(learner: Any, X: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    figures = class_scores(y, np.argmax(learner.predict(X), axis=1), classes)
    return {key: figures[key] for key in ("n", "accuracy", "macro_f1", "per_class")}


def train_ecg(progress: bool) -> tuple[Any, dict[str, Any]]:
    from signals.aami import AAMI_CLASSES
    from signals.ecg_features import beat_table
    from signals.mitbih import DS1, DS2

    def table(records: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [beat_table(record) for record in tqdm(records, desc="beats", disable=not progress)]
        return np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts])

    X_train, y_train = table(DS1)
    learner = fit(X_train, y_train, AAMI_CLASSES, ECG_RECIPE, progress)
    X_test, y_test = table(DS2)
    card = _card(ECG_RECIPE, learner, {
        "data": "MIT-BIH Arrhythmia Database v1.0.0, reference beat annotations, both leads",
        "train": {"records": list(DS1), "split": "de Chazal 2004 DS1", "beats": int(len(y_train)),
                  "class_counts": _counts(y_train, AAMI_CLASSES)},
        "metrics": {"inter_patient_DS2": scores(learner, X_test, y_test, AAMI_CLASSES),
                    "note": "DS2 was never seen in training; these are inter-patient figures before any label"},
    })
    return learner, card


def train_eeg(progress: bool) -> tuple[Any, dict[str, Any]]:
    from signals.eeg_features import EEG_CLASSES, window_table

    table = window_table()
    learner = fit(table.X, table.y, EEG_CLASSES, EEG_RECIPE, progress)
    card = _card(EEG_RECIPE, learner, {
        "data": "CHB-MIT Scalp EEG v1.0.0, staged crops around 97 seizures of 17 patients "
                "(seizure crops = seizure, after-60 s crops = post-ictal background beyond the ictal part)",
        "train": {"patients": sorted({str(p) for p in table.patient}), "windows": int(len(table.y)),
                  "class_counts": _counts(table.y, EEG_CLASSES)},
        "metrics": {"training_fit": scores(learner, table.X, table.y, EEG_CLASSES),
                    "note": "fit on the training windows; held-out per-patient figures come from `biofo eval eeg`"},
        "limits": "no seizure-free recording was available: background means post-ictal EEG",
    })
    return learner, card


def _counts(y: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    return {name: int(np.sum(y == index)) for index, name in enumerate(classes)}


def _card(recipe: Recipe, learner: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": recipe.name,
        "rule": "biofo",
        "mode": "simultaneous",
        "hidden": list(recipe.hidden),
        "optimizer": {"name": "adam", "lr": recipe.lr, "streaming_lr": recipe.streaming_lr},
        "epochs": recipe.epochs,
        "batch": recipe.batch,
        "seed": recipe.seed,
        "classes": list(learner.classes),
        "trained_at": time.strftime("%Y-%m-%d"),
        "command": "biofo train-base",
        **fields,
    }


def train_base(modality: str = "all", out: str | None = None, progress: bool = False) -> None:
    from models import checkpoint

    folder = Path(out) if out else PRETRAINED
    folder.mkdir(parents=True, exist_ok=True)
    trainers = {"ecg": train_ecg, "eeg": train_eeg}
    for name in (("ecg", "eeg") if modality == "all" else (modality,)):
        learner, card = trainers[name](progress)
        learner.version = 0
        blob = checkpoint.dumps(learner)
        base_path(name, folder).write_bytes(blob)
        card["bytes"] = len(blob)
        card_path(name, folder).write_text(json.dumps(card, indent=2) + "\n")
        print(f"{name}: {base_path(name, folder)} ({len(blob) / 1e6:.2f} MB)")
