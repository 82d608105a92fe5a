"""The one interface every energy backend implements, and the thread that polls a counter.

A meter reports cumulative joules since it started and names where they come from: ``source``
(the backend), ``rail`` (which supply or counter) and ``total`` (in words, what that figure covers
and what it leaves out). Figures from different sources are never comparable, so every stored
energy row carries all three.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class MeterUnavailable(RuntimeError):
    """This backend cannot measure on this machine; the message says why and what would fix it."""


@dataclass
class Measurement:
    """Energy of one ``with meter.measure()`` block; filled in when the block exits."""

    source: str
    rail: str
    total: str
    joules: float = 0.0
    duration_s: float = 0.0


class Meter(ABC):
    source: str
    rail: str
    total: str

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock

    @abstractmethod
    def joules(self) -> float:
        """Cumulative joules since this meter was created."""

    def rail_joules(self) -> dict[str, float]:
        """Cumulative joules per rail; backends with several rails override this."""
        return {self.rail: self.joules()}

    def _block_joules(self) -> float:
        """The reading ``measure()`` takes at both ends of a block (the cumulative counter, except
        where a backend attributes energy differently)."""
        return self.joules()

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        """Energy and wall time of the ``with`` block. Filled in even when the block raises: the
        energy was spent either way."""
        result = Measurement(self.source, self.rail, self.total)
        start_j = self._block_joules()
        start_t = self._clock()
        try:
            yield result
        finally:
            result.joules = self._block_joules() - start_j
            result.duration_s = self._clock() - start_t

    def close(self) -> None:
        """Stop background sampling and release the device; the meter is unusable afterwards."""

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Poller:
    """Calls ``tick`` every ``period_s`` seconds on a daemon thread until ``stop()``.

    A failed tick is logged and skipped: one bad read of a sensor must not end energy accounting
    for the daemon's lifetime, and the next good tick covers the gap.
    """

    def __init__(self, tick: Callable[[], None], period_s: float, name: str) -> None:
        self._tick = tick
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self._tick()
            except (OSError, MeterUnavailable) as error:
                log.warning("energy sampling failed (%s); will retry", error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
