"""Prequential accuracy of one patient's model, kept up to date as labels arrive.

Each labelled window counts once, as the pair (the label in force, the prediction the model made
when the window arrived, before any label). A relabel replaces the window's pair; an undo removes it
or brings back the label it had before. Counts change by one pair at a time (river's ``metrics``
style), so reading the figure never re-reads the database.

>>> tally = PrequentialTally(("N", "V"))
>>> tally.update(1, "V", "N"); tally.update(2, "N", "N"); tally.accuracy
0.5
>>> tally.update(1, "N", "N"); tally.accuracy   # window 1 relabelled: its pair is replaced
1.0
>>> tally.revert(2); tally.n
1
"""

from __future__ import annotations

import threading
from typing import Any


class PrequentialTally:
    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        self._pairs: dict[int, tuple[str, str]] = {}  # window id -> (label, predicted)
        self._per_class = {c: {"n": 0, "correct": 0, "predicted": 0} for c in classes}
        self._correct = 0
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return len(self._pairs)

    @property
    def accuracy(self) -> float | None:
        return self._correct / len(self._pairs) if self._pairs else None

    def update(self, window_id: int, label: str, predicted: str) -> None:
        """The window's label in force is now ``label``."""
        with self._lock:
            self._remove(window_id)
            self._pairs[window_id] = (label, predicted)
            self._count(label, predicted, +1)

    def revert(self, window_id: int) -> None:
        """The window has no label in force any more."""
        with self._lock:
            self._remove(window_id)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"accuracy": self.accuracy, "n": self.n,
                    "per_class": {c: dict(counts) for c, counts in self._per_class.items()}}

    def _remove(self, window_id: int) -> None:
        old = self._pairs.pop(window_id, None)
        if old is not None:
            self._count(*old, -1)

    def _count(self, label: str, predicted: str, sign: int) -> None:
        self._per_class[label]["n"] += sign
        self._per_class[predicted]["predicted"] += sign
        if label == predicted:
            self._per_class[label]["correct"] += sign
            self._correct += sign
