"""Seizure intervals on 10 s EEG pages, in Debian's Chromium against a real daemon fed with a real
CHB-MIT crop: marked by mouse drag and by keys, each stored as window labels in time order in one
request, learned as forward-only updates in that order, and undone as a whole."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from conftest import start_daemon
from playwright.sync_api import Browser, Page, expect
from test_page import ARTIFACTS, _post_all, _token
from test_page_workflow import Served, _signed_in

from signals import replay
from signals.datafiles import require

# 93 s of chb01_21 from 60 s after the annotated onset: ictal until 33 s (the annotated offset).
CROP = "chbmit/crops/after60/chb01_21_le.edf"
PATIENT = "chb01-review"
CLINICIAN = "Dr Grace"
SEIZURE_END_S = 33.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("eeg-pages")
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log")
    try:
        with daemon.client() as admin:
            device = _token(admin, "device", "EEG cart 2")
            clinician = _token(admin, "clinician", CLINICIAN)
        with daemon.client(device) as client:
            windows = _post_all(
                client, replay.eeg_requests(require(CROP), patient_id=PATIENT, minutes=1.0)
            )
        assert [w["offset_s"] for w in windows] == [2.0 * k for k in range(30)]
        yield Served(daemon, clinician, device)
    finally:
        daemon.stop()


def _labels(served: Served, after: int = 0) -> list[sqlite3.Row]:
    connection = sqlite3.connect(f"file:{served.daemon.db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    with connection as db:
        return db.execute(
            "SELECT l.id, l.label, w.offset_s FROM labels l JOIN windows w ON w.id = l.window_id"
            " WHERE l.labeled_by = ? AND l.id > ? ORDER BY l.id",
            (CLINICIAN, after),
        ).fetchall()


def _updates(served: Served, label_ids: list[int]) -> list[sqlite3.Row]:
    connection = sqlite3.connect(f"file:{served.daemon.db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    marks = ",".join("?" * len(label_ids))
    with connection as db:
        return db.execute(
            "SELECT ul.label_id, u.version_before, u.version_after FROM updates u"
            f" JOIN update_labels ul ON ul.update_id = u.id WHERE ul.label_id IN ({marks}) ORDER BY u.id",
            label_ids,
        ).fetchall()


def _x(page: Page, t: float, start: float) -> float:
    """The page pixel of time ``t`` on the plot (its x scale is exactly the 10 s page)."""
    box = page.locator("#page-plots .u-over").bounding_box()
    return box["x"] + (t - start) / 10.0 * box["width"]


def test_interval_by_drag_and_by_keys_labels_the_page_in_order_and_undoes_whole(
    served: Served, browser: Browser
) -> None:
    context, page, problems = _signed_in(served, browser)
    writes: list[str] = []  # every write the page makes
    page.on(
        "request",
        lambda r: (
            writes.append(r.url.split("/v1/")[-1])
            if r.method == "POST" and "/v1/" in r.url
            else None
        ),
    )
    page.goto(f"{served.daemon.url}/patients/eeg/{PATIENT}/pages?start=30")
    root = page.locator("#eeg-pages")
    expect(root).to_have_attribute("data-ready", "true", timeout=20000)
    expect(root).to_have_attribute("data-start", "30.0")
    expect(root).to_have_attribute("data-windows", "5")
    edf = require(CROP)
    reference = {w: replay.eeg_window_label(edf, w) for w in (30.0, 32.0, 34.0, 36.0, 38.0)}
    assert list(reference.values()) == [
        "seizure",
        "seizure",
        "background",
        "background",
        "background",
    ]

    # Mouse: drag from the page's start to just past the annotated offset (33 s), then Enter.
    y = page.locator("#page-plots .u-over").bounding_box()["y"] + 120
    page.mouse.move(_x(page, 30.05, 30.0), y)
    page.mouse.down()
    page.mouse.move(_x(page, 31.5, 30.0), y, steps=4)
    page.mouse.move(_x(page, SEIZURE_END_S + 0.3, 30.0), y, steps=4)
    page.mouse.up()
    assert abs(float(root.get_attribute("data-offset")) - (SEIZURE_END_S + 0.3)) < 0.05
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "eeg-page-interval.png"))
    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-actions", "1", timeout=20000)
    expect(root).to_have_attribute("data-labelled", "5", timeout=30000)
    assert writes == ["intervals/eeg/" + PATIENT]  # one request for the whole page
    dragged = _labels(served)
    # One label per window of the page, in time order; seizure where the annotation says so.
    assert [(r["offset_s"], r["label"]) for r in dragged] == list(reference.items())
    updates = _updates(served, [r["id"] for r in dragged])
    assert [u["label_id"] for u in updates] == [r["id"] for r in dragged]
    assert [u["version_after"] for u in updates] == list(range(1, 6))
    expect(root).to_have_attribute("data-seizure-labels", "2")
    expect(root).to_have_attribute("data-onset", "")  # the marks are cleared once labelled

    # Undo: every label of the interval retracted together, one rebuild, one new version.
    page.keyboard.press("u")
    expect(root).to_have_attribute("data-actions", "0", timeout=30000)
    expect(root).to_have_attribute("data-labelled", "0", timeout=20000)
    assert writes[-1] == "retractions" and len(writes) == 2
    connection = sqlite3.connect(f"file:{served.daemon.db}?mode=ro", uri=True)
    with connection as db:
        retracted = db.execute(
            "SELECT label_id, version_after FROM retractions ORDER BY label_id"
        ).fetchall()
    assert [r[0] for r in retracted] == [r["id"] for r in dragged]
    assert {r[1] for r in retracted} == {6}
    expect(page.locator("#last-action")).to_contain_text("Undo: v5 → v6")

    # Keys: the previous page, onset at its start, the cursor 10 s on (20 × 0.5 s), offset, Enter.
    page.keyboard.press("PageUp")
    expect(root).to_have_attribute("data-start", "20.0")
    page.keyboard.press("[")
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("]")
    expect(root).to_have_attribute("data-onset", "20.00")
    expect(root).to_have_attribute("data-offset", "30.00")
    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-seizure-labels", "5", timeout=30000)
    keyed = _labels(served, dragged[-1]["id"])
    assert [(r["offset_s"], r["label"]) for r in keyed] == [
        (20.0 + 2 * k, "seizure") for k in range(5)
    ]
    assert [u["version_after"] for u in _updates(served, [r["id"] for r in keyed])] == list(
        range(7, 12)
    )
    page.screenshot(path=str(ARTIFACTS / "eeg-page-keys.png"))
    assert problems == []
    context.close()


def test_an_interval_off_the_page_or_covering_no_window_is_refused(served: Served) -> None:
    with served.daemon.client(served.clinician) as api:
        path = f"/v1/intervals/eeg/{PATIENT}"
        base = {"start": 40.0, "duration": 10.0, "labeled_by": CLINICIAN}
        before = api.get(f"/v1/models/eeg/{PATIENT}").json()["prequential"]["n"]
        off_page = api.post(path, json={**base, "onset": 38.0, "offset": 44.0})
        backwards = api.post(path, json={**base, "onset": 45.0, "offset": 44.0})
        too_short = api.post(path, json={**base, "onset": 40.5, "offset": 41.4})
        no_windows = api.post(path, json={**base, "start": 500.0, "onset": 501.0, "offset": 505.0})
        unknown = api.post("/v1/intervals/eeg/nobody", json={**base, "onset": 41.0, "offset": 44.0})
        page = api.get(f"/v1/strips/eeg/{PATIENT}", params={"start": 40.0})
        after = api.get(f"/v1/models/eeg/{PATIENT}").json()["prequential"]["n"]
    assert [r.status_code for r in (off_page, backwards, too_short, no_windows, unknown)] == [
        422,
        422,
        422,
        422,
        404,
    ]
    assert "covers no window by half" in too_short.text and "no whole 2 s window" in no_windows.text
    assert after == before  # nothing was stored
    body = page.json()
    assert [w["offset_s"] for w in body["windows"]] == [40.0, 42.0, 44.0, 46.0, 48.0]
    assert len(body["channels"]) == len(body["samples"]) and len(body["samples"][0]) == 2560
