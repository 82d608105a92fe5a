"""Feature extraction in worker processes gives what the request thread would, and survives a worker's death."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.extraction import Extractor
from app.modalities import Extracted, Segment, extract
from signals.datafiles import require
from signals.replay import ecg_requests, eeg_requests
from tests.conftest import start_daemon


def segments(bodies: Iterator[dict]) -> list[Segment]:
    return [
        Segment(b["modality"], np.asarray(b["samples"], dtype=np.float64), b["fs"], b["start"], tuple(b["channels"]))
        for b in bodies
    ]


def run(extractor: Extractor, stream: list[Segment]) -> list[Extracted]:
    state, out = None, []
    for segment in stream:
        extracted = extractor(state, segment)
        state = extracted.state
        out.append(extracted)
    return out


def assert_same(a: list[Extracted], b: list[Extracted]) -> None:
    assert [e.state for e in a] == [e.state for e in b]
    for x, y in zip(a, b):
        assert [w.offset_s for w in x.windows] == [w.offset_s for w in y.windows]
        for wx, wy in zip(x.windows, y.windows):
            assert np.array_equal(wx.features, wy.features) and np.array_equal(wx.plot, wy.plot)


@pytest.fixture(scope="module")
def pool() -> Iterator[Extractor]:
    extractor = Extractor(workers=2)
    yield extractor
    extractor.close()


def test_workers_extract_exactly_what_the_request_thread_would(pool: Extractor) -> None:
    ecg = segments(ecg_requests("208", patient_id="x", minutes=1.0))
    in_thread = run(Extractor(workers=0), ecg)
    assert sum(len(e.windows) for e in in_thread) > 80  # record 208's first minute, about 100 beats
    assert_same(run(pool, ecg), in_thread)
    eeg = segments(eeg_requests(require("chbmit/crops/seizure/chb01_03_ti-seizure.edf"), patient_id="x", minutes=0.5))
    eeg_in_thread = run(Extractor(workers=0), eeg)
    assert sum(len(e.windows) for e in eeg_in_thread) >= 10
    assert_same(run(pool, eeg), eeg_in_thread)


def test_a_segment_the_extractor_cannot_use_is_a_value_error_from_the_worker(pool: Extractor) -> None:
    first = segments(ecg_requests("100", patient_id="x", minutes=0.5))
    state = pool(None, first[0]).state
    with pytest.raises(ValueError, match="before the previous one ended"):
        pool(state, first[0])


def test_a_killed_worker_is_replaced_and_the_segment_extracted(pool: Extractor) -> None:
    segment = segments(ecg_requests("100", patient_id="x", minutes=0.2))[0]
    expected = extract(None, segment)
    pool(None, segment)
    workers = multiprocessing.active_children()
    assert workers
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].join(10)
    assert [w.offset_s for w in pool(None, segment).windows] == [w.offset_s for w in expected.windows]


def children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(child) for child in found}


def test_workers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log", {"BIOFO_WORKERS": "2"})
    with daemon.client() as client:
        assert client.post("/v1/windows", json=next(ecg_requests("100", patient_id="w"))).status_code == 201
    workers = children(daemon.process.pid)
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
