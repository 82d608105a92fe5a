"""``biofo bench qrs``: the daemon's R-peak detection against the MIT-BIH reference beats.

Each record is replayed as 10 s device segments through ``EcgStream`` without R peaks, exactly
as the daemon receives it, and the emitted beats are matched to the reference beats (EC57:
150 ms, one-to-one; ventricular flutter episodes left out). ``sensitivity`` and ``ppv`` are gross
figures over whole records; ``ec57`` repeats them without each record's first 5 minutes.

Each record is replayed a second time, right after, with the detector the daemon used before
(wfdb's pure-Python ``gqrs`` on lead 0 with its corrections), kept here only as the reference:
``baseline`` holds its figures and ``baseline_ms_per_segment`` its detection CPU time per segment,
measured in the same process and the same way (thread CPU time around each detector call) as
``ms_per_segment``.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm
from wfdb.processing import gqrs_detect

from signals.ecg_features import EcgStream
from signals.filters import butter_sos, zero_phase_filter
from signals.mitbih import NON_PACED, PATIENT_WINDOW_S, Record, read_record
from signals.qrs import QRS_BAND_HZ, BeatMatch, Detector, corrected_peaks, detect_r_peaks, match_beats
from signals.replay import ecg_requests

SEGMENT_S = 10.0


def gqrs_lead0(leads: np.ndarray, fs: float) -> np.ndarray:
    """The previous detector: ``gqrs`` on lead 0, then the same snap and T-wave corrections."""
    x = np.atleast_2d(np.asarray(leads, dtype=np.float64))[0]
    if x.size < int(fs):
        return np.zeros(0, dtype=np.int64)
    raw = np.asarray(gqrs_detect(sig=x, fs=fs), dtype=np.int64)
    band = np.abs(zero_phase_filter(x, butter_sos(fs, *QRS_BAND_HZ)))
    return corrected_peaks(band, raw, fs)[0]


class TimedDetector:
    """A detector that adds up the thread CPU time of its calls."""

    def __init__(self, detect: Detector) -> None:
        self.detect = detect
        self.cpu_s = 0.0

    def __call__(self, leads: np.ndarray, fs: float) -> np.ndarray:
        started = time.thread_time()
        try:
            return self.detect(leads, fs)
        finally:
            self.cpu_s += time.thread_time() - started


def streamed_r_peaks(
    record_name: str, fs: float, segment_s: float = SEGMENT_S, detect: Detector = detect_r_peaks
) -> tuple[np.ndarray, int]:
    """R peaks (samples at the record's rate) found when the record is replayed, and the number of
    segments sent."""
    stream = EcgStream(detect=detect)
    beats = []
    segments = 0
    for body in ecg_requests(record_name, segment_s=segment_s):
        beats += stream.push(np.asarray(body["samples"]), body["fs"], body["start"])
        segments += 1
    beats += stream.flush()
    return np.rint(np.array([beat.offset_s for beat in beats]) * fs).astype(np.int64), segments


def _figures(match: BeatMatch) -> dict[str, object]:
    return {
        "beats": match.reference,
        "tp": match.tp,
        "fn": match.fn,
        "fp": match.fp,
        "sensitivity": match.sensitivity,
        "ppv": match.ppv,
    }


class _Tally:
    """One detector's figures over the records it has been run on."""

    def __init__(self, detect: Detector) -> None:
        self.timed = TimedDetector(detect)
        self.total = BeatMatch(0, 0, 0)
        self.total_ec57 = BeatMatch(0, 0, 0)
        self.per_record: dict[str, dict[str, object]] = {}
        self.segments = 0

    def add(self, record: Record) -> None:
        detected, sent = streamed_r_peaks(record.name, record.fs, detect=self.timed)
        self.segments += sent
        match = match_beats(record.beat_samples, detected, record.fs, exclude=record.flutter)
        self.total += match
        self.total_ec57 += match_beats(
            record.beat_samples,
            detected,
            record.fs,
            exclude=record.flutter,
            score_from=int(PATIENT_WINDOW_S * record.fs),
        )
        self.per_record[record.name] = _figures(match)

    def figures(self) -> dict[str, object]:
        return {
            **_figures(self.total),
            "ec57": _figures(self.total_ec57),
            "per_record": self.per_record,
            "segments": self.segments,
            "ms_per_segment": 1000.0 * self.timed.cpu_s / max(self.segments, 1),
        }


def run(records: list[str] | None = None, progress: bool = False) -> dict[str, object]:
    names = list(records) if records else list(NON_PACED)
    started = time.perf_counter()
    tallies = _Tally(detect_r_peaks), _Tally(gqrs_lead0)
    # Record by record, both detectors in turn, so that a machine slowing down during the run
    # weighs on both alike.
    for name in tqdm(names, desc="qrs", disable=not progress):
        record = read_record(name)
        for tally in tallies:
            tally.add(record)
    fused, baseline = (tally.figures() for tally in tallies)
    return {
        "records": names,
        **fused,
        "baseline_ms_per_segment": baseline["ms_per_segment"],
        "speedup": baseline["ms_per_segment"] / fused["ms_per_segment"],
        "baseline": {key: value for key, value in baseline.items() if key != "per_record"},
        "detector": "sleepecg C detector per lead (signals.qrs.heartbeats), fused",
        "baseline_detector": "wfdb.processing.gqrs_detect on lead 0 with corrections",
        "segment_s": SEGMENT_S,
        "seconds": time.perf_counter() - started,
    }
