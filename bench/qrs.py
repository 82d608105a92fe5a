"""``biofo bench qrs``: the daemon's R-peak detection against the MIT-BIH reference beats.

Each record is replayed as 10 s device segments through ``EcgStream`` without R peaks, exactly
as the daemon receives it, and the emitted beats are matched to the reference beats (EC57:
150 ms, one-to-one; ventricular flutter episodes left out). ``sensitivity`` and ``ppv`` are gross
figures over whole records; ``ec57`` repeats them without each record's first 5 minutes.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from signals.ecg_features import EcgStream
from signals.mitbih import NON_PACED, PATIENT_WINDOW_S, read_record
from signals.qrs import BeatMatch, match_beats
from signals.replay import ecg_requests

SEGMENT_S = 10.0


def streamed_r_peaks(record_name: str, fs: float, segment_s: float = SEGMENT_S) -> np.ndarray:
    """R peaks (samples at the record's rate) the daemon finds when the record is replayed."""
    stream = EcgStream()
    beats = []
    for body in ecg_requests(record_name, segment_s=segment_s):
        beats += stream.push(np.asarray(body["samples"]), body["fs"], body["start"])
    beats += stream.flush()
    return np.rint(np.array([beat.offset_s for beat in beats]) * fs).astype(np.int64)


def _figures(match: BeatMatch) -> dict[str, object]:
    return {
        "beats": match.reference,
        "tp": match.tp,
        "fn": match.fn,
        "fp": match.fp,
        "sensitivity": match.sensitivity,
        "ppv": match.ppv,
    }


def run(records: list[str] | None = None, progress: bool = False) -> dict[str, object]:
    names = list(records) if records else list(NON_PACED)
    started = time.perf_counter()
    total = BeatMatch(0, 0, 0)
    total_ec57 = BeatMatch(0, 0, 0)
    per_record: dict[str, dict[str, object]] = {}
    for name in tqdm(names, desc="qrs", disable=not progress):
        record = read_record(name)
        detected = streamed_r_peaks(name, record.fs)
        match = match_beats(record.beat_samples, detected, record.fs, exclude=record.flutter)
        ec57 = match_beats(
            record.beat_samples,
            detected,
            record.fs,
            exclude=record.flutter,
            score_from=int(PATIENT_WINDOW_S * record.fs),
        )
        total += match
        total_ec57 += ec57
        per_record[name] = _figures(match)
    return {
        "records": names,
        **_figures(total),
        "ec57": _figures(total_ec57),
        "per_record": per_record,
        "segment_s": SEGMENT_S,
        "seconds": time.perf_counter() - started,
    }
