"""Subnormal Adam moments: flushed during each update, so updates do not slow down with age, and
only during it, so the rest of the thread keeps IEEE arithmetic."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import numpy as np
import pytest

import app.engine
from app.base_models import base_path
from app.engine import load_learner
from models.archive import unpack
from models.denormals import flush_subnormals, subnormals_flushed
from signals.ecg_features import beat_table

UPDATES = 1200  # past the ~800 updates after which a silent unit's first moment is subnormal


def _subnormal_moments(flush: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """Subnormal values in the onnxruntime engine's state after UPDATES real beats of record 208,
    learned one at a time on a fresh thread (as the daemon's update worker does)."""
    if not flush:
        monkeypatch.setattr(app.engine, "subnormals_flushed", lambda: contextlib.nullcontext(False))
    table = beat_table("208")
    engine = load_learner(base_path("ecg").read_bytes(), "onnxruntime")

    def learn() -> None:
        flush_subnormals(False)  # not what the thread that started this one may have set
        for k in range(UPDATES):
            engine.learn(table.X[k : k + 1], table.y[k : k + 1])

    worker = threading.Thread(target=learn)
    worker.start()
    worker.join()
    tiny = np.finfo(np.float32).tiny
    return sum(
        int(np.count_nonzero((array != 0) & (np.abs(array) < tiny)))
        for array in unpack(engine.dumps()).arrays.values()
        if array.dtype == np.float32
    )


def test_updates_leave_no_subnormal_moments(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _subnormal_moments(flush=True, monkeypatch=monkeypatch) == 0


def test_without_the_flush_the_moments_do_turn_subnormal(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the flush is for: the same updates without it leave thousands of subnormals."""
    assert _subnormal_moments(flush=False, monkeypatch=monkeypatch) > 1000


SUBNORMAL = np.full(1, 1e-39, dtype=np.float32)


def _product() -> float:
    return float((SUBNORMAL * np.float32(0.9))[0])


def _on_new_thread(call: Callable[[], float]) -> float:
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join()
    return result[0]


def test_flushing_belongs_to_a_thread_and_is_inherited_by_the_threads_it_starts() -> None:
    def parent() -> float:
        assert flush_subnormals(True)
        inherited = _on_new_thread(_product)
        turned_off = _on_new_thread(lambda: (flush_subnormals(False), _product())[1])
        assert inherited == 0.0
        assert turned_off > 0.0
        return _product()  # still flushed here: the child's change stayed on the child

    assert _on_new_thread(parent) == 0.0


def test_the_flush_lasts_only_as_long_as_the_update() -> None:
    """A request thread that ran an update (a replay, a fork) then checks the next request's fields:
    there a subnormal sampling rate must still be a number above zero, not a division by zero."""
    table = beat_table("100")
    engine = load_learner(base_path("ecg").read_bytes(), "onnxruntime")

    def update_then_arithmetic() -> float:
        flush_subnormals(False)
        with subnormals_flushed() as flushing:
            assert flushing and _product() == 0.0
        engine.learn(table.X[:1], table.y[:1])
        tiny = float.fromhex("0x0.0000000000001p-1022")
        assert tiny > 0.0
        return _product()

    assert _on_new_thread(update_then_arithmetic) > 0.0
