"""Referential EEG as a ward records it: real eegmmidb runs (64 channels, 160 Hz, ``Fp1.`` names)
derived onto the double banana, by the montage, by a real daemon and by ``biofo replay``."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from signals import chbmit, eegmmidb
from signals.datafiles import require
from signals.eeg_features import EEG_FS, EegStream
from signals.montage import CANONICAL_CHANNELS, map_channels, parse_channel, to_canonical
from signals.replay import eeg_requests
from tests.conftest import ADMIN_TOKEN
from tests.test_cli import last_json, run_biofo
from tests.test_daemon import make_token

RUN = "eeg-healthy/S001/S001R01.edf"


def mne_electrode(raw: mne.io.BaseRaw, name: str) -> np.ndarray:
    """One electrode's potential in microvolts, picked by its 10-10 name from MNE's dotted label."""
    label = next(ch for ch in raw.ch_names if ch.rstrip(".").upper() == name)
    return raw.get_data(picks=[label], units="uV")[0]


@pytest.fixture(scope="module")
def raw() -> mne.io.BaseRaw:
    return mne.io.read_raw_edf(require(RUN), preload=True, verbose="error")


def test_every_double_banana_channel_is_the_mne_electrode_difference(raw) -> None:
    recording = chbmit.read_edf(require(RUN))
    assert recording.fs == 160.0 and len(recording.labels) == 64 and "T7.." in recording.labels
    result = to_canonical(recording.samples_uv, recording.labels)
    assert result.missing == () and result.derived == CANONICAL_CHANNELS
    for k, canonical in enumerate(CANONICAL_CHANNELS):
        first, second = canonical.split("-")
        difference = mne_electrode(raw, first) - mne_electrode(raw, second)
        assert np.array_equal(result.samples[k], difference), canonical
    derivations = {d.channel: (d.plus, d.minus) for d in map_channels(recording.labels).derivations()}
    assert derivations["FP1-F7"] == ("Fp1.", "F7..") and derivations["CZ-PZ"] == ("Cz..", "Pz..")
    # 64 electrodes, 19 of them used by the double banana: the other 45 are reported as ignored.
    assert len(result.ignored) == 45 and "Iz.." in result.ignored and "Fp1." not in result.ignored


def test_referential_spellings_and_mixed_references(raw) -> None:
    for name in ("Fp1", "EEG FP1-REF", "EEG Fp1-Ref", "Fp1.", "FP1-A1", "fp1 - m1"):
        assert parse_channel(name)[0] == "FP1", name
    assert parse_channel("T7..") == ("T7", "")
    electrodes = ("FP1", "F7", "T7", "FZ", "CZ")
    samples = np.stack([mne_electrode(raw, e) for e in electrodes])
    # Left chain on A1, the midline on A2: FZ-CZ is one reference, FP1-FZ would not be.
    names = ["FP1-A1", "F7-A1", "T7-A1", "FZ-A2", "CZ-A2"]
    result = to_canonical(samples, names)
    assert result.derived == ("FP1-F7", "F7-T7", "FZ-CZ")
    assert np.array_equal(result.samples[CANONICAL_CHANNELS.index("FZ-CZ")], samples[3] - samples[4])
    assert "FP1-F3" in result.missing and "T7-P7" in result.missing and len(result.missing) == 15


def test_a_160_hz_referential_stream_gives_256_hz_windows() -> None:
    bodies = list(eeg_requests(require(RUN)))
    assert bodies[0]["patient_id"] == "S001" and bodies[0]["fs"] == 160.0
    stream, windows = EegStream(), []
    for body in bodies:
        pushed = stream.push(np.asarray(body["samples"]), body["fs"], body["channels"], body["start"])
        assert pushed.missing_channels == [] and len(pushed.derived_channels) == 18
        windows += pushed.windows
    assert len(windows) == 9760 // 320  # 61 s at 160 Hz in 2 s windows
    assert windows[0].samples.shape == (18, int(2 * EEG_FS))
    assert all(np.isfinite(w.features).all() for w in windows)


def test_daemon_accepts_referential_segments_and_says_what_it_derived(daemon) -> None:
    device = make_token(daemon, "device")
    bodies = list(eeg_requests(require(RUN), patient_id="bed-ref"))[:5]
    with daemon.client(device) as dev:
        answers = [dev.post("/v1/windows", json=body) for body in bodies]
        bipolar = dev.post("/v1/windows", json=next(eeg_requests(
            require("chbmit/crops/seizure/chb01_03_ti-seizure.edf"), patient_id="bed-bipolar")))
    assert all(a.status_code == 201 for a in answers), answers[0].text
    first = answers[0].json()
    assert first["missing_channels"] == []
    derived = {d["channel"]: (d["plus"], d["minus"]) for d in first["derived_channels"]}
    assert list(derived) == list(CANONICAL_CHANNELS)
    assert derived["FP1-F7"] == ("Fp1.", "F7..") and derived["T8-P8"] == ("T8..", "P8..")
    assert len(first["ignored_channels"]) == 45
    # 10 s sent; the 160 -> 256 Hz resampler holds back half its filter, so 4 windows are complete.
    assert sum(len(a.json()["windows"]) for a in answers) == 4
    assert {w["predicted"] for a in answers for w in a.json()["windows"]} <= {"seizure", "background"}
    # Bipolar input answers as before: nothing derived, the unused derivations ignored.
    assert bipolar.status_code == 201
    assert bipolar.json()["derived_channels"] == [] and bipolar.json()["missing_channels"] == []
    assert "T8-P8" in bipolar.json()["ignored_channels"]


def test_replay_plays_a_seizure_free_run_as_background(daemon) -> None:
    path = str(require(RUN))
    summary = last_json(run_biofo("replay", path, "--url", daemon.url, "--token", ADMIN_TOKEN,
                                  "--label-minutes", "0.5", "--json"))
    assert summary["modality"] == "eeg" and summary["patient_id"] == "S001"
    assert summary["windows"] == 30  # 61 s at 160 Hz; the resampler holds back the last half window
    # Windows starting before 30 s are labelled, all background (no seizure in eegmmidb).
    assert summary["labels"] == 15 and summary["updates"] == 15
    rest = summary["rest"]
    assert rest["seizure_windows"] == 0 and rest["background_windows"] == 15
    assert rest["sensitivity"] is None and rest["fp_per_24h"] is not None
    with daemon.client() as client:
        model = client.get("/v1/models/eeg/S001").json()
    assert model["updates_applied"] == 15
    assert eegmmidb.subject_of(path) == "S001" and not eegmmidb.is_task_run(path)


def test_readme_replay_of_a_task_run(daemon) -> None:
    """The README's command: a motor task run, no labels; its alarms are in the summary."""
    summary = last_json(run_biofo("replay", str(require("eeg-healthy/S003/S003R03.edf")),
                                  "--url", daemon.url, "--token", ADMIN_TOKEN,
                                  "--label-minutes", "0", "--json"))
    assert summary["patient_id"] == "S003" and summary["labels"] == 0
    assert summary["rest"]["background_windows"] == summary["windows"] == 62
    assert summary["rest"]["fp_per_24h"] >= 0.0
