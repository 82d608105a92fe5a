"""Periodic checkpoints written on their own thread, so an update never waits for one.

A checkpoint is a snapshot (version, ``applied_seq``, blob) taken by the update worker at the exact
update that makes it due; only the write (about 1 MB and an fsync) happens here. After each write
the writer rests as long as the write took, unless someone is waiting in ``flush``: many patients
due at once must not hold the database's one write lock for seconds while labels and windows
queue behind it. A snapshot lost to a crash before it is written costs nothing but a longer replay:
the invariant "newest checkpoint + replay of the labels after it" holds for every row that was
written. Anything that reads checkpoints or writes one of its own calls ``flush`` first, so rows
keep the order their snapshots were taken in.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from app.store import NewCheckpoint, Store, StoreUnavailable

log = logging.getLogger("biofo.checkpoints")


class CheckpointWriter:
    def __init__(self, store: Store):
        self.store = store
        self._queue: queue.Queue[tuple[int, NewCheckpoint] | None] = queue.Queue()
        self._submitted = 0
        self._done = 0
        self._flushing = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="biofo-checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, model_id: int, snapshot: NewCheckpoint) -> None:
        with self._progress:
            self._submitted += 1
        self._queue.put((model_id, snapshot))

    def flush(self) -> None:
        """Return once every snapshot submitted before this call is written (or refused by the store)."""
        with self._progress:
            target = self._submitted
            self._flushing += 1
            self._progress.notify_all()
            self._progress.wait_for(lambda: self._done >= target)
            self._flushing -= 1

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            model_id, snapshot = item
            started = time.monotonic()
            try:
                self.store.insert_checkpoint(model_id, snapshot)
            except StoreUnavailable as error:
                log.error("checkpoint of model %s at version %s not written (the labels since the"
                          " previous one will be replayed): %s", model_id, snapshot.version, error)
            except Exception:  # the writer must outlive one bad row; the labels stay replayable
                log.exception("checkpoint of model %s at version %s not written", model_id, snapshot.version)
            with self._progress:
                self._done += 1
                self._progress.notify_all()
                self._progress.wait_for(lambda: self._flushing > 0, timeout=time.monotonic() - started)
