"""Beat templates on real MIT-BIH beats: online leader clustering by morphology and RR."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from signals.aami import AAMI_CLASSES
from signals.ecg_features import beat_table
from signals.templates import THRESHOLD, TemplateClusterer, rr_group


@pytest.fixture(scope="module")
def first_minutes_208():
    table = beat_table("208")
    rows = np.flatnonzero(table.time_s < 300)
    return table, rows


def test_templates_of_208_are_few_and_pure(first_minutes_208) -> None:
    table, rows = first_minutes_208
    clusterer = TemplateClusterer()
    for i in rows:
        clusterer.add(int(i), table.X[i])
    assert sum(len(t.members) for t in clusterer.templates) == len(rows)
    # Far fewer templates than beats, and almost every beat shares its template's majority class.
    assert len(clusterer.templates) <= len(rows) / 10
    majority = sum(Counter(int(table.y[i]) for i in t.members).most_common(1)[0][1] for t in clusterer.templates)
    assert majority / len(rows) >= 0.95
    # Ventricular beats do not hide in normal templates.
    v = AAMI_CLASSES.index("V")
    in_v_templates = sum(
        sum(int(table.y[i]) == v for i in t.members)
        for t in clusterer.templates
        if Counter(int(table.y[i]) for i in t.members).most_common(1)[0][0] == v
    )
    assert in_v_templates / int(np.sum(table.y[rows] == v)) >= 0.95


def test_clustering_is_online_and_deterministic(first_minutes_208) -> None:
    table, rows = first_minutes_208
    whole, stepwise = TemplateClusterer(), TemplateClusterer()
    assigned = [whole.add(int(i), table.X[i]) for i in rows]
    # Beat by beat, each assignment is final: later beats never move an earlier one.
    for k, i in enumerate(rows):
        assert stepwise.add(int(i), table.X[i]) == assigned[k]
    assert [t.members for t in stepwise.templates] == [t.members for t in whole.templates]
    # A stricter threshold splits more.
    strict = TemplateClusterer(min(0.99, THRESHOLD + 0.05))
    for i in rows:
        strict.add(int(i), table.X[i])
    assert len(strict.templates) > len(whole.templates)


def test_premature_beats_form_their_own_templates() -> None:
    table = beat_table("220")  # isolated SVEBs among normal beats
    s = AAMI_CLASSES.index("S")
    groups = [rr_group(table.X[i]) for i in range(len(table.y))]
    premature_s = sum(g == "premature" for g, y in zip(groups, table.y) if y == s) / int(np.sum(table.y == s))
    premature_n = sum(g == "premature" for g, y in zip(groups, table.y) if y == 0) / int(np.sum(table.y == 0))
    assert premature_s > 0.9 and premature_n < 0.01
