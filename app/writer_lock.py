"""The lock around the store's one writing connection: reentrant, with a way to the front.

Every write (a device's segment, a clinician's label, an update row, a checkpoint, a retention
pass) goes through one SQLite connection, so writers queue for it. Most of them are requests that
a client waits for anyway, but the update worker is a single thread that applies every label in
order: each place it loses in the queue delays every label behind it, and with a few hundred
streams posting, an unordered lock let it fall seconds behind. ``acquire(urgent=True)`` makes a
writer go before every ordinary writer still waiting (not before the one holding the lock);
ordinary writers take the lock as ``threading.RLock`` hands it out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self


class WriterLock:
    def __init__(self) -> None:
        guard = threading.Lock()
        self._ordinary = threading.Condition(guard)
        self._urgent = threading.Condition(guard)
        self._owner: int | None = None
        self._depth = 0
        self._urgent_waiting = 0

    def acquire(self, urgent: bool = False) -> None:
        me = threading.get_ident()
        with self._ordinary:
            if self._owner == me:
                self._depth += 1
                return
            self._urgent_waiting += urgent
            try:
                while self._owner is not None or (not urgent and self._urgent_waiting):
                    (self._urgent if urgent else self._ordinary).wait()
            except BaseException:
                # Interrupted while waiting: the wake-up it may have taken goes to the next writer.
                self._urgent_waiting -= urgent
                if self._owner is None:
                    self._wake_next()
                raise
            self._urgent_waiting -= urgent
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._ordinary:
            if self._owner != threading.get_ident():
                raise RuntimeError("the writer lock is released by a thread that does not hold it")
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._wake_next()

    def _wake_next(self) -> None:
        # One waiter at a time, an urgent one first; a woken writer that finds the lock taken waits
        # again, and the holder's release wakes the next.
        (self._urgent if self._urgent_waiting else self._ordinary).notify()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def first(self) -> Iterator[None]:
        """Held, having gone before every ordinary writer waiting."""
        self.acquire(urgent=True)
        try:
            yield
        finally:
            self.release()
