"""CHB-MIT Scalp EEG: EDF files, ``chbNN-summary.txt``, ``.seizures`` annotations and crops.csv.

Seizure intervals are seconds from the start of an EDF file, ``[start, end)``. The summary text
varies between patients and this parser accepts every variant of the published database:

- ``Seizure Start Time:`` and ``Seizure 1 Start Time:`` (starts and ends are paired by position,
  because ``chb09-summary.txt`` labels the end of chb09_08's second seizure ``Seizure 1``);
- channel blocks (``Channels in EDF Files:``, later ``Channels changed:``) that change the montage
  for the files that follow them;
- clock times past midnight written as ``24:22:17``, single-digit hours, and files without
  ``File Start Time`` lines (chb24).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from signals.datafiles import DataMissingError, chbmit_dir

CropKind = Literal["seizure", "after60"]
Interval = tuple[float, float]

_PATIENT = re.compile(r"(chb\d{2})", re.IGNORECASE)


def patient_of(name: str) -> str:
    """``chb01_03``, ``chb17a_03.edf`` or ``crops/after60/chb02_16+_Ss.edf`` -> ``chb01`` etc."""
    match = _PATIENT.search(Path(name).name)
    if match is None:
        raise ValueError(f"{name!r} does not name a CHB-MIT patient (chbNN)")
    return match.group(1).lower()


# --- EDF --------------------------------------------------------------------------------------


_EDF_ANNOTATIONS = "EDF Annotations"


def edf_signal_labels(path: str | Path) -> tuple[str, ...]:
    """Signal labels exactly as the EDF header spells them (duplicates kept), without the
    ``EDF Annotations`` signal of EDF+ files."""
    with Path(path).open("rb") as handle:
        fixed = handle.read(256)
        count = int(fixed[252:256].decode("ascii").strip())
        raw = handle.read(16 * count)
    labels = (raw[16 * i : 16 * (i + 1)].decode("latin-1").strip() for i in range(count))
    return tuple(label for label in labels if label != _EDF_ANNOTATIONS)


@dataclass(frozen=True)
class EdfRecording:
    path: Path
    samples_uv: np.ndarray  # (n_channels, n) float64, microvolts
    fs: float
    channels: tuple[str, ...]  # as MNE names them (duplicates get -0, -1 suffixes)
    labels: tuple[str, ...]  # the header's own labels, row for row (duplicates kept)

    @property
    def duration_s(self) -> float:
        return self.samples_uv.shape[1] / self.fs


def read_edf(path: str | Path) -> EdfRecording:
    """All signals of an EDF file in microvolts (MNE drops the ``EDF Annotations`` signal)."""
    import mne

    path = Path(path)
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    channels = tuple(raw.ch_names)
    labels = edf_signal_labels(path)
    if len(labels) != len(channels):
        raise ValueError(f"{path}: header lists {len(labels)} signals, MNE read {len(channels)}")
    return EdfRecording(
        path=path,
        samples_uv=raw.get_data(units="uV"),
        fs=float(raw.info["sfreq"]),
        channels=channels,
        labels=labels,
    )


def edf_duration_s(path: str | Path) -> float:
    """Length of an EDF recording from its header alone."""
    import mne

    raw = mne.io.read_raw_edf(Path(path), preload=False, verbose="error")
    return raw.n_times / float(raw.info["sfreq"])


# --- summary ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryFile:
    name: str  # "chb01_03.edf"
    start_clock_s: float | None  # "File Start Time" in seconds after midnight; may exceed 86400
    end_clock_s: float | None
    seizures: tuple[Interval, ...]
    channels: tuple[str, ...]  # the montage the summary lists for this file

    @property
    def record(self) -> str:
        return self.name.removesuffix(".edf")


@dataclass(frozen=True)
class Summary:
    patient: str
    sampling_rate_hz: float | None
    files: tuple[SummaryFile, ...]

    def file(self, name: str) -> SummaryFile:
        wanted = name if name.endswith(".edf") else f"{name}.edf"
        for entry in self.files:
            if entry.name == wanted:
                return entry
        raise KeyError(f"{wanted} is not in the {self.patient} summary")

    @property
    def seizure_count(self) -> int:
        return sum(len(entry.seizures) for entry in self.files)


_RATE = re.compile(r"^Data Sampling Rate:\s*([\d.]+)\s*Hz", re.IGNORECASE)
_CHANNEL_BLOCK = re.compile(r"^Channels\b.*:$", re.IGNORECASE)
_CHANNEL = re.compile(r"^Channel\s+(\d+)\s*:\s*(.*)$", re.IGNORECASE)
_FILE = re.compile(r"^File Name:\s*(\S+)", re.IGNORECASE)
_CLOCK = re.compile(r"^File (Start|End) Time:\s*(\d+):(\d{1,2}):(\d{1,2})", re.IGNORECASE)
_COUNT = re.compile(r"^Number of Seizures in File:\s*(\d+)", re.IGNORECASE)
_SEIZURE = re.compile(
    r"^Seizure(?:\s+\d+)?\s+(Start|End)\s+Time:\s*([\d.]+)\s*(?:seconds?)?$", re.IGNORECASE
)


@dataclass
class _FileBlock:
    name: str
    channels: tuple[str, ...]
    clock: dict[str, float]
    declared: int | None = None
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    def finish(self) -> SummaryFile:
        starts, ends = self.starts, self.ends
        if len(starts) != len(ends):
            raise ValueError(f"{self.name}: {len(starts)} seizure starts but {len(ends)} ends")
        if self.declared is not None and self.declared != len(starts):
            raise ValueError(
                f"{self.name}: declares {self.declared} seizures but lists {len(starts)}"
            )
        for start, end in zip(starts, ends):
            if not end > start:
                raise ValueError(f"{self.name}: seizure ends at {end} s, not after {start} s")
        return SummaryFile(
            name=self.name,
            start_clock_s=self.clock.get("start"),
            end_clock_s=self.clock.get("end"),
            seizures=tuple(zip(starts, ends)),
            channels=self.channels,
        )


def parse_summary_text(text: str, patient: str) -> Summary:
    rate: float | None = None
    montage: list[str] = []
    in_channel_block = False
    files: list[SummaryFile] = []
    block: _FileBlock | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) == {"*"}:
            continue
        if match := _RATE.match(line):
            rate = float(match.group(1))
        elif _CHANNEL_BLOCK.match(line):
            montage, in_channel_block = [], True
        elif match := _CHANNEL.match(line):
            if not in_channel_block:
                # A channel list without a heading still replaces the previous montage.
                montage, in_channel_block = [], True
            montage.append(match.group(2).strip())
        elif match := _FILE.match(line):
            in_channel_block = False
            if block is not None:
                files.append(block.finish())
            block = _FileBlock(name=match.group(1), channels=tuple(montage), clock={})
        elif block is None:
            continue
        elif match := _CLOCK.match(line):
            hours, minutes, seconds = (int(match.group(i)) for i in (2, 3, 4))
            block.clock[match.group(1).lower()] = float(hours * 3600 + minutes * 60 + seconds)
        elif match := _COUNT.match(line):
            block.declared = int(match.group(1))
        elif match := _SEIZURE.match(line):
            bucket = block.starts if match.group(1).lower() == "start" else block.ends
            bucket.append(float(match.group(2)))
    if block is not None:
        files.append(block.finish())
    return Summary(patient=patient, sampling_rate_hz=rate, files=tuple(files))


def read_summary(path: str | Path) -> Summary:
    """Parse a ``chbNN-summary.txt`` file."""
    path = Path(path)
    return parse_summary_text(path.read_text(errors="replace"), patient=patient_of(path.name))


def summary_path(patient: str, folder: Path | None = None) -> Path:
    return (folder or chbmit_dir()) / f"{patient}-summary.txt"


# --- .seizures annotations -------------------------------------------------------------------


def read_seizure_annotations(edf_path: str | Path) -> tuple[Interval, ...]:
    """Seizure intervals from ``<edf>.seizures`` (PhysioNet's WFDB annotation of the EDF)."""
    import wfdb

    edf_path = Path(edf_path)
    annotation = wfdb.rdann(str(edf_path), "seizures")
    fs = float(annotation.fs) if annotation.fs else 256.0
    onsets = [s for s, sym in zip(annotation.sample, annotation.symbol) if sym == "["]
    offsets = [s for s, sym in zip(annotation.sample, annotation.symbol) if sym == "]"]
    if len(onsets) != len(offsets):
        raise ValueError(f"{edf_path}.seizures: {len(onsets)} onsets but {len(offsets)} offsets")
    return tuple((float(on) / fs, float(off) / fs) for on, off in zip(onsets, offsets))


# --- crops ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropRow:
    """One seizure of crops.csv: the ictal crop and the crop 60 s later."""

    patient: str
    record: str
    seizure_file: Path
    after60_file: Path
    seizure_s: float
    after60_s: float
    after60_ictal_s: float

    def file(self, kind: CropKind) -> Path:
        return self.seizure_file if kind == "seizure" else self.after60_file

    def duration_s(self, kind: CropKind) -> float:
        return self.seizure_s if kind == "seizure" else self.after60_s

    def ictal_intervals(self, kind: CropKind) -> tuple[Interval, ...]:
        """The seizure crop is ictal throughout; the after60 crop for its first
        ``after60_ictal_s`` seconds, post-ictal after that."""
        if kind == "seizure":
            return ((0.0, self.seizure_s),)
        return ((0.0, self.after60_ictal_s),) if self.after60_ictal_s > 0 else ()

    def sample_labels(self, kind: CropKind, fs: float = 256.0) -> np.ndarray:
        """Per-sample class index (1 = seizure, 0 = background) over the whole crop."""
        n_samples = int(round(self.duration_s(kind) * fs))
        return sample_labels(self.ictal_intervals(kind), n_samples, fs)


CROP_KINDS: tuple[CropKind, CropKind] = ("seizure", "after60")


def read_crops(folder: Path | None = None) -> tuple[CropRow, ...]:
    """Every row of ``crops.csv`` with file paths made absolute."""
    folder = folder or chbmit_dir()
    with (folder / "crops.csv").open(newline="") as handle:
        return tuple(
            CropRow(
                patient=row["patient"],
                record=row["record"],
                seizure_file=folder / row["seizure_file"],
                after60_file=folder / row["after60_file"],
                seizure_s=float(row["seizure_s"]),
                after60_s=float(row["after60_s"]),
                after60_ictal_s=float(row["after60_ictal_s"]),
            )
            for row in csv.DictReader(handle)
        )


# --- labels -----------------------------------------------------------------------------------


def sample_labels(intervals: Iterable[Interval], n_samples: int, fs: float) -> np.ndarray:
    """int8 per sample: 1 inside any ``[start, end)`` interval (seconds), else 0."""
    labels = np.zeros(n_samples, dtype=np.int8)
    for start, end in intervals:
        labels[max(0, int(round(start * fs))) : max(0, int(round(end * fs)))] = 1
    return labels


@lru_cache(maxsize=8)
def _crops_by_file(folder: Path) -> dict[Path, tuple[CropRow, CropKind]]:
    if not (folder / "crops.csv").exists():
        return {}
    table: dict[Path, tuple[CropRow, CropKind]] = {}
    for row in read_crops(folder):
        for kind in CROP_KINDS:
            table[row.file(kind).resolve()] = (row, kind)
    return table


def ictal_intervals(edf_path: str | Path) -> tuple[Interval, ...]:
    """Ictal intervals of any staged crop (from crops.csv) or of a full-database EDF (from its
    patient's summary in the same folder, else its ``.seizures`` file)."""
    edf_path = Path(edf_path).resolve()
    # crops.csv sits two folders above a crop (crops/<kind>/file.edf).
    for folder in edf_path.parents[:3]:
        found = _crops_by_file(folder).get(edf_path)
        if found is not None:
            row, kind = found
            return row.ictal_intervals(kind)
    summary = summary_path(patient_of(edf_path.name), edf_path.parent)
    if summary.exists():
        return read_summary(summary).file(edf_path.name).seizures
    if Path(f"{edf_path}.seizures").exists():
        return read_seizure_annotations(edf_path)
    raise DataMissingError(
        f"no labels for {edf_path}: not in a crops.csv and no {summary} next to it"
    )
