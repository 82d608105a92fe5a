"""``biofo eval eeg``: seizure detection per patient on the staged CHB-MIT crops.

For each patient P:

1. a cross-patient base: a Bio-FO network (the bundled EEG recipe: 2 × 256, Adam 1e-3,
   class-balanced batches of 64) trained on the crop windows of every *other* patient;
2. leave-one-seizure-out: for each seizure s of P, a fork of that base learns the windows of P's
   other seizures (their ictal crop, then the crop 60 s later), one label at a time (batch 1),
   as a clinician would label them in the daemon, each learned exactly as the daemon learns a
   label (``models.adaptation.PATIENT_POLICY``, the policy ECG shares: the label's update plus
   class-balanced rehearsal of the patient's earlier labels); then it scores s's two crops;
3. alarms by the daemon's own rule (``app.alarms.ALARM_RULES["eeg"]``): a window is in alarm
   when it and the windows before it, two in all, are predicted seizure (the class the daemon
   stores, the most probable one). Nothing is tuned per patient: the daemon has no per-patient
   threshold, so the figures are what a ward gets.

Reported: seizures tested and detected (an alarm anywhere in the ictal crop), window sensitivity
(ictal windows in alarm), specificity on the post-ictal windows of the after-60 s crop, and the
latency from the annotated onset to the end of the first alarmed window (when the decision
exists).

False alarms (``fp_per_hour``, ``fp_per_24h``): the staged seizure-free EEG (eegmmidb, healthy
adults, ``bench.false_alarms``: the daemon's own extraction, SzCORE events) is streamed through
each patient's model after its labels (a fork of its base that learned all of the patient's
crops the same way), and through the same base with no
labels, both alarming by that same rule. Pooled = all alarms over all model-hours; the
bundled base every new patient's model forks from is scored on it too. When the patient's
continuous recordings are present (the full database under ``BIOFO_DATA``), each file is also
scored as a stream with SzCORE event scoring (``signals.scoring``: 30 s / 60 s tolerances, any
overlap, 300 s split, 90 s merge) by a fork that learned the crops of every other record, and
``recordings[patient]["fp_per_24h"]`` is the false alarms over all those hours.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.alarms import ALARM_RULES
from app.registry import fork
from bench import datasets, false_alarms, report
from bench.training import balanced_batches, single_thread, with_rule
from models.adaptation import PATIENT_POLICY
from signals.eeg_features import EEG_CLASSES, EEG_WINDOW_S, WindowTable

BASE_STEPS = 1400  # about 20 epochs of the other patients' windows at batch 64
ALARM_RULE = ALARM_RULES["eeg"]
ANCHOR = "Shoeb & Guttag 2010: 96 % of seizures, median latency 3 s, 2 FP / 24 h"
TARGETS = {"detected_fraction": 0.96, "median_latency_s": 3.0, "postictal_specificity": 0.97}
FP_PER_HOUR_TARGETS = {"base": 1.0, "after_labels": 0.2}  # seizure-free EEG, pooled


def base_for(table: WindowTable, patient: str, rule: str, steps: int) -> bytes:
    from models import checkpoint
    from models.factory import build_learner

    rows = table.patient != patient
    X, y = table.X[rows], table.y[rows]
    learner = build_learner({
        "input_dim": int(X.shape[1]), "classes": list(EEG_CLASSES), "hidden": [256, 256],
        "rule": rule, "seed": 0, "optimizer": {"name": "adam", "lr": 1e-3},
        "input_mean": X.mean(axis=0).astype(np.float32).tolist(),
        "input_std": (X.std(axis=0) + 1e-6).astype(np.float32).tolist(),
    })
    for batch in balanced_batches(y, 64, steps, np.random.default_rng(0)):
        learner.learn(X[batch], y[batch])
    learner.optimizer.lr = 3e-4  # the streaming rate every fork learns with
    return checkpoint.dumps(learner)


def alarms(probabilities: np.ndarray) -> np.ndarray:
    """Per-window alarm of one stream, by the daemon's rule."""
    return ALARM_RULE.in_alarm([EEG_CLASSES[i] for i in probabilities.argmax(axis=1)])


def _crop_alarms(probabilities: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """Each crop is a separate stream."""
    out = np.zeros(len(probabilities), dtype=bool)
    for key in dict.fromkeys(crops.tolist()):
        rows = crops == key
        out[rows] = alarms(probabilities[rows])
    return out


def _order(table: WindowTable, rows: np.ndarray) -> np.ndarray:
    """Rows by seizure, the ictal crop before the after-60 s crop, windows in time order."""
    index = np.flatnonzero(rows)
    keys = np.lexsort((table.offset_s[index], table.crop[index] != "seizure", table.seizure[index]))
    return index[keys]


def base_fork(blob: bytes, rule: str) -> Any:
    """A new patient's model as the daemon forks it; another rule keeps the base's weights."""
    learner = fork(blob, "torch")
    return learner if rule == learner.rule else with_rule(blob, rule)


def adapted_fork(blob: bytes, rule: str, table: WindowTable, rows: np.ndarray) -> Any:
    """A fork of the base that learned these windows one label at a time by the daemon's policy
    (a label's sequence number is its position, from 1, as in a new patient's model)."""
    learner = base_fork(blob, rule)
    X, y = table.X[rows], table.y[rows]
    for i in range(len(rows)):
        PATIENT_POLICY.learn(learner, X[i : i + 1], y[i : i + 1], i + 1, y[:i], lambda picks: X[picks])
    return learner


def evaluate_patient(
    table: WindowTable, patient: str, rule: str, blob: bytes
) -> list[dict[str, Any]]:
    mine = table.patient == patient
    seizures = list(dict.fromkeys(table.seizure[_order(table, mine)].tolist()))
    found = []
    for held in seizures:
        train_rows = _order(table, mine & (table.seizure != held))
        learner = adapted_fork(blob, rule, table, train_rows)
        test_rows = _order(table, mine & (table.seizure == held))
        alarm = _crop_alarms(learner.predict(table.X[test_rows]), _crop_keys(table, test_rows))
        y = table.y[test_rows]
        ictal_crop = table.crop[test_rows] == "seizure"
        postictal = (table.crop[test_rows] == "after60") & (y == 0)
        first = np.flatnonzero(alarm & ictal_crop)
        latency = float(table.offset_s[test_rows][first[0]] + EEG_WINDOW_S) if len(first) else None
        found.append({
            "seizure": int(held),
            "record": str(table.record[test_rows][0]),
            "detected": bool(len(first)),
            "latency_s": latency,
            "ictal_windows": int((y == 1).sum()),
            "ictal_alarmed": int((alarm & (y == 1)).sum()),
            "postictal_windows": int(postictal.sum()),
            "postictal_quiet": int((~alarm & postictal).sum()),
            "training_windows": len(train_rows),
        })
    return found


def full_recordings(patient: str) -> list[tuple[Path, Any]]:
    """The patient's continuous EDFs that are present, with their summary entries (PhysioNet
    layout ``chbmit/chbNN/chbNN-summary.txt``, or the summary beside the crops)."""
    from signals.chbmit import read_summary, summary_path
    from signals.datafiles import chbmit_dir

    for place in (chbmit_dir() / patient, chbmit_dir()):
        summary = summary_path(patient, place)
        if summary.exists():
            entries = read_summary(summary).files
            return [(place / e.name, e) for e in entries if (place / e.name).exists()]
    return []


def score_recordings(
    table: WindowTable, patient: str, rule: str, blob: bytes, files: list[tuple[Path, Any]]
) -> dict[str, Any]:
    """SzCORE event scores of whole recordings. The fork that scores a file learned the
    patient's crops of every other record (so a file's own seizures stay unseen)."""
    from signals.chbmit import edf_duration_s, sample_labels
    from signals.eeg_features import edf_windows
    from signals.scoring import event_scores, window_mask

    mine = table.patient == patient
    detected = seizures = false_positives = 0
    duration_s = 0.0
    latencies: list[float] = []
    for path, entry in files:
        learner = adapted_fork(blob, rule, table, _order(table, mine & (table.record != entry.record)))
        X, _ = edf_windows(path)
        alarm = alarms(learner.predict(X)) if len(X) else np.zeros(0, dtype=bool)
        length = edf_duration_s(path)
        reference = sample_labels(entry.seizures, round(length), 1.0).astype(bool)
        scores = event_scores(reference, window_mask(alarm, EEG_WINDOW_S, 1.0, length), 1.0)
        seizures += scores.seizures
        detected += scores.detected
        false_positives += scores.false_positives
        duration_s += scores.duration_s
        latencies += [v for v in scores.latencies_s if v is not None]
    return {
        "files": len(files),
        "hours": duration_s / 3600.0,
        "seizures": seizures,
        "detected": detected,
        "false_positives": false_positives,
        "fp_per_24h": false_positives / duration_s * 86400.0 if duration_s else None,
        "median_latency_s": float(np.median(latencies)) if latencies else None,
    }


def seizure_free(learner: Any, runs: list[false_alarms.SeizureFreeRun]) -> dict[str, Any]:
    """False alarms of one model over the seizure-free runs, each run a stream of its own."""
    flags = {run.name: alarms(learner.predict(run.features)) for run in runs}
    return false_alarms.summary(runs, flags)


def bundled_base_seizure_free(runs: list[false_alarms.SeizureFreeRun]) -> dict[str, Any]:
    """The daemon's bundled EEG base, as a new patient's model starts: no labels."""
    from app.base_models import load_bases

    base = load_bases()["eeg"]
    return {"model": base.name, **seizure_free(fork(base.checkpoint, "torch"), runs)}


def _crop_keys(table: WindowTable, rows: np.ndarray) -> np.ndarray:
    return np.char.add(table.seizure[rows].astype(str), table.crop[rows].astype(str))


def _summary(seizures: list[dict[str, Any]]) -> dict[str, Any]:
    ictal = sum(s["ictal_windows"] for s in seizures)
    postictal = sum(s["postictal_windows"] for s in seizures)
    latencies = [s["latency_s"] for s in seizures if s["latency_s"] is not None]
    return {
        "seizures": len(seizures),
        "detected": sum(s["detected"] for s in seizures),
        "window_sensitivity": sum(s["ictal_alarmed"] for s in seizures) / ictal if ictal else None,
        "postictal_specificity": (
            sum(s["postictal_quiet"] for s in seizures) / postictal if postictal else None
        ),
        "median_latency_s": float(np.median(latencies)) if latencies else None,
    }


def run(
    patient: str,
    rule: str = "biofo",
    out: str = "bench/results",
    progress: bool = False,
    base_steps: int = BASE_STEPS,
) -> dict[str, Any]:
    single_thread()
    started = time.perf_counter()
    table = datasets.crop_windows()
    known = sorted(set(table.patient.tolist()))
    patients = known if patient == "all" else [patient]
    if any(p not in known for p in patients):
        raise ValueError(f"no staged crops for {patient}; patients with crops: {', '.join(known)}")
    per_patient: dict[str, dict[str, Any]] = {}
    every: list[dict[str, Any]] = []
    recordings: dict[str, dict[str, Any]] = {}
    runs = false_alarms.staged_runs()
    for name in tqdm(patients, desc="eval eeg", disable=not progress):
        blob = base_for(table, name, rule, base_steps)
        found = evaluate_patient(table, name, rule, blob)
        labelled = adapted_fork(blob, rule, table, _order(table, table.patient == name))
        per_patient[name] = {
            **_summary(found),
            "seizure_free": {
                "after_labels": seizure_free(labelled, runs),
                "base": seizure_free(base_fork(blob, rule), runs),
            },
            "per_seizure": found,
        }
        every += found
        files = full_recordings(name)
        if files:
            recordings[name] = score_recordings(table, name, rule, blob, files)
    after = false_alarms.pooled([r["seizure_free"]["after_labels"] for r in per_patient.values()])
    base = false_alarms.pooled([r["seizure_free"]["base"] for r in per_patient.values()])
    result = {
        "patient": patient,
        "rule": rule,
        **_summary(every),
        "fp_per_hour": after["fp_per_hour"],
        "fp_per_24h": after["fp_per_24h"],
        "seizure_free_hours": sum(run.duration_s for run in runs) / 3600.0,
        "seizure_free": {
            "runs": [{"name": r.name, "task": r.task, "duration_s": r.duration_s} for r in runs],
            "after_labels": after,
            "base": base,
            "bundled_base": bundled_base_seizure_free(runs),
            "targets_fp_per_hour": FP_PER_HOUR_TARGETS,
            # What the models learned as background (post-ictal crops) against what they stream here.
            "spectra": {
                "chbmit_background": false_alarms.band_profile(table.X[table.y == 0]),
                "chbmit_seizure": false_alarms.band_profile(table.X[table.y == 1]),
                "seizure_free": false_alarms.band_profile(np.concatenate([r.features for r in runs])),
            },
        },
        "recordings": recordings,
        "data": "staged crops (ictal crop + crop 60 s later); seizure-free eegmmidb runs",
        "anchor": ANCHOR,
        "patients": per_patient,
        "base_steps": base_steps,
        "adaptation": {"policy": type(PATIENT_POLICY).__name__, **asdict(PATIENT_POLICY)},
        "alarm_rule": {"source": "app.alarms.ALARM_RULES", "cls": ALARM_RULE.cls, "min_run": ALARM_RULE.min_run},
        "run_s": time.perf_counter() - started,
    }
    folder = Path(out)
    stem = f"eeg-{patient}-{rule}"
    report.write_outputs(folder, stem, _markdown(result), result)
    if len(per_patient) > 1:
        _plot(folder / f"{stem}-patients.png", per_patient)
    return result


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _markdown(result: dict[str, Any]) -> str:
    detected = result["detected"] / result["seizures"] if result["seizures"] else None
    latency = result["median_latency_s"]
    checks = [
        ("seizures detected", detected, TARGETS["detected_fraction"], True),
        ("post-ictal specificity", result["postictal_specificity"],
         TARGETS["postictal_specificity"], True),
        ("median latency (s)", latency, TARGETS["median_latency_s"], False),
    ]
    lines = [
        f"# EEG seizure detection, {result['patient']}, rule {result['rule']}",
        "",
        (
            f"Data: {result['data']}. Cross-patient Bio-FO base per patient ({result['base_steps']} "
            f"balanced batches of 64 on the other patients), then leave-one-seizure-out, one label "
            f"at a time, learned by the daemon's policy {result['adaptation']['policy']} (one update "
            f"each plus {result['adaptation']['rehearse']} class-balanced rehearsal updates on "
            f"earlier labels). Alarms by the daemon's rule: {result['alarm_rule']['min_run']} consecutive windows "
            f"predicted seizure, no per-patient threshold. Anchor: {result['anchor']}. "
            f"Wall time: {result['run_s']:.0f} s."
        ),
        "",
        report.markdown_table(
            ["seizures", "detected", "window Se", "post-ictal Sp", "median latency s", "FP/24 h"],
            [[result["seizures"], result["detected"], _pct(result["window_sensitivity"]),
              _pct(result["postictal_specificity"]), latency, _rate(result["fp_per_24h"])]],
        ),
        "",
        "Targets: " + "; ".join(
            f"{name} {'≥' if higher else '≤'} {goal:g}: "
            + ("n/a" if value is None else "met" if (value >= goal if higher else value <= goal)
               else "missed")
            for name, value, goal, higher in checks),
        "",
        report.markdown_table(
            ["patient", "seizures", "detected", "window Se", "post-ictal Sp", "median latency s"],
            [[name, r["seizures"], r["detected"], _pct(r["window_sensitivity"]),
              _pct(r["postictal_specificity"]), r["median_latency_s"]]
             for name, r in result["patients"].items()],
        ),
        "",
        *_false_alarm_lines(result),
    ]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _false_alarm_lines(result: dict[str, Any]) -> list[str]:
    free = result["seizure_free"]
    targets = free["targets_fp_per_hour"]
    models = [("after the patient's labels", free["after_labels"], targets["after_labels"]),
              ("cross-patient base, no labels", free["base"], targets["base"]),
              (f"bundled base ({free['bundled_base']['model']})", free["bundled_base"], None)]
    task = {run["name"] for run in free["runs"] if run["task"]}
    rows = []
    for name, part, goal in models:
        in_task = sum(n for run, n in part["runs_with_alarms"].items() if run in task)
        verdict = ("" if goal is None or part["fp_per_hour"] is None
                   else "met" if part["fp_per_hour"] <= goal else "missed")
        rows.append([name, part["false_alarms"], f"{part['hours']:.2f}", _rate(part["fp_per_hour"]),
                     _rate(part["fp_per_24h"]), "–" if goal is None else f"≤ {goal:g} {verdict}",
                     f"{part['alarm_windows']} / {part['windows']}", in_task,
                     ", ".join(f"{k} ({v})" for k, v in part["runs_with_alarms"].items()) or "none"])
    return [
        (f"## False alarms on seizure-free EEG ({result['seizure_free_hours']:.2f} h of eegmmidb, "
         f"{len(free['runs'])} runs, {sum(r['task'] for r in free['runs'])} of them motor task runs)"),
        "",
        ("SzCORE events over the seizure-free runs, streamed through the daemon's extraction; "
         "model-hours are the seizure-free hours times the models streamed (one per patient). "
         "Task runs (R03: fist clenching on cue) carry movement, blink and muscle artefacts; the "
         "others are resting baselines. With events closer than 90 s merged, a 1-minute run can "
         "hold at most one false alarm and a 2-minute run two."),
        "",
        report.markdown_table(
            ["model", "false alarms", "model-hours", "FA/h", "FA/24 h", "target FA/h",
             "windows in alarm", "alarms in task runs", "runs with alarms (alarms)"], rows),
        "",
        report.markdown_table(
            ["patient", "FA after labels", "FA/h after labels", "FA base", "FA/h base"],
            [[name, r["seizure_free"]["after_labels"]["false_alarms"],
              _rate(r["seizure_free"]["after_labels"]["fp_per_hour"]),
              r["seizure_free"]["base"]["false_alarms"], _rate(r["seizure_free"]["base"]["fp_per_hour"])]
             for name, r in result["patients"].items()],
        ),
        "",
        ("Mean spectrum over all channels (log band power, and its shape: each window's log powers "
         "minus their mean over the bands). The models' only background is post-ictal CHB-MIT EEG."),
        "",
        report.markdown_table(
            ["windows", "n", "spectrum",
             *[f"{lo:g}–{hi:g} Hz" for lo, hi in free["spectra"]["seizure_free"]["bands_hz"]]],
            [[label, profile["windows"], kind, *[f"{v:.2f}" for v in profile[kind]]]
             for label, profile in (("CHB-MIT background (post-ictal)", free["spectra"]["chbmit_background"]),
                                    ("CHB-MIT seizure", free["spectra"]["chbmit_seizure"]),
                                    ("seizure-free eegmmidb", free["spectra"]["seizure_free"]))
             for kind in ("log_power", "relative")],
        ),
    ]


def _plot(path: Path, per_patient: dict[str, dict[str, Any]]) -> None:
    import matplotlib.pyplot as plt

    names = list(per_patient)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for shift, key, label in ((-0.25, "window_sensitivity", "window Se"),
                              (0.0, "postictal_specificity", "post-ictal Sp")):
        ax.bar(x + shift, [per_patient[n][key] or 0 for n in names], width=0.25, label=label)
    ax.bar(x + 0.25, [per_patient[n]["detected"] / per_patient[n]["seizures"] for n in names],
           width=0.25, label="seizures detected")
    ax.set_xticks(x, names, rotation=60, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.set_title("EEG per patient (leave-one-seizure-out on the staged crops)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    report.save_figure(fig, path)
