"""Retention: what the database keeps, applied online in small transactions beside ingest.

The policy (defaults in ``app.settings.Settings``, overridden by ``BIOFO_RETAIN_*``):

- A window with a label (any label, even one retracted later) and the first and last window of every
  alarm are kept whole, forever: rehearsal, undo, restore and the prequential figures read labelled
  windows, and an alarm row names its ends.
- Any other window loses its samples after ``samples_hours`` (its features and prediction stay: beat
  templates, exports of predictions and alarm checks read those), and is deleted with its prediction
  after ``windows_hours``. It then leaves the labelling queue, the templates and the exports.
- Checkpoints: fork, rollback and undo checkpoints, and every checkpoint a retraction names, are kept
  forever; of the periodic and shutdown ones, the newest ``checkpoints`` per patient. A patient's model is
  its newest checkpoint plus the replay of the labels after it; labels and their windows are never
  pruned, so a restart still restores it exactly, and an undo still finds a base (at worst the fork).
- Labels, updates, retractions, alarms and energy rows are kept: they are small and they are the record.

A pass works in transactions of at most ``batch`` windows (or a few checkpoints) and rests between
them, so ingest's transactions interleave with it; the longest one is measured.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.settings import Settings
from app.store import Store, StoreUnavailable

log = logging.getLogger("biofo.retention")

CHECKPOINTS_PER_TRANSACTION = 4  # each is about 1 MB of blob to free
HOUR_S = 3600.0


@dataclass(frozen=True)
class RetentionPolicy:
    samples_hours: float  # 0: keep forever
    windows_hours: float  # 0: keep forever
    checkpoints: int
    batch: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            settings.retain_samples_hours,
            settings.retain_windows_hours,
            settings.retain_checkpoints,
            settings.retain_batch,
        )


@dataclass
class RetentionPass:
    samples_dropped: int = 0
    windows_deleted: int = 0
    checkpoints_deleted: int = 0
    transactions: int = 0
    longest_transaction_ms: float = 0.0

    def _timed(self, started: float) -> None:
        self.transactions += 1
        self.longest_transaction_ms = max(
            self.longest_transaction_ms, 1e3 * (time.perf_counter() - started)
        )


class Retention:
    def __init__(self, store: Store, policy: RetentionPolicy, rest_s: float = 0.005):
        self.store = store
        self.policy = policy
        self.rest_s = rest_s
        # Windows up to these ids were looked at and are kept for good (see ``Store.prune_unlabelled``).
        self._after = {"samples": 0, "windows": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.longest_transaction_ms = 0.0

    def run_once(self) -> RetentionPass:
        """One pass over everything that has become due since the last one."""
        done = RetentionPass()
        now = self.store.clock()
        for drop, hours in (
            ("samples", self.policy.samples_hours),
            ("windows", self.policy.windows_hours),
        ):
            if hours <= 0:
                continue
            while not self._stop.is_set():
                started = time.perf_counter()
                step = self.store.prune_unlabelled(
                    self._after[drop], now - hours * HOUR_S, self.policy.batch, drop
                )
                done._timed(started)
                self._after[drop] = step.last_id
                if drop == "samples":
                    done.samples_dropped += step.changed
                else:
                    done.windows_deleted += step.changed
                if step.caught_up:
                    break
                self._stop.wait(self.rest_s)
        while not self._stop.is_set():
            started = time.perf_counter()
            deleted = self.store.prune_checkpoints(
                self.policy.checkpoints, CHECKPOINTS_PER_TRANSACTION
            )
            done._timed(started)
            done.checkpoints_deleted += deleted
            if deleted < CHECKPOINTS_PER_TRANSACTION:
                break
            self._stop.wait(self.rest_s)
        self.longest_transaction_ms = max(self.longest_transaction_ms, done.longest_transaction_ms)
        return done

    def start(self, every_s: float) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(every_s,), name="biofo-retention", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except StoreUnavailable as error:
                log.error("retention pass failed (it resumes at the next one): %s", error)
            else:
                if done.samples_dropped or done.windows_deleted or done.checkpoints_deleted:
                    log.info(
                        "retention: samples of %d windows dropped, %d windows and %d checkpoints deleted;"
                        " longest transaction %.1f ms",
                        done.samples_dropped,
                        done.windows_deleted,
                        done.checkpoints_deleted,
                        done.longest_transaction_ms,
                    )
            self._stop.wait(every_s)
