"""The update worker: one thread that applies accepted labels, in acceptance order, as updates.

Labels are durable before the worker sees them; it reads them back from the database by sequence
number, so a wake-up lost to a crash costs nothing: the next start replays what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.registry import AppliedUpdate, Registry
from app.store import LabelRow, Store, StoreUnavailable

log = logging.getLogger("biofo.worker")


class UpdateWorker:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        applied_seq: int,
        on_update: Callable[[AppliedUpdate, float], None] | None = None,
    ):
        self.store = store
        self.registry = registry
        self.applied_seq = applied_seq
        self.on_update = on_update
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="biofo-update-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the update in flight, then stop; labels not yet applied stay durable for the next start."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _next_labels(self) -> list[LabelRow]:
        return self.store.labels_from(self.applied_seq, limit=64)

    def _evict_idle(self) -> None:
        """With no label waiting, models unused for the idle time leave memory (checkpointed first)."""
        try:
            self.registry.evict_idle()
        except StoreUnavailable as error:
            log.error("cannot checkpoint an idle model before evicting it: %s", error)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    batch = self._next_labels()
                except StoreUnavailable as error:
                    log.error("cannot read labels: %s", error)
                    break
                if not batch:
                    self._evict_idle()
                    break
                for label in batch:
                    if self._stop.is_set():
                        return
                    try:
                        update = self.registry.apply(label)
                    except StoreUnavailable as error:
                        # The model learned; only the update row is missing. A restart replays the
                        # label from the last checkpoint and writes the row.
                        log.error("update row for label %s not written: %s", label.id, error)
                        update = None
                    self.applied_seq = label.id
                    if update is not None and self.on_update is not None:
                        self.on_update(update, max(0.0, time.time() - label.at))
