"""``biofo bench body``: what reading one segment's request body costs, JSON against binary.

The first 10 s segment of MIT-BIH record 100 (360 Hz, 2 leads) and of a CHB-MIT crop (256 Hz,
23 channels), each encoded as ``biofo replay`` sends it (``app.client``): JSON, binary float32
and, for ECG, binary int16 at the record's own ADC gain and baseline (its WFDB header). Each is
read by the daemon's own parser (``app.segment_body``: bytes to validated metadata and float64
samples), the median CPU time of the calling thread over ``REPEATS`` reads after a warm-up,
all in one run; ``speedup`` is JSON's median over each binary encoding's.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import wfdb

from app.client import encode_segment
from app.schemas import SEGMENT_HEADER
from app.segment_body import parse_binary, parse_json
from bench import report
from signals.datafiles import require
from signals.mitbih import record_path
from signals.replay import ecg_requests, eeg_requests

RECORD = "100"
EEG_FILE = "chbmit/crops/seizure/chb01_03_ti-seizure.edf"
SEGMENT_S = 10.0
REPEATS = 200
WARMUP = 10


def _median_ms(read: Callable[[], object], repeats: int) -> float:
    for _ in range(WARMUP):
        read()
    times = []
    for _ in range(repeats):
        began = time.thread_time()
        read()
        times.append(time.thread_time() - began)
    return 1e3 * statistics.median(times)


def _encodings(modality: str) -> tuple[dict[str, Any], dict[str, tuple[bytes, dict[str, str]]]]:
    if modality == "ecg":
        body = next(ecg_requests(RECORD, segment_s=SEGMENT_S, patient_id="bench"))
        header = wfdb.rdheader(record_path(RECORD))
        extra = {"int16": encode_segment(body, "int16", header.adc_gain, header.baseline)}
    else:
        body = next(eeg_requests(require(EEG_FILE), segment_s=SEGMENT_S, patient_id="bench"))
        extra = {}
    encoded = {
        "json": (json.dumps(body).encode(), {"Content-Type": "application/json"}),
        "float32": encode_segment(body, "float32"),
        **extra,
    }
    return body, encoded


def run(
    out: str = "bench/results", progress: bool = False, repeats: int = REPEATS
) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"repeats": repeats, "segment_s": SEGMENT_S}
    for modality in ("ecg", "eeg"):
        body, encoded = _encodings(modality)
        figures: dict[str, dict[str, float]] = {}
        for name, (content, headers) in encoded.items():
            if name == "json":
                read = partial(parse_json, content)
            else:
                read = partial(parse_binary, headers[SEGMENT_HEADER], content)
            figures[name] = {
                "bytes": len(content) + sum(map(len, headers.values())),
                "parse_ms": _median_ms(read, repeats),
            }
        result[modality] = {
            "channels": len(body["channels"]),
            "fs": body["fs"],
            "samples": len(body["channels"]) * len(body["samples"][0]),
            **figures,
            "speedup": {
                name: figures["json"]["parse_ms"] / f["parse_ms"]
                for name, f in figures.items()
                if name != "json"
            },
        }
    result["run_s"] = time.perf_counter() - started
    report.write_outputs(Path(out), "body", _markdown(result), result)
    return result


def _markdown(result: dict[str, Any]) -> str:
    rows = []
    for modality in ("ecg", "eeg"):
        figures = result[modality]
        for name in ("json", "float32", "int16"):
            if name in figures:
                speedup = figures["speedup"].get(name)
                rows.append(
                    [
                        modality,
                        f"{figures['channels']} × {figures['fs']:g} Hz",
                        name,
                        figures[name]["bytes"],
                        figures[name]["parse_ms"],
                        "—" if speedup is None else f"{speedup:.1f}×",
                    ]
                )
    return "\n".join(
        [
            "# Reading one segment's body: JSON vs binary",
            "",
            (
                f"One {result['segment_s']:g} s segment per modality, read by the daemon's parser; "
                f"median CPU ms of {result['repeats']} reads. Bytes include the metadata header."
            ),
            "",
            report.markdown_table(
                ["modality", "signal", "body", "bytes", "parse ms", "vs JSON"], rows
            ),
            "",
            "Reproduce: `biofo bench body --json`.",
            "",
        ]
    )
