"""Channel names of real CHB-MIT crops mapped onto the canonical 18-channel montage."""

from __future__ import annotations

import numpy as np
import pytest

from signals import chbmit
from signals.montage import CANONICAL_CHANNELS, map_channels, parse_channel, to_canonical

EXTRA = ("P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8")


@pytest.fixture(scope="module")
def recording() -> chbmit.EdfRecording:
    row = next(row for row in chbmit.read_crops() if row.record == "chb01_18")
    return chbmit.read_edf(row.seizure_file)


def rows_by_name(recording: chbmit.EdfRecording) -> dict[str, np.ndarray]:
    return dict(zip(recording.labels, recording.samples_uv))


def expected(recording: chbmit.EdfRecording) -> np.ndarray:
    """The canonical rows picked by hand; the first T8-P8 (both are identical in CHB-MIT)."""
    index = {name: i for i, name in reversed(list(enumerate(recording.labels)))}
    return recording.samples_uv[[index[name] for name in CANONICAL_CHANNELS]]


def test_mne_names_map_with_duplicate_and_extras_ignored(recording: chbmit.EdfRecording) -> None:
    result = to_canonical(recording.samples_uv, recording.channels)
    assert result.samples.shape == (18, recording.samples_uv.shape[1])
    assert np.array_equal(result.samples, expected(recording))
    assert result.ignored == (*EXTRA, "T8-P8-1")
    assert result.missing == () and result.reversed == () and result.derived == ()


def test_header_labels_with_exact_duplicate(recording: chbmit.EdfRecording) -> None:
    result = to_canonical(recording.samples_uv, recording.labels)
    assert np.array_equal(result.samples, expected(recording))
    assert result.ignored == (*EXTRA, "T8-P8")


def test_both_channel_orders_of_the_staged_crops_agree() -> None:
    orders = {}
    for row in chbmit.read_crops():
        names = chbmit.read_edf(row.seizure_file).channels
        orders.setdefault(names, row.seizure_file)
        if len(orders) == 2:
            break
    assert len(orders) == 2  # FZ-CZ/CZ-PZ sit at rows 9-10 in some files, 17-18 in others
    for names, path in orders.items():
        recording = chbmit.read_edf(path)
        assert np.array_equal(
            to_canonical(recording.samples_uv, names).samples, expected(recording)
        )


def test_renamed_shuffled_device_channels_map_back(recording: chbmit.EdfRecording) -> None:
    rng = np.random.default_rng(7)
    order = rng.permutation(len(recording.labels))
    spelled = [
        f" eeg {name.lower()} " if i % 3 == 0 else name.replace("-", " - ")
        for i, name in enumerate(recording.labels)
    ]
    names = [spelled[i] for i in order] + ["EDF Annotations", "-", "--0", "--1", ".", "ECG", "VNS"]
    samples = np.concatenate(
        [recording.samples_uv[order], np.ones((7, recording.samples_uv.shape[1]))]
    )
    result = to_canonical(samples, names)
    assert np.array_equal(result.samples, expected(recording))
    assert {"EDF Annotations", "-", "--0", "--1", ".", "ECG", "VNS"} <= set(result.ignored)
    assert result.missing == ()


def test_reversed_pairs_flip_sign_and_missing_channels_are_zero(
    recording: chbmit.EdfRecording,
) -> None:
    names = list(recording.labels)
    samples = recording.samples_uv.copy()
    t7 = names.index("T7-P7")
    names[t7], samples[t7] = "P7-T7", -samples[t7]  # now two P7-T7 rows: the first one is used
    fz = names.index("FZ-CZ")
    del names[fz]
    samples = np.delete(samples, fz, axis=0)
    result = to_canonical(samples, names)
    reference = expected(recording)
    assert np.array_equal(result.samples[2], reference[2])
    assert result.reversed == ("T7-P7",)
    assert result.missing == ("FZ-CZ",)
    assert not result.samples[CANONICAL_CHANNELS.index("FZ-CZ")].any()
    keep = [k for k in range(18) if CANONICAL_CHANNELS[k] != "FZ-CZ"]
    assert np.array_equal(result.samples[keep], reference[keep])


def test_referential_channels_are_subtracted(recording: chbmit.EdfRecording) -> None:
    """Potentials of the left temporal chain against T7, rebuilt from the real bipolar rows."""
    row = rows_by_name(recording)
    f7 = row["F7-T7"]
    potentials = {"FP1": row["FP1-F7"] + f7, "F7": f7, "T7": np.zeros_like(f7), "P7": -row["T7-P7"]}
    names = [f"{electrode}-REF" for electrode in potentials]
    result = to_canonical(np.stack(list(potentials.values())), names)
    for canonical in ("FP1-F7", "F7-T7", "T7-P7"):
        assert np.allclose(result.samples[CANONICAL_CHANNELS.index(canonical)], row[canonical])
    assert result.derived == ("FP1-F7", "F7-T7", "T7-P7")
    assert len(result.missing) == 15


def test_channel_name_parsing() -> None:
    assert parse_channel("T8-P8-1") == ("T8", "P8")
    assert parse_channel(" eeg fp1 - f7 ") == ("FP1", "F7")
    assert parse_channel("T3-T5") == ("T7", "P7")  # old 10-20 names
    assert parse_channel("P7-01") == ("P7", "O1")  # digit typo in CHB-MIT headers
    assert parse_channel("FP1") == ("FP1", "")
    assert parse_channel("C3-CS2") == ("C3", "CS2")
    for junk in ("-", "--0", ".", "EDF Annotations", "ECG", "VNS", "LOC-ROC", "EKG1-CHIN"):
        assert parse_channel(junk) is None
    with pytest.raises(ValueError, match="expected"):
        map_channels(["FP1-F7"]).apply(np.zeros((2, 4)))
