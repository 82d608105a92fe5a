"""Scores, Markdown tables and plots shared by the benchmarks.

Scores work on class indices. ``class_scores`` gives accuracy, macro-F1 (over the classes present
in the reference), per-class sensitivity and positive predictivity and the confusion matrix
(rows = reference, columns = prediction). For ECG, the gross VEB and SVEB figures of EC57 are the
one-vs-rest counts of the V and S classes summed over every scored beat of every record.
Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out: Path, stem: str, markdown: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(markdown.rstrip() + "\n")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str, path: Path) -> None:
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2.5, 1.0 * len(classes) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{matrix[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=8, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str, ylabel: str, title: str, path: Path, xlog: bool = False,
    hline: tuple[float, str] | None = None,
) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if xlog:
        ax.set_xscale("symlog", linthresh=10)
        ticks = sorted({float(v) for x, _ in series.values() for v in x})
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    elif all(float(v).is_integer() for x, _ in series.values() for v in x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def plot_scatter(
    points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, title: str, path: Path,
) -> None:
    """One labelled point per entry; log x when the values span more than a factor of 10."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for index, (name, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], s=30)
        # Alternate the label above and below its point so that neighbours do not overlap.
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4 if index % 2 else -11),
                    fontsize=8)
    xs = [x for x, _ in points.values()]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
