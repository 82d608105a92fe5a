"""The store's writer lock: reentrant, and an urgent writer goes before the ordinary ones waiting."""

from __future__ import annotations

import threading
import time

from app.writer_lock import WriterLock


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_an_urgent_writer_goes_before_ordinary_writers_that_came_first() -> None:
    lock = WriterLock()
    order: list[str] = []
    started: list[str] = []

    def writer(name: str, urgent: bool) -> None:
        started.append(name)
        lock.acquire(urgent=urgent)
        order.append(name)
        lock.release()

    lock.acquire()
    threads = []
    for name, urgent in (("ordinary-1", False), ("ordinary-2", False), ("urgent", True)):
        thread = threading.Thread(target=writer, args=(name, urgent))
        thread.start()
        threads.append(thread)
        _wait_until(lambda name=name: name in started)
        time.sleep(0.02)  # it is now waiting for the lock
    assert order == []
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order[0] == "urgent"
    assert sorted(order[1:]) == ["ordinary-1", "ordinary-2"]


def test_reentrant_and_released_only_by_its_holder() -> None:
    lock = WriterLock()
    with lock, lock.first(), lock:
        errors: list[BaseException] = []

        def stranger() -> None:
            try:
                lock.release()
            except RuntimeError as error:
                errors.append(error)

        thread = threading.Thread(target=stranger)
        thread.start()
        thread.join(5)
        assert len(errors) == 1
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (lock.acquire(), taken.set(), lock.release()))
    thread.start()
    assert taken.wait(5), "the lock stayed held after as many releases as acquisitions"
    thread.join(5)


def test_many_writers_all_get_the_lock_and_never_hold_it_together() -> None:
    lock = WriterLock()
    inside = 0
    most = 0
    done = 0
    guard = threading.Lock()

    def writer(urgent: bool) -> None:
        nonlocal inside, most, done
        for _ in range(200):
            lock.acquire(urgent=urgent)
            with guard:
                inside += 1
                most = max(most, inside)
            with guard:
                inside -= 1
            lock.release()
        with guard:
            done += 1

    threads = [threading.Thread(target=writer, args=(k % 4 == 0,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert done == 12
    assert most == 1
