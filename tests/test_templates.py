"""Beat templates on real MIT-BIH beats: online leader clustering by QRS morphology and RR, offline
and as the daemon keeps them from its stored windows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import app.templates
from app.store import Store, WindowRecord
from app.templates import TemplateBooks
from signals.aami import AAMI_CLASSES
from signals.ecg_features import EcgBeat, record_beats
from signals.mitbih import read_record
from signals.templates import THRESHOLD, TemplateClusterer, qrs_wave, rr_group


@pytest.fixture(scope="module")
def first_minutes_208() -> tuple[list[EcgBeat], np.ndarray]:
    record = read_record("208")
    first = record.beat_times_s < 300
    beats = [b for b, keep in zip(record_beats(record), first) if keep]
    return beats, record.beat_classes[first]


def _clustered(beats: list[EcgBeat], threshold: float = THRESHOLD) -> tuple[TemplateClusterer, list[int]]:
    clusterer = TemplateClusterer(threshold)
    assigned = [clusterer.add(k, qrs_wave(b.context, b.context_r_index), rr_group(b.features))
                for k, b in enumerate(beats)]
    return clusterer, assigned


def test_templates_of_208_are_few_and_pure(first_minutes_208) -> None:
    beats, classes = first_minutes_208
    clusterer, _ = _clustered(beats)
    assert sum(len(t.members) for t in clusterer.templates) == len(beats)
    # Within the workflow's budget (a key per template and one to apply, a tenth of the beats), and
    # almost every beat shares its template's majority class.
    assert len(clusterer.templates) + 1 <= len(beats) / 10
    majority = sum(Counter(int(classes[k]) for k in t.members).most_common(1)[0][1] for t in clusterer.templates)
    assert majority / len(beats) >= 0.98
    # Ventricular beats do not hide in normal templates.
    v = AAMI_CLASSES.index("V")
    in_v_templates = sum(
        sum(int(classes[k]) == v for k in t.members)
        for t in clusterer.templates
        if Counter(int(classes[k]) for k in t.members).most_common(1)[0][0] == v
    )
    assert in_v_templates / int(np.sum(classes == v)) >= 0.97


def test_clustering_is_online_and_deterministic(first_minutes_208) -> None:
    beats, _ = first_minutes_208
    whole, assigned = _clustered(beats)
    # Beat by beat, each assignment is final: later beats never move an earlier one.
    _, first_half = _clustered(beats[: len(beats) // 2])
    assert first_half == assigned[: len(beats) // 2]
    # A stricter threshold splits more.
    strict, _ = _clustered(beats, min(0.995, THRESHOLD + 0.02))
    assert len(strict.templates) > len(whole.templates)


def test_qrs_wave_ignores_baseline_and_gain(first_minutes_208) -> None:
    beat = first_minutes_208[0][10]
    wave = qrs_wave(beat.context, beat.context_r_index)
    # A slow baseline swing and another amplifier gain leave the correlation with the original near 1.
    t = np.arange(beat.context.shape[1]) / 360.0
    drifted = 1.7 * beat.context + 0.8 * np.sin(2 * np.pi * 0.3 * t)
    other = qrs_wave(drifted, beat.context_r_index)
    assert np.corrcoef(wave, other)[0, 1] > 0.99
    # At the very start of a stream (R 20 samples in) the window is padded to its full length.
    assert qrs_wave(beat.context[:, beat.context_r_index - 20 :], 20).shape == wave.shape


def test_premature_beats_form_their_own_templates() -> None:
    record = read_record("220")  # isolated SVEBs among normal beats
    groups = np.array([rr_group(b.features) for b in record_beats(record)])
    s, n = record.beat_classes == AAMI_CLASSES.index("S"), record.beat_classes == AAMI_CLASSES.index("N")
    assert np.mean(groups[s] == "premature") > 0.9 and np.mean(groups[n] == "premature") < 0.01


def _store_beats(store: Store, model, beats: list[EcgBeat]) -> list[int]:
    records = [WindowRecord(offset_s=b.offset_s, samples=b.context, marker=b.context_r_index, features=b.features,
                            predicted="N", probabilities={"N": 1.0}, model_version=0, latency_ms=0.0) for b in beats]
    return store.insert_windows(model, 360.0, ["MLII", "V1"], 0.0, records, {}, None)


def test_daemon_templates_follow_the_stored_beats(first_minutes_208, tmp_path: Path, monkeypatch) -> None:
    beats, _ = first_minutes_208
    clock = [0.0]
    store = Store(tmp_path / "t.db", clock=lambda: clock[0])
    model = store.create_model("ecg", "p208", "base", "biofo", b"fork", 0)
    monkeypatch.setattr(app.templates, "PAGE", 64)  # catching up reads many pages
    old = _store_beats(store, model, beats[:200])
    books = TemplateBooks(store)
    assert sum(len(t.members) for t in books.current(model.id).clusterer.templates) == len(old)
    clock[0] = 100.0
    new = _store_beats(store, model, beats[200:])
    # Retention drops the samples of the older beats: a fresh daemon (a restart) leaves them out.
    store.prune_unlabelled(0, received_before=50.0, limit=len(old), drop="samples")
    live = books.current(model.id)
    restarted = TemplateBooks(store).current(model.id)
    offline, _ = _clustered(beats)
    id_of = old + new
    assert [t.members for t in live.clusterer.templates] == [[id_of[k] for k in t.members] for t in offline.templates]
    kept, _ = _clustered(beats[200:])
    assert [t.members for t in restarted.clusterer.templates] == [[new[k] for k in t.members] for t in kept.templates]
    assert live.seen_through == restarted.seen_through == new[-1]
    store.close()
