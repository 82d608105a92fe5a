"""``biofo replay``: play a real record into a running daemon as a bedside device would, and label the
windows of the first minutes from the reference annotations as a clinician would.

The summary compares, on the unlabelled rest of the record, the daemon's predictions with the
reference: per-class sensitivity and positive predictivity for ECG (VEB = V, SVEB = S), window
sensitivity, false alarms and detection latency for EEG.

The token must admit what the replay does: a device token suffices with ``--label-minutes 0``;
labelling, and reading the model's figures afterwards, takes a clinician's rights as well (an
admin token has both). A refusal ends the replay with the daemon's own reason.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.client import ApiError, Client
from signals import replay as sources
from signals.classification import class_scores
from signals.eeg_features import EEG_WINDOW_S

LABELER = "replay (reference annotations)"


@dataclass
class Tally:
    """Reference vs predicted classes of the windows seen."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)

    def add(self, offset_s: float, reference: str, predicted: str) -> None:
        self.pairs.append((reference, predicted))
        self.offsets.append(offset_s)

    def accuracy(self) -> float | None:
        return sum(r == p for r, p in self.pairs) / len(self.pairs) if self.pairs else None

    def se_ppv(self, cls: str) -> dict[str, float | None]:
        """Sensitivity and positive predictivity of ``cls`` against every other class."""
        reference = np.array([r == cls for r, _ in self.pairs], dtype=np.int64)
        predicted = np.array([p == cls for _, p in self.pairs], dtype=np.int64)
        figures = class_scores(reference, predicted, ("other", cls))["per_class"][cls]
        return {"se": figures["se"], "ppv": figures["ppv"]}


@dataclass(frozen=True)
class Source:
    modality: str
    patient_id: str
    requests: Iterator[dict[str, Any]]
    reference: sources.ReferenceLabels


def open_source(path: str, patient_id: str | None, minutes: float | None) -> Source:
    """A MIT-BIH record name or path (``208``, ``mitdb/208``), a CHB-MIT EDF file, or a
    seizure-free eegmmidb run (``S001R03.edf``: referential channels at 160 Hz, all background)."""
    if path.lower().endswith(".edf"):
        edf = Path(path)
        pid = patient_id or sources.eeg_patient_of(edf)
        return Source("eeg", pid, sources.eeg_requests(edf, patient_id=pid, minutes=minutes),
                      sources.eeg_reference(edf))
    record = Path(path).name
    pid = patient_id or f"mitdb-{record}"
    return Source("ecg", pid, sources.ecg_requests(record, patient_id=pid, minutes=minutes),
                  sources.ecg_reference(record))


def run(
    path: str,
    url: str,
    token: str,
    label_minutes: float = 5.0,
    speed: str = "max",
    minutes: float | None = None,
    patient_id: str | None = None,
    body: str = "json",
    progress: bool = False,
) -> dict[str, Any]:
    """``body``: how segments are sent, ``json`` or binary ``float32`` (``app.client.ENCODINGS``)."""
    source = open_source(path, patient_id, minutes)
    try:
        return _replay(source, Client(url, token, encoding=body), label_minutes, speed, progress)
    except ApiError as refused:
        raise SystemExit(f"biofo replay: {refused}") from refused


def _replay(source: Source, client: Client, label_minutes: float, speed: str, progress: bool) -> dict[str, Any]:
    labelled, rest = Tally(), Tally()
    windows = labels = 0
    latencies: list[float] = []
    started = time.monotonic()
    last_seq = 0
    model: dict[str, Any] | None = None
    answered_version: int | None = None
    with client:
        for body in tqdm(source.requests, desc="replay", unit="segment", disable=not progress):
            if speed == "1":
                # Real time: a segment is sent once the device would have recorded all of it.
                duration = len(body["samples"][0]) / body["fs"]
                delay = started + body["start"] + duration - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent = time.perf_counter()
            out = client.post_segment(body)
            latencies.append((time.perf_counter() - sent) * 1000.0)
            windows += len(out)
            answered_version = out[-1]["model_version"] if out else answered_version
            to_label = []
            for window in out:
                reference = source.reference.label_at(window["offset_s"])
                if reference is None:
                    continue
                if window["offset_s"] < label_minutes * 60.0:
                    labelled.add(window["offset_s"], reference, window["predicted"])
                    to_label.append({"window_id": window["id"], "label": reference, "labeled_by": LABELER})
                else:
                    rest.add(window["offset_s"], reference, window["predicted"])
            if to_label:
                accepted = client.post_labels(to_label)
                labels += accepted.accepted
                last_seq = accepted.update_seq
        if labels:
            model = client.wait_applied(source.modality, source.patient_id, last_seq)
    summary: dict[str, Any] = {
        "modality": source.modality,
        "patient_id": source.patient_id,
        "windows": windows,
        "labels": labels,
        # Without labels there is nothing to learn or to score prequentially, and a device token
        # may not read the model: the figures come from the answers alone.
        "updates": model["updates_applied"] if model else 0,
        "model_version": model["version"] if model else answered_version,
        "prequential_accuracy": model["prequential"]["accuracy"] if model else None,
        "labelled_accuracy": labelled.accuracy(),
        "p50_post_ms": statistics.median(latencies) if latencies else None,
    }
    if source.modality == "ecg":
        summary["rest"] = {"accuracy": rest.accuracy(), "n": len(rest.pairs),
                           "VEB": rest.se_ppv("V"), "SVEB": rest.se_ppv("S")}
    else:
        summary["rest"] = eeg_rest(rest)
    return summary


def eeg_rest(rest: Tally) -> dict[str, Any]:
    """Seizure windows detected, false alarms per 24 h of background, delay of the first alarm.

    False alarms need seizure-free EEG to mean anything; on a crop with no background windows
    the figure is None rather than a flattering zero.
    """
    seizure = [(t, p) for t, (r, p) in zip(rest.offsets, rest.pairs) if r == "seizure"]
    background = [(t, p) for t, (r, p) in zip(rest.offsets, rest.pairs) if r == "background"]
    detected = [t for t, p in seizure if p == "seizure"]
    # Consecutive false-positive windows are one false alarm, as event scoring counts them.
    alarms = sorted(t for t, p in background if p == "seizure")
    false_alarms = sum(1 for i, t in enumerate(alarms) if i == 0 or t - alarms[i - 1] > EEG_WINDOW_S + 1e-6)
    background_s = len(background) * EEG_WINDOW_S
    return {
        "sensitivity": len(detected) / len(seizure) if seizure else None,
        "fp_per_24h": false_alarms * 86400.0 / background_s if background_s else None,
        "median_latency_s": (min(detected) - min(t for t, _ in seizure)) if detected else None,
        "seizure_windows": len(seizure),
        "background_windows": len(background),
    }
