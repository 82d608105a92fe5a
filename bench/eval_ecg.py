"""``biofo eval ecg``: the MIT-BIH protocols, run the way the daemon learns.

Beats sit at the reference R peaks (the detector's own Se/+P is ``biofo bench qrs``); features
are the daemon's (``signals.ecg_features``). Protocols:

- ``inter-patient`` (de Chazal 2004): the bundled base (``models/pretrained/ecg.biofo``, trained
  on DS1 only) scores every beat of each DS2 record; no label is used;
- ``hybrid``: each DS2 record gets a fork of the bundled base, which then learns the record's
  beats of the first 5 minutes one label at a time (batch 1, in time order: the clinician
  labelling the start of the stream), with the fork's streaming optimizer; the rest is scored;
- ``patient-specific`` (Kiranyaz 2016): as hybrid, but the fork comes from a base trained only
  on a small common set (``COMMON_SET``: up to 75 N, 75 S, 75 V, 13 F and 7 Q beats, drawn from
  the first 5 minutes of the first 20 non-paced 100-series records, so no test beat is in it),
  for all 44 non-paced records.

Scoring follows EC57: reference beats matched one to one within 150 ms (with reference R peaks
every beat matches itself), the first 5 minutes not scored in patient-specific and hybrid
(inter-patient scores whole records, as de Chazal did), gross Se and +P for VEB (class V) and
SVEB (class S) over all scored beats of all records, plus accuracy and macro-F1 over the classes
present; ``macro_f1_nsvf`` leaves out the Q row and column (7 Q beats in all of DS2), as most
published tables do. The label-efficiency curve scores the same rest-of-record beats after the
first 0, 10, 30, 100 and 300 labels of each record (fewer when its first 5 minutes hold fewer
beats).

What a fork does with the labels is the daemon's own adaptation policy,
``models.adaptation.PATIENT_POLICY`` (one update per label plus class-balanced rehearsal of the
record's earlier labels), called the same way the daemon's ``Registry`` calls it; the fork is the
daemon's ``app.registry.fork``. Nothing here learns in a way the daemon does not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.engine import Engine
from app.registry import fork
from bench import datasets, report
from bench.training import balanced_batches, single_thread, with_rule
from models.adaptation import PATIENT_POLICY
from models.learner import Learner
from signals.aami import AAMI_CLASSES
from signals.mitbih import DS2, NON_PACED, PATIENT_WINDOW_S
from signals import classification

LABEL_COUNTS = (0, 10, 30, 100, 300)
V, S = AAMI_CLASSES.index("V"), AAMI_CLASSES.index("S")

ANCHORS = {
    "inter-patient": "de Chazal 2004: SVEB Se 76 / +P 38, VEB Se 77 / +P 82",
    "patient-specific": "Kiranyaz 2016: VEB Se 95.0 / PPV 89.5, SVEB Se 64.6 / PPV 62.1",
    "hybrid": "DS1 global + first 5 min of each DS2 record, fine-tuned MLP: macro-F1 0.869",
}
HYBRID_TARGETS = {"VEB": (0.96, 0.95), "SVEB": (0.80, 0.75)}


@dataclass(frozen=True)
class CommonSet:
    records: tuple[str, ...] = tuple(name for name in NON_PACED if name.startswith("1"))[:20]
    per_class: tuple[int, ...] = (75, 75, 75, 13, 7)  # N, S, V, F, Q
    hidden: tuple[int, ...] = (256, 256)
    steps: int = 400
    batch: int = 32
    lr: float = 1e-3
    streaming_lr: float = 3e-4


COMMON_SET = CommonSet()


def default_records(protocol: str) -> list[str]:
    return list(NON_PACED) if protocol == "patient-specific" else list(DS2)


def bundled_base() -> bytes:
    from app.base_models import base_path

    return base_path("ecg").read_bytes()


def common_set_base() -> bytes:
    """A Bio-FO base trained on the Kiranyaz-style common set only (balanced batches)."""
    from models import checkpoint
    from models.factory import build_learner

    rng = np.random.default_rng(0)
    X_parts, y_parts = [], []
    pool = datasets.beats_of(COMMON_SET.records)
    early = pool.time_s < PATIENT_WINDOW_S
    for index, count in enumerate(COMMON_SET.per_class):
        rows = np.flatnonzero(early & (pool.y == index))
        chosen = rng.choice(rows, size=min(count, len(rows)), replace=False)
        X_parts.append(pool.X[chosen])
        y_parts.append(pool.y[chosen])
    X, y = np.concatenate(X_parts), np.concatenate(y_parts)
    learner = build_learner({
        "input_dim": int(X.shape[1]), "classes": list(AAMI_CLASSES),
        "hidden": list(COMMON_SET.hidden), "rule": "biofo", "seed": 0,
        "optimizer": {"name": "adam", "lr": COMMON_SET.lr},
        "input_mean": X.mean(axis=0).astype(np.float32).tolist(),
        "input_std": (X.std(axis=0) + 1e-6).astype(np.float32).tolist(),
    })
    for batch in balanced_batches(y, COMMON_SET.batch, COMMON_SET.steps, rng):
        learner.learn(X[batch], y[batch])
    learner.optimizer.lr = COMMON_SET.streaming_lr
    return checkpoint.dumps(learner)


def predict(learner: Engine | Learner, X: np.ndarray) -> np.ndarray:
    return np.argmax(learner.predict(X), axis=1) if len(X) else np.zeros(0, dtype=np.int64)


def adapt(learner: Engine | Learner, X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> dict[int, np.ndarray]:
    """Learn the labelled beats one at a time, in order, by the daemon's policy (a label's sequence
    number is its position in the record, from 1); predictions on the test beats after each count
    in ``LABEL_COUNTS`` and after the last label."""
    snapshots = {0: predict(learner, X_test)}
    for i in range(len(y)):
        PATIENT_POLICY.learn(learner, X[i : i + 1], y[i : i + 1], i + 1, y[:i], lambda picks: X[picks])
        if i + 1 in LABEL_COUNTS:
            snapshots[i + 1] = predict(learner, X_test)
    snapshots[len(y)] = predict(learner, X_test)
    return snapshots


def _ec57(matrix: np.ndarray) -> dict[str, Any]:
    scores = classification.scores_from_confusion(matrix, AAMI_CLASSES)
    per_class = scores["per_class"]
    nsvf = classification.scores_from_confusion(matrix[:4, :4], AAMI_CLASSES[:4])
    return {
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "macro_f1_nsvf": nsvf["macro_f1"],
        "VEB": {"se": per_class["V"]["se"], "ppv": per_class["V"]["ppv"]},
        "SVEB": {"se": per_class["S"]["se"], "ppv": per_class["S"]["ppv"]},
    }


def run(
    protocol: str,
    rule: str = "biofo",
    records: list[str] | None = None,
    out: str = "bench/results",
    progress: bool = False,
) -> dict[str, Any]:
    single_thread()
    started = time.perf_counter()
    names = list(records) if records else default_records(protocol)
    blob = common_set_base() if protocol == "patient-specific" else bundled_base()
    total = np.zeros((len(AAMI_CLASSES),) * 2, dtype=np.int64)
    curve = {n: np.zeros_like(total) for n in LABEL_COUNTS}
    per_record: dict[str, dict[str, Any]] = {}
    labels_used = 0
    for name in tqdm(names, desc=f"eval ecg {protocol}", disable=not progress):
        table = datasets.beats(name)
        learner = fork(blob, "torch")
        if rule != learner.rule:
            learner = with_rule(blob, rule)
        if protocol == "inter-patient":
            labelled = np.zeros(len(table.y), dtype=bool)
            scored = np.ones(len(table.y), dtype=bool)
        else:
            labelled = table.time_s < PATIENT_WINDOW_S
            scored = ~labelled
        snapshots = adapt(learner, table.X[labelled], table.y[labelled], table.X[scored])
        labels_used += int(labelled.sum())
        y_test = table.y[scored]
        final = classification.confusion(y_test, snapshots[int(labelled.sum())], len(AAMI_CLASSES))
        total += final
        for n in LABEL_COUNTS:
            # A record with fewer labelled beats than n contributes its last snapshot.
            key = max(k for k in snapshots if k <= n)
            curve[n] += classification.confusion(y_test, snapshots[key], len(AAMI_CLASSES))
        per_record[name] = {"labels": int(labelled.sum()), "scored": int(scored.sum()),
                            **_ec57(final)}
    figures = _ec57(total)
    result: dict[str, Any] = {
        "protocol": protocol,
        "rule": rule,
        "records": names,
        **figures,
        "beats_scored": int(total.sum()),
        "labels": labels_used,
        "confusion": total.tolist(),
        "label_curve": (
            {str(n): _ec57(m) for n, m in curve.items()} if protocol != "inter-patient" else {}
        ),
        "adaptation": {"policy": type(PATIENT_POLICY).__name__, **asdict(PATIENT_POLICY)},
        "anchor": ANCHORS[protocol],
        "per_record": per_record,
        "beat_positions": "reference R peaks",
        "run_s": time.perf_counter() - started,
    }
    write_report(Path(out), result)
    return result


def write_report(folder: Path, result: dict[str, Any]) -> None:
    """The Markdown, JSON and plots of a result (a pure function of it)."""
    protocol, rule = result["protocol"], result["rule"]
    stem = f"ecg-{protocol}-{rule}"
    report.write_outputs(folder, stem, _markdown(result), result)
    report.plot_confusion(np.asarray(result["confusion"]), AAMI_CLASSES,
                          f"ECG {protocol}, {rule}: scored beats", folder / f"{stem}-confusion.png")
    if result["label_curve"]:
        lc = result["label_curve"]
        counts = [int(n) for n in lc]
        report.plot_lines(
            {"accuracy": (counts, [lc[str(n)]["accuracy"] for n in counts]),
             "macro-F1 (N, S, V, F)": (counts, [lc[str(n)]["macro_f1_nsvf"] for n in counts]),
             "VEB Se": (counts, [lc[str(n)]["VEB"]["se"] for n in counts]),
             "SVEB Se": (counts, [lc[str(n)]["SVEB"]["se"] for n in counts])},
            "labelled beats at the start of each record", "score on the rest of the record",
            f"ECG {protocol}, {rule}: label efficiency ({len(result['records'])} records)",
            folder / f"{stem}-label-curve.png", xlog=True,
        )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _markdown(result: dict[str, Any]) -> str:
    protocol = result["protocol"]
    lines = [
        f"# ECG, {protocol} protocol, rule {result['rule']}",
        "",
        f"Records ({len(result['records'])}): {', '.join(result['records'])}. Beats at the "
        f"reference R peaks; {result['beats_scored']} beats scored; " + (
            f"{result['labels']} labels used, learned by the daemon's policy "
            f"{result['adaptation']['policy']} (one update each, batch 1, plus "
            f"{result['adaptation']['rehearse']} class-balanced rehearsal updates on earlier labels)"
            if result["labels"] else "no labels used"
        ) + f". Anchor: {result['anchor']}. Wall time: {result['run_s']:.0f} s.",
        "",
        report.markdown_table(
            ["accuracy", "macro-F1", "macro-F1 (N,S,V,F)", "VEB Se", "VEB +P", "SVEB Se",
             "SVEB +P"],
            [[_fmt(result["accuracy"]), f"{result['macro_f1']:.3f}",
              f"{result['macro_f1_nsvf']:.3f}",
              _fmt(result["VEB"]["se"]), _fmt(result["VEB"]["ppv"]),
              _fmt(result["SVEB"]["se"]), _fmt(result["SVEB"]["ppv"])]],
        ),
    ]
    if protocol == "hybrid":
        lines += ["", "Targets (hybrid): " + "; ".join(
            f"{k} Se ≥ {100 * se:.0f} ({'met' if (result[k]['se'] or 0) >= se else 'missed'}), "
            f"+P ≥ {100 * ppv:.0f} ({'met' if (result[k]['ppv'] or 0) >= ppv else 'missed'})"
            for k, (se, ppv) in HYBRID_TARGETS.items())]
    if result["label_curve"]:
        lc = result["label_curve"]
        lines += ["", "Label efficiency (score on the rest of each record):", "",
                  report.markdown_table(
                      ["labels", "accuracy", "macro-F1", "macro-F1 (N,S,V,F)", "VEB Se",
                       "VEB +P", "SVEB Se", "SVEB +P"],
                      [[n, _fmt(v["accuracy"]), f"{v['macro_f1']:.3f}",
                        f"{v['macro_f1_nsvf']:.3f}", _fmt(v["VEB"]["se"]),
                        _fmt(v["VEB"]["ppv"]), _fmt(v["SVEB"]["se"]), _fmt(v["SVEB"]["ppv"])]
                       for n, v in lc.items()])]
    lines += ["", "Per record:", "", report.markdown_table(
        ["record", "labels", "scored", "accuracy", "VEB Se", "VEB +P", "SVEB Se", "SVEB +P"],
        [[name, r["labels"], r["scored"], _fmt(r["accuracy"]), _fmt(r["VEB"]["se"]),
          _fmt(r["VEB"]["ppv"]), _fmt(r["SVEB"]["se"]), _fmt(r["SVEB"]["ppv"])]
         for name, r in result["per_record"].items()])]
    return "\n".join(lines)
