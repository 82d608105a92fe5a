"""CHB-MIT readers on the staged real files: summary, .seizures annotations, crops.csv, EDF."""

from __future__ import annotations

import numpy as np
import pytest

from signals import chbmit
from signals.datafiles import DataMissingError, chbmit_dir

CHB01_SEIZURES = {
    "chb01_03": (2996.0, 3036.0),
    "chb01_04": (1467.0, 1494.0),
    "chb01_15": (1732.0, 1772.0),
    "chb01_16": (1015.0, 1066.0),
    "chb01_18": (1720.0, 1810.0),
    "chb01_21": (327.0, 420.0),
    "chb01_26": (1862.0, 1963.0),
}


@pytest.fixture(scope="module")
def summary() -> chbmit.Summary:
    return chbmit.read_summary(chbmit.summary_path("chb01"))


@pytest.fixture(scope="module")
def crops() -> tuple[chbmit.CropRow, ...]:
    return chbmit.read_crops()


def test_chb01_summary_lists_its_files_and_seizures(summary: chbmit.Summary) -> None:
    assert summary.patient == "chb01"
    assert summary.sampling_rate_hz == 256.0
    assert len(summary.files) == 42
    with_seizures = {entry.record: entry.seizures for entry in summary.files if entry.seizures}
    assert with_seizures == {record: (interval,) for record, interval in CHB01_SEIZURES.items()}
    first = summary.file("chb01_03")
    assert first.start_clock_s == 13 * 3600 + 43 * 60 + 4
    assert first.end_clock_s == 14 * 3600 + 43 * 60 + 4
    assert len(first.channels) == 23 and first.channels.count("T8-P8") == 2


def test_summary_agrees_with_seizures_annotation_files(summary: chbmit.Summary) -> None:
    annotated = sorted(chbmit_dir().glob("chb01_*.edf.seizures"))
    assert len(annotated) == 7
    for path in annotated:
        edf = path.with_suffix("")  # chb01_03.edf.seizures -> chb01_03.edf
        assert chbmit.read_seizure_annotations(edf) == summary.file(edf.name).seizures


def test_summary_parser_accepts_the_other_formats_of_the_database(summary: chbmit.Summary) -> None:
    """chb01's real text rewritten the way later patients' summaries are written."""
    text = chbmit.summary_path("chb01").read_text()
    numbered = text.replace("Seizure Start Time:", "Seizure 1 Start Time:").replace(
        "Seizure End Time:", "Seizure 1 End Time:"
    )
    no_clock = "\n".join(
        line for line in numbered.splitlines() if not line.startswith(("File Start", "File End"))
    )
    changed = no_clock.replace(
        "File Name: chb01_21.edf",
        "Channels changed:\n*****************\nChannel 1: FP1-F7\nChannel 2: -\n"
        "Channel 3: T7-P7\n\nFile Name: chb01_21.edf",
    )
    parsed = chbmit.parse_summary_text(changed, patient="chb01")
    assert [f.seizures for f in parsed.files] == [f.seizures for f in summary.files]
    assert all(f.start_clock_s is None for f in parsed.files)
    assert parsed.file("chb01_18").channels == summary.file("chb01_18").channels
    assert parsed.file("chb01_21").channels == ("FP1-F7", "-", "T7-P7")
    assert parsed.file("chb01_46").channels == ("FP1-F7", "-", "T7-P7")


def test_summary_pairs_seizures_by_position_and_checks_the_count() -> None:
    # chb09-summary.txt prints chb09_08's second seizure end as "Seizure 1 End Time".
    chb09_08 = (
        "File Name: chb09_08.edf\nFile Start Time: 23:22:17\nFile End Time: 24:22:17\n"
        "Number of Seizures in File: 2\n"
        "Seizure 1 Start Time: 2951 seconds\nSeizure 1 End Time:   3030 seconds\n"
        "Seizure 2 Start Time: 9196 seconds\nSeizure 1 End Time:   9267 seconds\n"
    )
    entry = chbmit.parse_summary_text(chb09_08, patient="chb09").file("chb09_08")
    assert entry.seizures == ((2951.0, 3030.0), (9196.0, 9267.0))
    assert entry.end_clock_s == 24 * 3600 + 22 * 60 + 17
    with pytest.raises(ValueError, match="declares 2 seizures but lists 1"):
        chbmit.parse_summary_text(chb09_08.rsplit("Seizure 2", 1)[0] + "\n", patient="chb09")


def test_every_crop_row_matches_its_edf_lengths(crops: tuple[chbmit.CropRow, ...]) -> None:
    assert len(crops) == 97
    assert len({row.patient for row in crops}) == 17
    for row in crops:
        for kind in chbmit.CROP_KINDS:
            assert chbmit.edf_duration_s(row.file(kind)) == row.duration_s(kind), (row, kind)
        assert row.after60_ictal_s == max(0.0, row.seizure_s - 60.0)
        assert chbmit.patient_of(row.record) == row.patient


def test_crops_of_chb01_are_the_summary_seizures(
    summary: chbmit.Summary, crops: tuple[chbmit.CropRow, ...]
) -> None:
    for row in (row for row in crops if row.patient == "chb01"):
        ((start, end),) = summary.file(row.record).seizures
        assert row.seizure_s == end - start


def test_crop_sample_labels(crops: tuple[chbmit.CropRow, ...]) -> None:
    row = next(row for row in crops if row.record == "chb01_21")
    assert row.after60_ictal_s == 33.0
    seizure = row.sample_labels("seizure")
    after60 = row.sample_labels("after60")
    assert seizure.shape == after60.shape == (93 * 256,)
    assert seizure.all()
    assert after60[: 33 * 256].all() and not after60[33 * 256 :].any()
    short = next(row for row in crops if row.record == "chb01_03")
    assert not short.sample_labels("after60").any()


def test_edf_reading_keeps_header_labels_and_microvolts(crops: tuple[chbmit.CropRow, ...]) -> None:
    recording = chbmit.read_edf(crops[0].seizure_file)
    assert recording.fs == 256.0
    assert recording.samples_uv.shape == (23, 40 * 256)
    assert "T8-P8-0" in recording.channels and "T8-P8-1" in recording.channels
    assert recording.labels.count("T8-P8") == 2 and "EDF Annotations" not in recording.labels
    # Physical range of CHB-MIT is +-800 uV with 12-bit steps of 1600/4095 uV.
    assert np.abs(recording.samples_uv).max() <= 800.0
    step = 1600.0 / 4095.0
    levels = (recording.samples_uv[0] + 800.0) / step
    assert np.allclose(levels, np.round(levels), atol=1e-6)


def test_ictal_intervals_of_staged_files(crops: tuple[chbmit.CropRow, ...], tmp_path) -> None:
    row = next(row for row in crops if row.record == "chb01_18")
    assert chbmit.ictal_intervals(row.seizure_file) == ((0.0, 90.0),)
    assert chbmit.ictal_intervals(row.after60_file) == ((0.0, 30.0),)
    with pytest.raises(DataMissingError, match="chb05-summary.txt"):
        chbmit.ictal_intervals(tmp_path / "chb05_01.edf")
