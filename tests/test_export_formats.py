"""``biofo export wfdb`` and ``biofo export bids`` as a user runs them, on real signal streamed through a
real daemon and labelled through the API; read back with wfdb and mne-bids."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wfdb
from conftest import Daemon, start_daemon

from signals import replay
from signals.datafiles import require
from signals.mitbih import read_record

REPO = Path(__file__).resolve().parents[1]
BIOFO = str(Path(sys.executable).parent / "biofo")
ECG_PATIENT = "mitdb-208"
EEG_PATIENT = "chb01"
# 93 s of chb01_21 starting 60 s after the onset: the first 33 s are still ictal.
EEG_CROP = "chbmit/crops/after60/chb01_21_le.edf"
LABELER = "Dr Ada"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, list[dict], list[dict], list[dict], list[dict]]]:
    folder = tmp_path_factory.mktemp("export")
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log")
    try:
        with daemon.client() as client:
            ecg = [w for body in replay.ecg_requests("208", patient_id=ECG_PATIENT, minutes=2.0)
                   for w in client.post("/v1/windows", json=body).json()["windows"]]
            edf = require(EEG_CROP)
            eeg = [w for body in replay.eeg_requests(edf, patient_id=EEG_PATIENT)
                   for w in client.post("/v1/windows", json=body).json()["windows"]]
            reference = replay.ecg_reference("208")
            ecg_labels = [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]), "labeled_by": LABELER}
                          for w in ecg if w["offset_s"] < 60 and reference.label_at(w["offset_s"])]
            eeg_labels = [{"window_id": w["id"], "label": replay.eeg_window_label(edf, w["offset_s"]), "labeled_by": LABELER}
                          for w in eeg]
            for labels in (ecg_labels, eeg_labels):
                assert client.post("/v1/labels", json={"labels": labels}).status_code == 202
        yield daemon, ecg, ecg_labels, eeg, eeg_labels
    finally:
        daemon.stop()


def _biofo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([BIOFO, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_export_wfdb_round_trips_through_rdann_and_rdrecord(served, tmp_path: Path) -> None:
    daemon, ecg, ecg_labels, _, _ = served
    # While the daemon runs, as the README shows it.
    done = _biofo("export", "wfdb", "--patient", ECG_PATIENT, "--out", str(tmp_path), "--db", str(daemon.db))
    assert done.returncode == 0, done.stderr
    base = str(tmp_path / "mitdb-208_ecg")
    record = wfdb.rdrecord(base)
    assert record.fs == 360 and record.sig_name == ["MLII", "V1"] and record.units == ["mV", "mV"]

    # The samples are the device's: where the export holds signal, it is record 208 itself.
    original = read_record("208").signal.T  # (n, 2) mV
    held = ~np.isnan(record.p_signal[:, 0])
    assert held.mean() > 0.95
    n = record.p_signal.shape[0]
    assert np.nanmax(np.abs(record.p_signal[held] - original[:n][held])) < 0.01

    labels = wfdb.rdann(base, "atr")
    by_window = {w["id"]: w["offset_s"] for w in ecg}
    assert list(labels.sample) == [int(round(by_window[item["window_id"]] * 360)) for item in ecg_labels]
    assert labels.symbol == [item["label"] for item in ecg_labels]
    assert set(labels.aux_note) == {f"by {LABELER}"}

    predictions = wfdb.rdann(base, "pred")
    assert list(predictions.sample) == [int(round(w["offset_s"] * 360)) for w in ecg]
    assert predictions.symbol == [w["predicted"] for w in ecg]
    assert predictions.aux_note[0] == f"v{ecg[0]['model_version']}"


def test_export_bids_has_the_seizure_labels_in_events_tsv(served, tmp_path: Path) -> None:
    from mne_bids import BIDSPath, read_raw_bids

    daemon, _, _, eeg, eeg_labels = served
    done = _biofo("export", "bids", "--patient", EEG_PATIENT, "--out", str(tmp_path), "--db", str(daemon.db))
    assert done.returncode == 0, done.stderr
    path = BIDSPath(subject="chb01", task="bedside", datatype="eeg", root=tmp_path)
    raw = read_raw_bids(path, verbose="error")
    assert raw.info["sfreq"] == 256 and raw.ch_names[0] == "FP1-F7" and len(raw.ch_names) == 18

    seizure = sorted(w["offset_s"] for w, item in zip(eeg, eeg_labels) if item["label"] == "seizure")
    assert seizure and seizure[0] == 0.0  # the crop starts inside the seizure
    events = list(csv.DictReader((tmp_path / "sub-chb01" / "eeg" / "sub-chb01_task-bedside_events.tsv").open(), delimiter="\t"))
    rows = [(float(e["onset"]), float(e["duration"])) for e in events if e["trial_type"] == "seizure"]
    assert rows == [(0.0, pytest.approx(seizure[-1] + 2.0))]
    assert [a["description"] for a in raw.annotations] == ["seizure"]

    # The EEG is the stored windows' samples (µV there, V in MNE), to EDF's 16-bit resolution.
    with daemon.client() as client:
        first = client.get(f"/v1/windows/{eeg[0]['id']}").json()
    stored = np.asarray(first["samples"]) * 1e-6
    assert np.max(np.abs(raw.get_data()[:, : stored.shape[1]] - stored)) < 2e-6


def test_export_names_what_is_missing(served, tmp_path: Path) -> None:
    daemon = served[0]
    done = _biofo("export", "wfdb", "--patient", EEG_PATIENT, "--out", str(tmp_path), "--db", str(daemon.db))
    assert done.returncode == 2 and "no ECG stream for patient 'chb01'" in done.stderr
    done = _biofo("export", "bids", "--patient", "nobody", "--out", str(tmp_path), "--db", str(daemon.db))
    assert done.returncode == 2 and "no EEG stream for patient 'nobody'" in done.stderr
