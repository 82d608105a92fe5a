"""The clinician's review workflow in Debian's Chromium against a real daemon fed with real MIT-BIH
signal: labelling by template (and undoing it), the rhythm strip, live updates while a device
streams, and alarms shown and acknowledged on the page."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import ADMIN_TOKEN, Daemon, start_daemon
from playwright.sync_api import Browser, BrowserContext, Page, expect
from test_page import ARTIFACTS, CSP_LISTENER, _post_all, _token

from signals import replay

TEMPLATE_RECORD = "208"
TEMPLATE_PATIENT = "tpl-208"
LIVE_RECORD = "203"  # ventricular runs in its first minutes (reference: 46.5 s, 92 s, 105 s, ...)
LIVE_PATIENT = "live-203"
CLINICIAN = "Dr Ada"


@dataclass
class Served:
    daemon: Daemon
    clinician: str
    device: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("workflow")
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log")
    try:
        with daemon.client() as admin:
            device = _token(admin, "device", "bed 3 monitor")
            clinician = _token(admin, "clinician", CLINICIAN)
        with daemon.client(device) as client:
            _post_all(client, replay.ecg_requests(TEMPLATE_RECORD, patient_id=TEMPLATE_PATIENT, minutes=2.0))
        yield Served(daemon, clinician, device)
    finally:
        daemon.stop()


def _signed_in(served: Served, browser: Browser) -> tuple[BrowserContext, Page, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    context.expose_function("reportCsp", lambda violation: problems.append(f"csp: {violation}"))
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(f"{served.daemon.url}/login")
    page.fill("#token", served.clinician)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{served.daemon.url}/")
    return context, page, problems


def _db(served: Served) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{served.daemon.db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    return connection


def _majority(reference: replay.EcgReference, offsets: list[float]) -> str:
    return Counter(reference.label_at(t) or "Q" for t in offsets).most_common(1)[0][0]


def test_label_by_template_and_undo_the_whole_action(served: Served, browser: Browser) -> None:
    context, page, problems = _signed_in(served, browser)
    page.goto(f"{served.daemon.url}/patients/ecg/{TEMPLATE_PATIENT}/templates")
    root = page.locator("#templates")
    expect(root).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("#tpl-plots canvas")).to_have_count(2)  # overlay of both leads
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ecg-templates.png"))
    api = served.daemon.client(served.clinician)
    reference = replay.ecg_reference(TEMPLATE_RECORD)
    offsets = {w["id"]: w["offset_s"] for w in api.get(
        "/v1/windows", params={"patient_id": TEMPLATE_PATIENT, "order": "time", "limit": 1000}).json()["windows"]}

    def labels_by_clinician(after: int = 0) -> list[sqlite3.Row]:
        with _db(served) as db:
            return db.execute("SELECT id, window_id, label FROM labels WHERE labeled_by = ? AND id > ? ORDER BY id",
                              (CLINICIAN, after)).fetchall()

    def shown_template() -> dict:
        return api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}/{int(root.get_attribute('data-template'))}").json()

    # One key stages the whole (largest) template; the page moves on to the next one.
    first = shown_template()
    assert len(first["window_ids"]) > 20 and first["window_ids"] == sorted(first["window_ids"])
    first_truth = _majority(reference, [offsets[w] for w in first["window_ids"]])
    page.keyboard.press(first_truth.lower())
    expect(root).to_have_attribute("data-staged", str(len(first["window_ids"])), timeout=20000)
    expect(root).not_to_have_attribute("data-template", str(first["index"]))

    # The next template with one member deselected: the key stages the beats kept selected.
    second = shown_template()
    assert second["unlabelled"] >= 2
    left_out = second["window_ids"][0]
    page.locator(f'input[data-member="{left_out}"]').uncheck()
    expect(root).to_have_attribute("data-selected", str(second["unlabelled"] - 1))
    second_truth = _majority(reference, [offsets[w] for w in second["window_ids"]])
    page.keyboard.press(second_truth.lower())
    staged = len(first["window_ids"]) + len(second["window_ids"]) - 1
    expect(root).to_have_attribute("data-staged", str(staged), timeout=20000)
    assert labels_by_clinician() == []  # staged, not yet posted

    # Enter applies both: one label per beat, in the beats' arrival order, each its own update.
    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-applied", "2", timeout=20000)
    rows = labels_by_clinician()
    wanted = sorted([(w, first_truth) for w in first["window_ids"]] + [(w, second_truth) for w in second["window_ids"][1:]])
    assert [(r["window_id"], r["label"]) for r in rows] == wanted
    model = api.wait_applied("ecg", TEMPLATE_PATIENT, rows[-1]["id"])
    assert model["updates_applied"] == len(rows)
    with _db(served) as db:
        updates = db.execute(
            "SELECT ul.label_id, u.version_after FROM updates u JOIN update_labels ul ON ul.update_id = u.id"
            " ORDER BY u.id").fetchall()
    assert [u["label_id"] for u in updates] == [r["id"] for r in rows]
    assert [u["version_after"] for u in updates] == list(range(1, len(rows) + 1))
    assert api.get(f"/v1/windows/{left_out}").json()["label"] is None
    done = api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}", params={"labeled": True}).json()["templates"]
    assert first["index"] in [t["index"] for t in done]
    assert {t["index"] for t in done}.isdisjoint(
        t["index"] for t in api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}").json()["templates"])
    assert api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}/999999").status_code == 404
    assert api.get("/v1/templates/ecg/nobody").status_code == 404

    # A third template, applied, then undone as a whole: every label retracted, one rebuild, one version.
    third = shown_template()
    page.keyboard.press(_majority(reference, [offsets[w] for w in third["window_ids"]]).lower())
    expect(root).to_have_attribute("data-staged", str(len(third["window_ids"])), timeout=20000)
    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-applied", "3", timeout=20000)
    third_rows = labels_by_clinician(rows[-1]["id"])
    assert [r["window_id"] for r in third_rows] == third["window_ids"]
    version = api.wait_applied("ecg", TEMPLATE_PATIENT, third_rows[-1]["id"])["version"]
    page.keyboard.press("u")
    expect(root).to_have_attribute("data-actions", "2", timeout=30000)
    expect(page.locator("#last-action")).to_contain_text(f"Undo: v{version} → v{version + 1}")
    with _db(served) as db:
        retracted = db.execute("SELECT label_id, version_after FROM retractions ORDER BY label_id").fetchall()
    assert [r["label_id"] for r in retracted] == [r["id"] for r in third_rows]
    assert {r["version_after"] for r in retracted} == {version + 1}
    assert api.get(f"/v1/models/ecg/{TEMPLATE_PATIENT}").json()["prequential"]["n"] == len(rows)

    # The undone template is back, whole, and shown again.
    expect(root).to_have_attribute("data-template", str(third["index"]), timeout=20000)

    # Undo of a staged action only unstages it: nothing reaches the daemon.
    shown = third["index"]
    page.keyboard.press("n")
    expect(root).not_to_have_attribute("data-staged", "0", timeout=20000)
    page.keyboard.press("u")
    expect(root).to_have_attribute("data-staged", "0", timeout=20000)
    expect(root).to_have_attribute("data-template", str(shown))
    assert len(labels_by_clinician()) == len(rows) + len(third_rows)
    assert int(page.locator("#key-count").get_attribute("data-keys")) == 8
    page.screenshot(path=str(ARTIFACTS / "ecg-templates-applied.png"))
    assert problems == []
    api.close()
    context.close()


def test_every_template_answers_with_gaps_where_no_member_has_samples(served: Served) -> None:
    """The stream's first beats have no samples before their R peak: their templates still answer,
    with nulls in the overlay and the mean where no member has a sample."""
    with served.daemon.client(served.clinician) as api:
        templates = api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}").json()["templates"]
        details = [api.get(f"/v1/templates/ecg/{TEMPLATE_PATIENT}/{t['index']}") for t in templates]
    assert templates and all(d.status_code == 200 for d in details), [d.text[:200] for d in details]
    means = [d.json()["mean"] for d in details]
    assert all(len(mean) == 2 and len(mean[0]) == len(mean[1]) > 100 for mean in means)
    assert all(isinstance(v, float) for mean in means for v in mean[0][len(mean[0]) // 2:])


def test_rhythm_strip_pages_with_keys(served: Served, browser: Browser) -> None:
    context, page, problems = _signed_in(served, browser)
    page.goto(f"{served.daemon.url}/patients/ecg/{TEMPLATE_PATIENT}/strip?start=0")
    root = page.locator("#strip")
    expect(root).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("#strip-plots canvas")).to_have_count(2)  # both leads
    with served.daemon.client(served.clinician) as api:
        windows = api.get("/v1/windows", params={"patient_id": TEMPLATE_PATIENT, "order": "time", "limit": 1000}).json()["windows"]
    def beats_in(start: float) -> int:
        return sum(start <= w["offset_s"] < start + 10 for w in windows)
    expect(root).to_have_attribute("data-start", "0.0")
    expect(root).to_have_attribute("data-beats", str(beats_in(0)))
    page.keyboard.press("ArrowRight")
    expect(root).to_have_attribute("data-start", "10.0")
    expect(root).to_have_attribute("data-beats", str(beats_in(10)))
    page.keyboard.press("PageDown")
    expect(root).to_have_attribute("data-start", "20.0")
    page.screenshot(path=str(ARTIFACTS / "ecg-rhythm-strip.png"))
    page.keyboard.press("PageUp")
    expect(root).to_have_attribute("data-start", "10.0")
    assert beats_in(10) > 5
    assert problems == []
    context.close()


def test_live_windows_versions_and_alarms_while_a_device_streams(served: Served, browser: Browser) -> None:
    bodies = list(replay.ecg_requests(LIVE_RECORD, patient_id=LIVE_PATIENT, minutes=2.5))
    with served.daemon.client(served.device) as device:
        _post_all(device, iter(bodies[:1]))
    context, page, problems = _signed_in(served, browser)
    navigations: list[str] = []
    page.goto(f"{served.daemon.url}/patients/ecg/{LIVE_PATIENT}")
    expect(page.locator("#labeller")).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("html")).to_have_attribute("data-live", "open", timeout=10000)
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    start_version = int(page.locator("#model-version").get_attribute("data-version"))

    # A device streams the next segments (real time compressed) while the page stays open.
    posted: list[dict] = []
    def stream() -> None:
        with served.daemon.client(served.device) as device:
            posted.extend(_post_all(device, iter(bodies[1:])))
    streamer = threading.Thread(target=stream)
    streamer.start()
    streamer.join(120)
    assert not streamer.is_alive()
    live = page.locator("#live-status")
    expect(live).to_have_attribute("data-live-windows", str(len(posted)), timeout=20000)
    expect(live).to_contain_text(f"predicted {posted[-1]['predicted']}")

    # Labels given elsewhere (another clinician's client) move the open page's model version.
    reference = replay.ecg_reference(LIVE_RECORD)
    labels = [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]), "labeled_by": "colleague"}
              for w in posted[:20] if reference.label_at(w["offset_s"])]
    with served.daemon.client(served.clinician) as api:
        seq = api.post("/v1/labels", json={"labels": labels}).json()["update_seq"]
        applied = api.wait_applied("ecg", LIVE_PATIENT, seq)
        alarms = api.get("/v1/alarms", params={"patient_id": LIVE_PATIENT}).json()["alarms"]
    assert applied["version"] == start_version + len(labels)
    expect(page.locator("#model-version")).to_have_attribute("data-version", str(applied["version"]), timeout=20000)

    # The ventricular runs became alarms on the open page, without a reload; one is acknowledged.
    assert alarms, "record 203's first minutes hold ventricular runs"
    bar = page.locator("#alarm-bar")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("data-count", str(len(alarms)), timeout=20000)
    expect(bar).to_contain_text("Ventricular run")
    page.screenshot(path=str(ARTIFACTS / "ecg-live-alarms.png"))
    newest = alarms[0]
    page.locator(f'li[data-alarm-id="{newest["id"]}"] button.ack').click()
    expect(page.locator(f'li[data-alarm-id="{newest["id"]}"]')).to_have_count(0, timeout=10000)
    with _db(served) as db:
        row = db.execute("SELECT acknowledged_by, acknowledged_at FROM alarms WHERE id = ?", (newest["id"],)).fetchone()
    assert row["acknowledged_by"] == CLINICIAN and row["acknowledged_at"] is not None
    assert navigations == []  # everything above reached the page without a reload
    assert problems == []
    context.close()


def test_events_need_a_clinician(served: Served) -> None:
    url = f"{served.daemon.url}/v1/events"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {served.device}"}, timeout=10).status_code == 403
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {served.clinician}"}, timeout=10) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert next(stream.iter_lines()) == "retry: 2000"


def test_an_open_event_stream_does_not_hold_up_shutdown(tmp_path) -> None:
    daemon = start_daemon(tmp_path / "biofo.db", tmp_path / "daemon.log")
    lines: list[str] = []
    ended = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{daemon.url}/v1/events", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                          timeout=httpx.Timeout(60, read=None)) as stream:
            for line in stream.iter_lines():
                lines.append(line)
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 20
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines[:1] == ["retry: 2000"]
    # SIGTERM: the daemon ends the stream itself, finishes its shutdown and exits 0 (uvicorn would
    # otherwise wait for the open response until its graceful-shutdown timeout, then cut it).
    assert daemon.stop() == 0
    assert ended.wait(10)
    assert "Cancel" not in daemon.logs() and "Traceback" not in daemon.logs()
