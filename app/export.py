"""``biofo export wfdb`` and ``biofo export bids``: a patient's stored signal, labels and predictions in
the field's formats, read from the daemon's database (safe while the daemon runs: WAL readers).

- WFDB (ECG): a record ``<patient>_ecg`` (``.hea`` + ``.dat``, 360 Hz, both leads, mV) rebuilt from the
  stored beats' samples, time 0 = the stream's start, NaN (WFDB's missing value) where nothing was
  kept; annotator ``atr`` holds the clinicians' labels in force (aux note: who), annotator ``pred`` the
  model's prediction for every beat when it arrived (aux note: model version and probability).
  AAMI classes N S V F Q are WFDB beat symbols as they are.
- Windows whose samples retention dropped (unlabelled, past ``BIOFO_RETAIN_SAMPLES_HOURS``) are gaps
  in the signal (NaN in WFDB, ``BAD_gap`` in BIDS) while their predictions are still exported; the
  header comments (WFDB) and the command's output say how many. Windows retention deleted
  (``BIOFO_RETAIN_WINDOWS_HOURS``) are not exported at all.
- BIDS (EEG): ``sub-<patient>/eeg/*_eeg.edf`` (256 Hz, the canonical bipolar montage) written by
  mne-bids, with the clinicians' seizure labels as ``seizure`` events in ``events.tsv`` (consecutive
  seizure-labelled windows merged into one event) and any gap in the stream as ``BAD_gap``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from app.modalities import MODALITIES
from app.settings import Settings
from app.store import Store, stored_samples
from signals.ecg_features import ECG_FS
from signals.eeg_features import CANONICAL_CHANNELS, EEG_FS, EEG_WINDOW_S
from signals.stitch import stitch

LABEL_ANNOTATOR = "atr"
PREDICTION_ANNOTATOR = "pred"
BIDS_TASK = "bedside"
SEIZURE = "seizure"


class ExportError(RuntimeError):
    """Nothing to export, said in one line."""


def _stored(db: str | None, modality: str, patient: str) -> tuple[list[dict], list[dict]]:
    """The patient's stored windows and labels of one modality."""
    store = Store(Settings.from_env(db=db).db)
    try:
        model = store.model(modality, patient)
        if model is None:
            raise ExportError(f"no {modality.upper()} stream for patient '{patient}' in {store.path}")
        return store.export_windows(model.id), store.export_labels(model.id)
    finally:
        store.close()


def _kept(rows: list[dict], first_sample_s) -> list[tuple[float, np.ndarray]]:
    """(time of the first sample, samples) of the windows whose samples retention kept."""
    return [(first_sample_s(row), samples) for row in rows if (samples := stored_samples(row)) is not None]


def without_samples(rows: list[dict]) -> str:
    """What the export says of windows whose samples retention dropped (empty if none)."""
    n = sum(row["samples_pruned_at"] is not None for row in rows)
    return (f"{n} unlabelled windows past the retention horizon have no samples (gaps); their predictions are kept"
            if n else "")


def ecg_signal(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    """(n, leads) mV from time 0 to the end of the last beat's samples, NaN where nothing is stored."""

    def first_sample_s(row: dict) -> float:
        return row["offset_s"] - row["marker"] / ECG_FS

    end = max(first_sample_s(row) + row["n_samples"] / ECG_FS for row in rows)
    n_channels = rows[0]["n_channels"]
    names = MODALITIES["ecg"].plot_channels(json.loads(rows[0]["channels"]), n_channels)
    return stitch(_kept(rows, first_sample_s), ECG_FS, 0.0, end, n_channels).T, names


def export_wfdb(patient: str, out: str, db: str | None = None, progress: bool = False) -> None:
    import wfdb

    rows, labels = _stored(db, "ecg", patient)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    record = record_name(patient, "ecg")
    signal, names = ecg_signal(rows)
    wfdb.wrsamp(record, fs=ECG_FS, units=["mV"] * signal.shape[1], sig_name=names, p_signal=signal,
                fmt=["16"] * signal.shape[1], write_dir=str(folder),
                comments=[f"biofo export: patient {patient}, time 0 = start of the stream",
                          *filter(None, [without_samples(rows)])])
    last = signal.shape[0] - 1

    def sample(offset_s: float) -> int:
        return min(last, int(round(offset_s * ECG_FS)))

    predictions = [(sample(r["offset_s"]), r["predicted"], f"v{r['model_version']}") for r in rows]
    _write_annotations(wfdb, record, PREDICTION_ANNOTATOR, predictions, folder)
    if labels:
        _write_annotations(wfdb, record, LABEL_ANNOTATOR,
                           [(sample(r["offset_s"]), r["label"], f"by {r['labeled_by']}") for r in labels], folder)
    print(f"wrote {folder / record}.hea/.dat, {len(labels)} labels ({LABEL_ANNOTATOR}), "
          f"{len(predictions)} predictions ({PREDICTION_ANNOTATOR})")
    if without_samples(rows):
        print(without_samples(rows))


def _write_annotations(wfdb, record: str, extension: str, items: list[tuple[int, str, str]], folder: Path) -> None:
    wfdb.wrann(record, extension, np.array([s for s, _, _ in items], dtype=np.int64),
               symbol=[c for _, c, _ in items], aux_note=[a for _, _, a in items], fs=ECG_FS,
               write_dir=str(folder))


def record_name(patient: str, modality: str) -> str:
    """WFDB record names take letters, digits, '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", patient) + f"_{modality}"


def bids_subject(patient: str) -> str:
    """BIDS labels are alphanumeric."""
    return re.sub(r"[^A-Za-z0-9]", "", patient)


def seizure_events(labels: list[dict]) -> list[tuple[float, float]]:
    """(onset, duration) of runs of consecutive seizure-labelled windows; a background label ends a run."""
    events: list[list[float]] = []
    for row in labels:
        if row["label"] != SEIZURE:
            continue
        if events and abs(row["offset_s"] - events[-1][1]) < 1e-6:
            events[-1][1] = row["offset_s"] + EEG_WINDOW_S
        else:
            events.append([row["offset_s"], row["offset_s"] + EEG_WINDOW_S])
    return [(start, end - start) for start, end in events]


def export_bids(patient: str, out: str, db: str | None = None, progress: bool = False) -> None:
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    rows, labels = _stored(db, "eeg", patient)
    end = max(r["offset_s"] + r["n_samples"] / EEG_FS for r in rows)
    microvolts = stitch(_kept(rows, lambda r: r["offset_s"]), EEG_FS, 0.0, end, len(CANONICAL_CHANNELS))
    missing = np.isnan(microvolts[0])
    info = mne.create_info(list(CANONICAL_CHANNELS), EEG_FS, ch_types="eeg")
    raw = mne.io.RawArray(np.nan_to_num(microvolts) * 1e-6, info, verbose="error")
    onsets, durations, descriptions = [], [], []
    for onset, duration in seizure_events(labels):
        onsets.append(onset)
        durations.append(duration)
        descriptions.append(SEIZURE)
    for start, stop in _runs(missing):
        onsets.append(start / EEG_FS)
        durations.append((stop - start) / EEG_FS)
        descriptions.append("BAD_gap")
    raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
    path = BIDSPath(subject=bids_subject(patient), task=BIDS_TASK, datatype="eeg", root=out)
    write_raw_bids(raw, path, format="EDF", allow_preload=True, overwrite=True, verbose="error")
    print(f"wrote {path.fpath}, {descriptions.count(SEIZURE)} seizure events")
    if without_samples(rows):
        print(f"{without_samples(rows)} (BAD_gap)")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _command(kind: str, export, patient: str, out: str, db: str | None) -> None:
    """A clear one-line error and exit 2 when there is nothing to export."""
    try:
        export(patient, out, db)
    except ExportError as error:
        print(f"biofo export {kind}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def wfdb_command(patient: str, out: str, db: str | None = None, progress: bool = False) -> None:
    _command("wfdb", export_wfdb, patient, out, db)


def bids_command(patient: str, out: str, db: str | None = None, progress: bool = False) -> None:
    _command("bids", export_bids, patient, out, db)
