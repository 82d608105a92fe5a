"""WAL checkpoints on their own thread and connection, so that no commit waits for one.

By default SQLite checkpoints inside the commit that grows the write-ahead log past 1000 pages: that
commit copies about 4 MB into the database file and fsyncs it while holding the one write lock, and
every window, label and update queues behind it. Measured with ``biofo bench daemon --streams 200
--eeg-streams 10 --duration 90 --body float32`` on this 2-core box: with the commit doing it, requests
waited 216 s in all for the write lock and the daemon fell behind (POST p50 6.3 s, 464 segments never
sent); with this thread, 14 s and it kept up (POST p50 67 ms, every segment sent).

A passive checkpoint runs beside the writer and readers: it copies what no reader still needs and
never blocks a commit. Durability does not change: a commit is on disk once its WAL frames are
fsynced (``synchronous=FULL``); a checkpoint only moves committed pages into the main file, and a
crash before it leaves them in the WAL, where the next open finds them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, replace

from app.store import Store

log = logging.getLogger("biofo.wal")

# A pass costs about 12 ms at 200 streams (measured as above) and frees the WAL for reuse; one a
# second keeps the log to a few MB at that rate.
EVERY_S = 1.0


@dataclass
class WalProgress:
    passes: int = 0
    frames_in_log: int = 0  # in the WAL after the last pass
    frames_checkpointed: int = 0  # of those, already in the database file
    failures: int = 0


class WalCheckpointer:
    def __init__(self, store: Store, every_s: float = EVERY_S):
        self.store = store
        self.every_s = every_s
        self.progress = WalProgress()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="biofo-wal-checkpoints", daemon=True)

    def start(self) -> None:
        # Opened here, not in the thread: a database that cannot be opened fails the start-up.
        self._conn = sqlite3.connect(str(self.store.path), check_same_thread=False, isolation_level=None,
                                     timeout=30.0)
        self._conn.execute("PRAGMA synchronous=FULL")
        self.store.set_wal_autocheckpoint(0)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, then give checkpoints back to the writer's commits (any later write stays bounded)."""
        self._stop.set()
        self._thread.join(timeout)
        self.store.set_wal_autocheckpoint(Store.WAL_AUTOCHECKPOINT_PAGES)
        self._conn.close()

    def run_once(self) -> WalProgress:
        """One passive checkpoint; the progress after it (a copy)."""
        try:
            _busy, log_frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as error:  # the next pass tries again; commits never depend on this one
            self.progress.failures += 1
            log.error("WAL checkpoint failed: %s", error)
            return replace(self.progress)
        self.progress.passes += 1
        self.progress.frames_in_log, self.progress.frames_checkpointed = log_frames, done
        return replace(self.progress)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()
