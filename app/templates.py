"""Per-patient beat templates (``signals.templates``), kept current as beats arrive.

Each ECG model has one online clusterer in memory. It learns beats in arrival order from the
features stored with each window; before any answer it takes in the beats stored since it last
looked, so it stays incremental (a beat is assigned once and never moved) and needs no hook in the
ingest path, and only patients whose templates someone opens hold one in memory. After a restart
the first request rebuilds it from the stored features, in the same order, to the same templates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from app.store import Store
from signals.templates import TemplateClusterer


@dataclass
class Book:
    clusterer: TemplateClusterer = field(default_factory=TemplateClusterer)
    seen_through: int = 0  # the newest window id assigned
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
            for window_id, features in self.store.features_after(model_id, book.seen_through):
                book.clusterer.add(window_id, features)
                book.seen_through = window_id
        return book
