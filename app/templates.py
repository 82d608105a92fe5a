"""Per-patient beat templates (``signals.templates``), kept current as beats arrive.

Each ECG model has one online clusterer in memory. It learns beats in arrival order from the
samples and features stored with each window; before any answer it takes in the beats stored since
it last looked, so it stays incremental (a beat is assigned once and never moved) and needs no hook
in the ingest path, and only patients whose templates someone opens hold one in memory. After a
restart the first request rebuilds it from the stored windows, in the same order, to the same
templates. A beat whose samples retention has already dropped is left out: nobody can judge it by
eye, so it has left the labelling queue too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from app.store import Store, stored_samples
from signals.templates import TemplateClusterer, qrs_wave, rr_group

PAGE = 2000  # windows read per query while catching up: a rebuild never holds a day of samples at once


@dataclass
class Book:
    clusterer: TemplateClusterer = field(default_factory=TemplateClusterer)
    seen_through: int = 0  # the newest window id taken in
    lock: threading.Lock = field(default_factory=threading.Lock)


class TemplateBooks:
    def __init__(self, store: Store):
        self.store = store
        self._books: dict[int, Book] = {}
        self._guard = threading.Lock()

    def current(self, model_id: int) -> Book:
        """The model's templates, with every beat stored so far assigned. Hold ``book.lock`` to read it."""
        with self._guard:
            book = self._books.setdefault(model_id, Book())
        with book.lock:
            while rows := self.store.beats_after(model_id, book.seen_through, PAGE):
                for row in rows:
                    samples = stored_samples(row)
                    if samples is not None:
                        features = np.frombuffer(row["features"], dtype=np.float32)
                        book.clusterer.add(row["id"], qrs_wave(samples, int(row["marker"])), rr_group(features))
                    book.seen_through = row["id"]
        return book
