"""Feature extraction of one segment, in worker processes.

Feature extraction (resampling, R-peak detection on both leads, beat windows; EEG band powers) runs
numpy and Python code that holds the GIL for part of its time: run in the daemon's request threads it
would put every device on one core. A stream's extractor state is plain JSON, so extracting a segment
is a pure function of (state, segment) and runs in a pool of processes, one per core by default; the
request thread waits for it without holding the GIL. ``workers=0`` extracts in the calling thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from app.modalities import Extracted, Segment, extract

log = logging.getLogger(__name__)


def _exit_with(parent: int) -> None:
    """Worker start: exit once the daemon is gone. A daemon killed with SIGKILL cannot stop its
    workers, and nothing else would: they wait on a queue that no one writes to any more."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _ready() -> None:
    """Nothing: sent once per worker at start, so that the first segment does not wait for a worker
    to start and import numpy, scipy and wfdb."""


class Extractor:
    def __init__(self, workers: int | None = None):
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor | None:
        if self.workers == 0:
            return None
        # spawn, not fork: the daemon has threads (and torch's) whose locks a fork could copy held.
        pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with,
            initargs=(os.getpid(),),
        )
        for _ in range(self.workers):
            pool.submit(_ready)
        return pool

    def __call__(self, state: dict[str, Any] | None, segment: Segment) -> Extracted:
        pool = self._pool
        if pool is None:
            return extract(state, segment)
        try:
            return pool.submit(extract, state, segment).result()
        except BrokenProcessPool:
            # A worker died (the kernel's OOM killer, a signal): nothing of this segment was stored,
            # so start new workers and extract it again rather than refuse every segment from now on.
            log.warning("a feature-extraction worker died; starting new ones")
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
                    pool.shutdown(wait=False, cancel_futures=True)
            return self._pool.submit(extract, state, segment).result()  # type: ignore[union-attr]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
