"""Classification scores: confusion matrix, accuracy, macro-F1, per-class Se and +P.

Scores work on class indices; rows of the confusion matrix are the reference, columns the
prediction. Per class, sensitivity is TP / reference count and positive predictivity TP / predicted
count (None where the count is 0, never a flattering 0 or 1). Macro-F1 averages over the classes
present in the reference. For ECG, the gross VEB and SVEB figures of AAMI EC57 are these one-vs-rest
counts for V and S summed over every scored beat of every record.

>>> scores = class_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ("N", "V"))
>>> scores["per_class"]["V"]["se"], round(scores["per_class"]["V"]["ppv"], 3)
(1.0, 0.667)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def scores_from_confusion(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    total = int(matrix.sum())
    tp = np.diag(matrix)
    reference, flagged = matrix.sum(axis=1), matrix.sum(axis=0)
    per_class = {
        name: {
            "n": int(reference[i]),
            "se": _ratio(tp[i], reference[i]),
            "ppv": _ratio(tp[i], flagged[i]),
        }
        for i, name in enumerate(classes)
    }
    present = reference > 0
    f1 = 2 * tp[present] / (reference[present] + flagged[present])
    return {
        "n": total,
        "accuracy": _ratio(tp.sum(), total),
        "macro_f1": float(f1.mean()) if present.any() else None,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def class_scores(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    return scores_from_confusion(confusion(y_true, y_pred, len(classes)), classes)
