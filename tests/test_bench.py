"""The benchmark commands on small subsets of the real data: keys of cli.md and sane values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from bench import eval_ecg, eval_eeg, update
from bench.rules import RULE_NAMES
from models.rules import RULES

torch.set_num_threads(1)

RULE_KEYS = {"accuracy", "macro_f1", "train_s", "joules", "energy_source", "peak_mem_mib",
             "time_to_target_s"}


def _fraction(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("dataset", ["mitbih", "chbmit"])
def test_bench_rules_quick(dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "rules", "--dataset", dataset, "--quick", "--out", str(tmp_path),
                 "--json"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["dataset"] == dataset
    expected = [name for name in RULE_NAMES if name in RULES]
    assert list(result["rules"]) == expected
    for name, figures in result["rules"].items():
        assert RULE_KEYS <= set(figures), name
        assert _fraction(figures["accuracy"]) and _fraction(figures["macro_f1"]), name
        assert figures["train_s"] > 0 and figures["joules"] > 0 and figures["peak_mem_mib"] > 0
        assert figures["energy_source"] == result["rules"]["biofo"]["energy_source"]
        ttt = figures["time_to_target_s"]
        assert ttt is None or 0 <= ttt <= figures["train_cpu_s"] + 1e-9
    # BP defines the target, so BP always reaches it.
    assert result["rules"]["bp"]["time_to_target_s"] is not None
    assert (tmp_path / f"rules-{dataset}-quick.md").read_text().count("| biofo |") == 1
    assert (tmp_path / f"rules-{dataset}-quick-accuracy-energy.png").stat().st_size > 0


def test_bench_update(tmp_path: Path) -> None:
    result = update.run(out=str(tmp_path), repeats=10, depths=(2, 5))
    for name in ("biofo", "bp", "drtp"):
        figures = result["rules"][name]
        assert figures["update_over_forward"] > 1.0
        assert figures["macs_update_over_forward"] > 1.0
    # Bio-FO's step needs no transport products: fewer MACs than BP's.
    assert result["rules"]["biofo"]["macs_update"] < result["rules"]["bp"]["macs_update"]
    memory = result["peak_mem_mib"]
    assert set(memory) == {"biofo", "bp"} and set(memory["biofo"]) == {2, 5}
    # Bio-FO's working memory does not grow with depth; BP's does at batch 64.
    assert memory["biofo"][5] == pytest.approx(memory["biofo"][2], rel=0.01)
    batch64 = result["peak_mem_mib_batch64"]
    assert batch64["bp"][5] > batch64["bp"][2]


def test_eval_ecg_hybrid_one_record(tmp_path: Path) -> None:
    result = eval_ecg.run("hybrid", records=["233"], out=str(tmp_path))
    assert result["protocol"] == "hybrid" and result["records"] == ["233"]
    for key in ("VEB", "SVEB"):
        assert set(result[key]) == {"se", "ppv"}
    assert _fraction(result["accuracy"]) and _fraction(result["macro_f1"])
    # 233 has hundreds of V beats after minute 5; the adapted fork finds most of them.
    assert result["VEB"]["se"] > 0.8
    assert result["labels"] > 300 and result["beats_scored"] > 2000
    assert set(result["label_curve"]) == {"0", "10", "30", "100", "300"}


def test_eval_eeg_one_patient(tmp_path: Path) -> None:
    result = eval_eeg.run("chb02", out=str(tmp_path), base_steps=150)
    assert result["patient"] == "chb02"
    assert result["seizures"] == 3 and 0 <= result["detected"] <= 3
    assert _fraction(result["window_sensitivity"]) and _fraction(result["postictal_specificity"])
    # False alarms come from the staged seizure-free EEG (17 eegmmidb runs, about 31 minutes).
    assert result["seizure_free_hours"] == pytest.approx(0.513, abs=0.01)
    assert len(result["seizure_free"]["runs"]) == 17
    assert result["fp_per_24h"] == pytest.approx(result["fp_per_hour"] * 24.0)
    mine = result["patients"]["chb02"]["seizure_free"]
    assert result["seizure_free"]["after_labels"]["false_alarms"] == mine["after_labels"]["false_alarms"]
    for part in (mine["after_labels"], mine["base"], result["seizure_free"]["bundled_base"]):
        assert part["hours"] == pytest.approx(result["seizure_free_hours"])
        assert sum(part["runs_with_alarms"].values()) == part["false_alarms"] >= 0
        assert part["windows"] == 915 and 0 <= part["alarm_windows"] <= 915
    latency = result["median_latency_s"]
    assert latency is None or latency >= 2.0  # a decision exists only at a window's end
    assert result["alarm_rule"] == {"source": "app.alarms.ALARM_RULES", "cls": "seizure", "min_run": 2}
    spectra = result["seizure_free"]["spectra"]
    assert spectra["seizure_free"]["windows"] == 915
    assert spectra["chbmit_background"]["windows"] + spectra["chbmit_seizure"]["windows"] == 4602
    for profile in spectra.values():
        assert len(profile["log_power"]) == len(profile["relative"]) == 8
        assert sum(profile["relative"]) == pytest.approx(0.0, abs=0.01)  # a shape: its mean removed


def test_eval_eeg_alarms_as_the_daemon_raises_them() -> None:
    from app.alarms import ALARM_RULES

    p_seizure = np.array([0.8, 0.1, 0.7, 0.6, 0.55, 0.4, 0.9])
    alarm = eval_eeg.alarms(np.stack([1 - p_seizure, p_seizure], axis=1))
    # One window predicted seizure is no alarm; the second of a run raises it, as app.alarms does.
    assert alarm.tolist() == [False, False, False, True, True, False, False]
    assert eval_eeg.ALARM_RULE is ALARM_RULES["eeg"] and ALARM_RULES["eeg"].min_run == 2


def test_seizure_free_run_streams_as_offline_and_alarms_are_szcore_events() -> None:
    from bench import false_alarms
    from signals.datafiles import require
    from signals.eeg_features import edf_windows

    path = require("eeg-healthy/S002/S002R03.edf")
    run = false_alarms.stream_run(path)
    assert run.name == "S002R03" and run.task and run.duration_s == 123.0
    offline, _ = edf_windows(path)  # the daemon's 2 s segments give the whole file's features
    assert np.array_equal(run.features, offline[: len(run.features)])
    flags = np.zeros(len(run.features), dtype=bool)
    assert false_alarms.count(run, flags) == 0
    assert false_alarms.count(run, ~flags) == 1  # one event: shorter than the 300 s split
    flags[[5, 35]] = True  # 60 s apart: merged (< 90 s)
    assert false_alarms.count(run, flags) == 1
    flags[[35, 55]] = [False, True]  # 100 s apart: two alarms
    assert false_alarms.count(run, flags) == 2
    result = false_alarms.summary([run], {run.name: flags})
    assert result["runs_with_alarms"] == {"S002R03": 2} and result["alarm_windows"] == 2
    assert result["fp_per_hour"] == pytest.approx(2 / (123.0 / 3600.0))


def test_eeg_recording_scoring_on_a_real_crop() -> None:
    """The continuous-recording path (SzCORE events, FP per 24 h) on a real EDF: a seizure crop
    of chb02 stands in for a recording whose seizure spans the whole file."""
    from bench.datasets import crop_windows
    from signals.chbmit import SummaryFile, read_crops

    row = next(r for r in read_crops() if r.patient == "chb02")
    entry = SummaryFile(f"{row.record}.edf", None, None, row.ictal_intervals("seizure"), ())
    table = crop_windows()
    blob = eval_eeg.base_for(table, "chb02", "biofo", 150)
    scores = eval_eeg.score_recordings(table, "chb02", "biofo", blob, [(row.seizure_file, entry)])
    assert scores["files"] == 1 and scores["seizures"] == 1
    assert scores["hours"] == pytest.approx(row.seizure_s / 3600.0, rel=0.01)
    assert scores["detected"] in (0, 1) and scores["fp_per_24h"] >= 0.0
