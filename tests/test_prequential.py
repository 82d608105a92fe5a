"""Prequential accuracy kept incrementally by the daemon equals the figure recomputed from the
database, through labels, relabels and undos of real beats, and again after a restart."""

from __future__ import annotations

import sqlite3
from collections import Counter

from app.prequential import PrequentialTally
from signals.replay import ecg_reference, ecg_requests
from tests.conftest import Daemon, start_daemon

PATIENT = "bed-pq"


def _from_database(db) -> tuple[int, int, Counter]:
    """(labelled windows, correct, labels per class) from the rows: first prediction vs label in force."""
    with sqlite3.connect(db) as conn:
        pairs = conn.execute(
            "SELECT p.class, (SELECT l.label FROM labels l WHERE l.window_id = w.id"
            "  AND l.id NOT IN (SELECT label_id FROM retractions) ORDER BY l.id DESC LIMIT 1) AS label"
            " FROM windows w JOIN predictions p ON p.window_id = w.id WHERE w.patient_id = ?",
            (PATIENT,),
        ).fetchall()
    labelled = [(predicted, label) for predicted, label in pairs if label is not None]
    return len(labelled), sum(p == label for p, label in labelled), Counter(label for _, label in labelled)


def _check(daemon: Daemon, expected_n: int) -> dict:
    with daemon.client() as client:
        figures = client.model("ecg", PATIENT)["prequential"]
    n, correct, per_class = _from_database(daemon.db)
    assert figures["n"] == n == expected_n
    assert figures["accuracy"] == correct / n
    assert {c: v["n"] for c, v in figures["per_class"].items() if v["n"]} == dict(per_class)
    assert sum(v["correct"] for v in figures["per_class"].values()) == correct
    return figures


def test_tally_follows_labels_relabels_and_undo_and_survives_a_restart(daemon: Daemon) -> None:
    reference = ecg_reference("208")
    with daemon.client() as client:
        windows = [w for body in ecg_requests("208", minutes=1.0, patient_id=PATIENT)
                   for w in client.post_segment(body)]
        truth = [(w, reference.label_at(w["offset_s"])) for w in windows]
        truth = [(w, label) for w, label in truth if label is not None][:30]
        first = client.post_labels([{"window_id": w["id"], "label": label, "labeled_by": "dr a"}
                                    for w, label in truth])
        # Five beats relabelled with a class they are not; then two undos: one of a relabel (the
        # window's first label is in force again) and one of a window's only label (it leaves the tally).
        wrong = {"N": "V", "V": "N", "S": "N", "F": "N", "Q": "N"}
        second = client.post_labels([{"window_id": w["id"], "label": wrong[label], "labeled_by": "dr b"}
                                     for w, label in truth[:5]])
        client.wait_applied("ecg", PATIENT, second.update_seq)
        undone_relabel = client.post(f"/v1/labels/{second.update_seq}/undo")
        assert undone_relabel.status_code == 200 and undone_relabel.json()["window_label"] == truth[4][1]
        only_label = first.update_seq
        undone_only = client.post(f"/v1/labels/{only_label}/undo")
        assert undone_only.status_code == 200 and undone_only.json()["window_label"] is None
    before = _check(daemon, expected_n=29)
    assert daemon.stop() == 0
    restarted = start_daemon(daemon.db, daemon.log)
    try:
        assert _check(restarted, expected_n=29) == before
    finally:
        restarted.close()


def test_tally_unit() -> None:
    tally = PrequentialTally(("N", "S", "V"))
    assert tally.accuracy is None and tally.n == 0
    tally.update(1, "V", "N")
    tally.update(2, "N", "N")
    tally.update(1, "V", "V")  # relabel of window 1 to the same class with another prediction
    assert tally.summary() == {"accuracy": 1.0, "n": 2, "per_class": {
        "N": {"n": 1, "correct": 1, "predicted": 1}, "S": {"n": 0, "correct": 0, "predicted": 0},
        "V": {"n": 1, "correct": 1, "predicted": 1}}}
    tally.revert(2)
    tally.revert(2)  # a window without a label in force: nothing to take away
    assert (tally.n, tally.accuracy) == (1, 1.0)
