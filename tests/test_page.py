"""The clinician page in Debian's Chromium (driven by Playwright) against a real daemon fed with real
MIT-BIH and CHB-MIT signal, under the daemon's strict CSP."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import Daemon, start_daemon
from playwright.sync_api import Browser, Page, expect

from app.auth import SESSION_COOKIE
from signals import replay
from signals.datafiles import require

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
ECG_RECORD = "208"  # frequent PVCs and fusion beats: a queue with real uncertainty
ECG_MINUTES = 2.0
ECG_PATIENT = "mitdb-208"
# 93 s from chb01_21, starting 60 s after the annotated onset: its first 33 s are still ictal.
EEG_CROP = "chbmit/crops/after60/chb01_21_le.edf"
EEG_PATIENT = "chb01"
REFERENCE_LABELER = "reference annotations"
# Recorded before the page loads any script: every CSP violation the document reports.
CSP_LISTENER = (
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.reportCsp(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));"
)


@dataclass
class Served:
    daemon: Daemon
    clinician: str
    device: str


def _token(client: httpx.Client, role: str, name: str) -> str:
    response = client.post("/v1/tokens", json={"role": role, "name": name})
    response.raise_for_status()
    return response.json()["token"]


def _post_all(client: httpx.Client, bodies: Iterator[dict]) -> list[dict]:
    windows = []
    for body in bodies:
        response = client.post("/v1/windows", json=body)
        response.raise_for_status()
        windows.extend(response.json()["windows"])
    return windows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("page")
    daemon = start_daemon(folder / "biofo.db", folder / "daemon.log")
    try:
        with daemon.client() as admin:
            device = _token(admin, "device", "bed 7 monitor")
            clinician = _token(admin, "clinician", "Dr Ada")
        with daemon.client(device) as client:
            _post_all(client, replay.ecg_requests(ECG_RECORD, patient_id=ECG_PATIENT, minutes=ECG_MINUTES))
            eeg_windows = _post_all(client, replay.eeg_requests(require(EEG_CROP), patient_id=EEG_PATIENT))
        # Part of the EEG stream already carries labels from the reference annotations, as if a
        # colleague had reviewed it, so the trace shows a labelled onset; the newest minute is left.
        edf = require(EEG_CROP)
        labels = [
            {"window_id": w["id"], "label": replay.eeg_window_label(edf, w["offset_s"]), "labeled_by": REFERENCE_LABELER}
            for w in eeg_windows if w["offset_s"] < 40.0 and int(w["offset_s"]) % 4 == 0
        ]
        with daemon.client(clinician) as client:
            seq = client.post("/v1/labels", json={"labels": labels}).json()["update_seq"]
            client.wait_applied("eeg", EEG_PATIENT, seq)
        yield Served(daemon, clinician, device)
    finally:
        daemon.stop()


def _db(served: Served) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{served.daemon.db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    return connection


def _labels_in_force(served: Served, patient: str) -> list[dict]:
    with served.daemon.client(served.clinician) as client:
        return client.get("/v1/windows", params={"patient_id": patient, "labeled": True, "limit": 1000}).json()["windows"]


def _version(page: Page) -> int:
    return int(page.locator("#model-version").get_attribute("data-version"))


def _wait_version(page: Page, version: int) -> None:
    expect(page.locator("#model-version")).to_have_attribute("data-version", str(version), timeout=20000)


def _current_window(page: Page) -> int:
    return int(page.locator("#labeller").get_attribute("data-window-id"))


def _label_by_key(page: Page, key: str) -> None:
    """Press a label key and wait until the page has moved on to the next window."""
    before = _current_window(page)
    page.keyboard.press(key)
    expect(page.locator("#labeller")).not_to_have_attribute("data-window-id", str(before), timeout=10000)


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def test_label_undo_and_timeline_in_the_browser(served: Served, browser: Browser) -> None:
    url = served.daemon.url
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    violations: list[str] = []
    console: list[str] = []
    page_errors: list[str] = []
    context.expose_function("reportCsp", lambda violation: violations.append(violation))
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    # Sign in with the clinician token: the session cookie is HTTP-only, SameSite=Strict, and Secure
    # (the daemon is on 127.0.0.1, a secure context for the browser).
    page.goto(f"{url}/")
    expect(page).to_have_url(f"{url}/login")
    page.fill("#token", served.clinician)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{url}/")
    session = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    assert (session["httpOnly"], session["secure"], session["sameSite"]) == (True, True, "Strict")

    # Patient list: both patients, each with its model version.
    ecg_row = page.locator("tr", has=page.get_by_role("link", name=ECG_PATIENT, exact=True)).first
    expect(ecg_row).to_contain_text("v0")
    expect(page.locator("tr", has=page.get_by_role("link", name=EEG_PATIENT, exact=True)).first).to_contain_text("EEG")

    # The ECG queue, reached and used with the keyboard alone.
    page.get_by_role("link", name=ECG_PATIENT, exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#labeller")).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("#plots canvas")).to_have_count(2)  # both leads
    start_version = _version(page)
    reference = replay.ecg_reference(ECG_RECORD)
    labelled: list[tuple[int, str]] = []
    for _ in range(5):
        window_id = _current_window(page)
        offset = float(page.locator("#labeller").get_attribute("data-offset"))
        truth = reference.label_at(offset) or "Q"
        labelled.append((window_id, truth))
        _label_by_key(page, truth.lower())
    _wait_version(page, start_version + 5)
    expect(page.locator("#last-update")).to_contain_text(f"v{start_version + 4} → v{start_version + 5}")
    expect(page.locator("#last-update")).to_contain_text("J")

    with _db(served) as db:
        rows = db.execute(
            "SELECT l.id, l.window_id, l.label, u.version_after FROM labels l"
            " JOIN update_labels ul ON ul.label_id = l.id JOIN updates u ON u.id = ul.update_id"
            " WHERE l.labeled_by = 'Dr Ada' ORDER BY l.id"
        ).fetchall()
    assert [(r["window_id"], r["label"]) for r in rows] == labelled
    assert [r["version_after"] for r in rows] == list(range(start_version + 1, start_version + 6))

    # Zoom by keyboard halves the visible span of both leads, and 0 restores it.
    plots = page.locator("#plots")
    full = float(plots.get_attribute("data-span"))
    page.keyboard.press("+")
    assert float(plots.get_attribute("data-span")) == pytest.approx(full / 2, abs=1e-3)
    page.keyboard.press("0")
    assert float(plots.get_attribute("data-span")) == pytest.approx(full, abs=1e-3)
    _shot(page, "ecg-queue.png")

    # Undo the last label: the label is retracted, the model is rebuilt without it as one new
    # version, and the page goes back to that beat.
    page.keyboard.press("u")
    _wait_version(page, start_version + 6)
    expect(page.locator("#last-update")).to_contain_text("Undo")
    undone_window, _ = labelled[-1]
    expect(page.locator("#labeller")).to_have_attribute("data-window-id", str(undone_window))
    with _db(served) as db:
        retraction = db.execute(
            "SELECT r.label_id, r.version_before, r.version_after, r.replayed FROM retractions r"
        ).fetchone()
    assert dict(retraction) == {
        "label_id": rows[-1]["id"], "version_before": start_version + 5, "version_after": start_version + 6, "replayed": 4,
    }
    with served.daemon.client(served.clinician) as client:
        assert client.get(f"/v1/windows/{undone_window}").json()["label"] is None
        assert client.get(f"/v1/models/ecg/{ECG_PATIENT}").json()["prequential"]["n"] == 4

    # The same queue on a tablet: nothing overflows sideways.
    page.set_viewport_size({"width": 1024, "height": 768})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    _shot(page, "ecg-queue-tablet.png")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Timeline: every labelled beat, disagreements listed.
    page.goto(f"{url}/patients/ecg/{ECG_PATIENT}/timeline")
    expect(page.locator("#timeline")).to_have_attribute("data-ready", "true", timeout=20000)
    disagreements = sum(w["label"] != w["predicted"] for w in _labels_in_force(served, ECG_PATIENT))
    expect(page.locator("#disagreement-count")).to_have_text(f"({disagreements})")
    _shot(page, "ecg-timeline.png")

    # EEG: stacked channels and the seizure-probability trace; label one window with S or B, undo it.
    page.goto(f"{url}/patients/eeg/{EEG_PATIENT}")
    expect(page.locator("#labeller")).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("#prob-trace canvas")).to_have_count(1)
    eeg_version = _version(page)
    window_id = _current_window(page)
    offset = float(page.locator("#labeller").get_attribute("data-offset"))
    truth = replay.eeg_window_label(require(EEG_CROP), offset)
    _label_by_key(page, {"seizure": "s", "background": "b"}[truth])
    _wait_version(page, eeg_version + 1)
    page.keyboard.press("k")  # back to the window just labelled
    expect(page.locator("#labeller")).to_have_attribute("data-window-id", str(window_id))
    _shot(page, "eeg-window.png")
    with _db(served) as db:
        eeg_label = db.execute(
            "SELECT l.id, l.label FROM labels l WHERE l.window_id = ? AND l.labeled_by = 'Dr Ada'", (window_id,)
        ).fetchone()
    assert eeg_label["label"] == truth
    page.keyboard.press("u")
    _wait_version(page, eeg_version + 2)
    with _db(served) as db:
        assert db.execute("SELECT COUNT(*) FROM retractions WHERE label_id = ?", (eeg_label["id"],)).fetchone()[0] == 1
    page.goto(f"{url}/patients/eeg/{EEG_PATIENT}/timeline")
    expect(page.locator("#timeline")).to_have_attribute("data-ready", "true", timeout=20000)
    expect(page.locator("#timeline-summary")).to_contain_text(f"{len(_labels_in_force(served, EEG_PATIENT))} labelled")
    _shot(page, "eeg-timeline.png")

    # Sign out by keyboard: the cookie is gone and the queue asks for sign-in again.
    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{url}/login")
    assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]

    assert page_errors == []
    assert violations == [], violations
    assert not [line for line in console if "Content Security Policy" in line], console
    assert not [line for line in console if line.startswith("error")], console
    # The listener does catch a violation: an inline script injected now is refused and reported.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = '1'; document.head.append(s); }")
    page.wait_for_timeout(200)
    assert violations and "script-src" in violations[0]
    context.close()


def test_cookie_writes_need_this_origin(served: Served) -> None:
    url = served.daemon.url
    cookie = {SESSION_COOKIE: served.clinician}
    with httpx.Client(base_url=url, timeout=30.0) as client, \
            httpx.Client(base_url=url, timeout=30.0, cookies=cookie) as cookied:
        signed_in = client.post("/login", data={"token": served.clinician}, headers={"Origin": url})
        assert signed_in.status_code == 303
        body = {"labels": [{"window_id": 10**9, "label": "N", "labeled_by": "x"}]}
        foreign = cookied.post("/v1/labels", json=body, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]
        assert cookied.post("/v1/labels", json=body).status_code == 403  # neither Origin nor Referer
        referer = cookied.post("/v1/labels", json=body, headers={"Referer": f"{url}/patients/ecg/x"})
        assert referer.status_code == 404  # past the origin check, stopped by the unknown window
        assert cookied.post("/v1/labels", json=body, headers={"Origin": url}).status_code == 404
        bearer = {"Authorization": f"Bearer {served.clinician}"}
        assert client.post("/v1/labels", json=body, headers=bearer).status_code == 404  # no cookie, no CSRF
        assert cookied.post("/v1/labels/1/undo", headers={"Origin": "http://evil.example"}).status_code == 403
        assert cookied.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/login", data={"token": served.device}, headers={"Origin": url}).status_code == 403

        # Over plain http to an address other than loopback the cookie cannot be Secure (the browser
        # would drop it); it stays HTTP-only and SameSite=Strict.
        lan = "http://192.0.2.10:8000"
        answer = client.post("/login", data={"token": served.clinician}, headers={"Host": "192.0.2.10:8000", "Origin": lan})
        set_cookie = answer.headers["set-cookie"].lower()
        assert answer.status_code == 303 and "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert "secure" not in set_cookie
        assert "; secure" in signed_in.headers["set-cookie"].lower()


def test_api_docs_render_offline_under_the_csp(served: Served, browser: Browser) -> None:
    """/docs uses the vendored Swagger UI: no CDN on a closed bedside network."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(served.daemon.url) else None)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{served.daemon.url}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() >= 10
    assert page.get_by_text("/v1/windows", exact=True).count() >= 1
    assert outside == [] and violations == []
    page.close()
