"""MIT-BIH Arrhythmia Database: records, reference beats and the evaluation splits.

Records are read with ``wfdb`` from ``data_root()/mitdb``. Signals are in millivolts with the
MLII lead first (record 114 stores V5 first; putting MLII first everywhere keeps the two feature
leads comparable across records). Splits are plain data: a ``Split`` lists the ``Span`` (record,
start, end) pieces used for training and for testing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import wfdb

from signals.aami import aami_index
from signals.datafiles import require

ALL_RECORDS: tuple[str, ...] = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109",
    "111", "112", "113", "114", "115", "116", "117", "118", "119", "121",
    "122", "123", "124", "200", "201", "202", "203", "205", "207", "208",
    "209", "210", "212", "213", "214", "215", "217", "219", "220", "221",
    "222", "223", "228", "230", "231", "232", "233", "234",
)  # fmt: skip

PACED: frozenset[str] = frozenset({"102", "104", "107", "217"})

# de Chazal, O'Dwyer & Reilly, IEEE TBME 51(7), 2004.
DS1: tuple[str, ...] = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)  # fmt: skip
DS2: tuple[str, ...] = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
    "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)  # fmt: skip

NON_PACED: tuple[str, ...] = tuple(name for name in ALL_RECORDS if name not in PACED)

# The patient's own labelled period in the patient-specific and hybrid protocols (first 5 min).
PATIENT_WINDOW_S = 300.0

PRIMARY_LEAD = "MLII"


@dataclass(frozen=True, eq=False)
class Annotations:
    """Reference beats of a record (non-beat annotations dropped) and its flutter episodes."""

    beat_samples: np.ndarray
    beat_symbols: tuple[str, ...]
    beat_classes: np.ndarray  # index into AAMI_CLASSES
    flutter: tuple[tuple[int, int], ...]  # [onset, end] sample pairs of ventricular flutter


@dataclass(frozen=True, eq=False)
class Record(Annotations):
    """One record: signal (leads, samples) in mV and its reference annotations."""

    name: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    @property
    def beat_times_s(self) -> np.ndarray:
        return self.beat_samples / self.fs


def record_path(name: str) -> str:
    """The wfdb record path (without extension) of a record, after checking its files exist."""
    for ext in ("hea", "dat", "atr"):
        require(f"mitdb/{name}.{ext}")
    return str(require("mitdb") / name)


def read_annotations(name: str) -> Annotations:
    """The reference annotations alone (no signal), from the record's ``.atr`` file."""
    ann = wfdb.rdann(record_path(name), "atr")
    samples, symbols, classes = [], [], []
    flutter: list[tuple[int, int]] = []
    onset: int | None = None
    for sample, symbol in zip(ann.sample, ann.symbol):
        index = aami_index(symbol)
        if index is not None:
            samples.append(int(sample))
            symbols.append(symbol)
            classes.append(index)
        elif symbol == "[":
            onset = int(sample)
        elif symbol == "]" and onset is not None:
            flutter.append((onset, int(sample)))
            onset = None
    return Annotations(
        beat_samples=np.asarray(samples, dtype=np.int64),
        beat_symbols=tuple(symbols),
        beat_classes=np.asarray(classes, dtype=np.int64),
        flutter=tuple(flutter),
    )


def read_record(name: str) -> Record:
    raw = wfdb.rdrecord(record_path(name))
    leads = list(raw.sig_name)
    order = sorted(range(len(leads)), key=lambda i: leads[i] != PRIMARY_LEAD)
    annotations = read_annotations(name)
    return Record(
        beat_samples=annotations.beat_samples,
        beat_symbols=annotations.beat_symbols,
        beat_classes=annotations.beat_classes,
        flutter=annotations.flutter,
        name=name,
        fs=float(raw.fs),
        leads=tuple(leads[i] for i in order),
        signal=np.ascontiguousarray(raw.p_signal[:, order].T, dtype=np.float64),
    )


@dataclass(frozen=True)
class Span:
    """The part [start_s, end_s) of a record; ``end_s=None`` runs to the end of the record."""

    record: str
    start_s: float = 0.0
    end_s: float | None = None

    def contains(self, time_s: np.ndarray) -> np.ndarray:
        """Which of the given times (s) fall in the span; the start is in, the end is out."""
        time_s = np.asarray(time_s, dtype=np.float64)
        inside = time_s >= self.start_s
        if self.end_s is not None:
            inside &= time_s < self.end_s
        return inside


@dataclass(frozen=True)
class Split:
    name: str
    train: tuple[Span, ...]
    test: tuple[Span, ...]

    @property
    def records(self) -> tuple[str, ...]:
        seen = dict.fromkeys(span.record for span in self.train + self.test)
        return tuple(seen)


def inter_patient_split() -> Split:
    """de Chazal: train on every beat of DS1, test on every beat of DS2."""
    return Split(
        name="inter-patient",
        train=tuple(Span(name) for name in DS1),
        test=tuple(Span(name) for name in DS2),
    )


def patient_specific_split(record: str) -> Split:
    """Train on the record's first 5 min, test on the rest (a beat at exactly 300 s is test)."""
    return Split(
        name="patient-specific",
        train=(Span(record, 0.0, PATIENT_WINDOW_S),),
        test=(Span(record, PATIENT_WINDOW_S, None),),
    )


def hybrid_split(test_records: tuple[str, ...] = DS2) -> Split:
    """DS1 as the common base, then each test record's first 5 min; test on the rest of them."""
    return Split(
        name="hybrid",
        train=tuple(Span(name) for name in DS1)
        + tuple(Span(name, 0.0, PATIENT_WINDOW_S) for name in test_records),
        test=tuple(Span(name, PATIENT_WINDOW_S, None) for name in test_records),
    )
