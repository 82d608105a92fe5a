"""``biofo bench templates``: labelling the first minutes of a MIT-BIH record by beat template in
Chromium, against labelling every beat one by one.

Three daemons (``biofo serve``, fresh databases) receive the same record as 10 s device segments:

- *template*: after the first ``label_minutes`` are streamed, a clinician in Chromium (Debian's
  ``/usr/bin/chromium`` driven by Playwright) works through the templates page: for the template
  shown, the key of its members' majority reference class, until no unlabelled beat is left. Every
  key press is counted. The page posts one label per member, in arrival order (each its own update).
- *one by one*: the same beats labelled on the label page in Chromium, oldest first, one key per
  beat (the reference class), each posted as it is pressed.
- *no labels*: the base model alone.

Then the rest of the record is streamed into each, and the predictions made for the rest (after the
labels were learned) are scored against the reference: accuracy, VEB and SVEB Se/+P.

    biofo bench templates --json [--record 208] [--label-minutes 5]
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from app.replay import Tally
from app.client import LocalDaemon
from signals import replay

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
CLINICIAN = "template clinician"


def _stream(daemon: LocalDaemon, token: str, bodies: list[dict]) -> list[dict]:
    windows = []
    with daemon.client(token) as client:
        for body in bodies:
            response = client.post("/v1/windows", json=body)
            response.raise_for_status()
            windows.extend(response.json()["windows"])
    return windows


def _score(windows: list[dict], reference: replay.EcgReference, after_s: float) -> dict[str, Any]:
    rest = Tally()
    for window in windows:
        truth = reference.label_at(window["offset_s"])
        if truth is not None and window["offset_s"] >= after_s:
            rest.add(window["offset_s"], truth, window["predicted"])
    return {"accuracy": rest.accuracy(), "n": len(rest.pairs), "VEB": rest.se_ppv("V"), "SVEB": rest.se_ppv("S")}


def _signed_in(playwright, daemon: LocalDaemon, clinician: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{daemon.url}/login")
    page.fill("#token", clinician)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{daemon.url}/")
    return browser, page


def _label_one_by_one(daemon: LocalDaemon, clinician: str, patient: str, reference: replay.EcgReference,
                      offsets: dict[int, float]) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    presses = with_reference = 0
    with sync_playwright() as playwright:
        browser, page = _signed_in(playwright, daemon, clinician)
        page.goto(f"{daemon.url}/patients/ecg/{patient}")
        root = page.locator("#labeller")
        expect(root).to_have_attribute("data-ready", "true", timeout=60000)
        page.select_option("#queue-order", "time")
        expect(root).to_have_attribute("data-queue-order", "time", timeout=60000)
        oldest = min(offsets, key=lambda w: (offsets[w], w))
        expect(root).to_have_attribute("data-window-id", str(oldest), timeout=60000)
        while page.locator("#window-title").inner_text() != "Nothing left to label":
            current = root.get_attribute("data-window-id")
            truth = reference.label_at(float(root.get_attribute("data-offset")))
            page.keyboard.press((truth or "Q").lower())
            presses += 1
            with_reference += truth is not None
            # The page moves on to the next beat, or says none is left.
            page.wait_for_function(
                "(id) => document.getElementById('labeller').dataset.windowId !== id"
                " || document.getElementById('window-title').textContent === 'Nothing left to label'",
                arg=current, timeout=60000)
        browser.close()
    return {"key_presses": presses, "label_accuracy": 1.0, "beats_with_reference": with_reference}


def _label_by_template(daemon: LocalDaemon, clinician: str, patient: str, reference: replay.EcgReference,
                       offsets: dict[int, float]) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    presses = templates = 0
    wrong = labelled = 0
    with sync_playwright() as playwright, daemon.client(clinician) as api:
        browser, page = _signed_in(playwright, daemon, clinician)
        page.goto(f"{daemon.url}/patients/ecg/{patient}/templates")
        root = page.locator("#templates")
        expect(root).to_have_attribute("data-ready", "true", timeout=60000)
        current = root.get_attribute("data-template")
        while current:
            shown = int(current)
            members = api.get(f"/v1/templates/ecg/{patient}/{shown}").json()["window_ids"]
            truths = [reference.label_at(offsets[w]) for w in members]
            choice = Counter(t for t in truths if t is not None).most_common(1)
            name = choice[0][0] if choice else "Q"
            page.keyboard.press(name.lower())
            presses += 1
            templates += 1
            expect(root).to_have_attribute("data-actions", str(templates), timeout=60000)
            # The whole template is labelled: the page moves on to another one, or to none left.
            expect(root).not_to_have_attribute("data-template", str(shown), timeout=60000)
            current = root.get_attribute("data-template")
            labelled += sum(t is not None for t in truths)
            wrong += sum(t is not None and t != name for t in truths)
        # Enter applies every staged template: one label per beat, in the beats' arrival order.
        page.keyboard.press("Enter")
        presses += 1
        expect(root).to_have_attribute("data-applied", str(templates), timeout=120000)
        assert int(page.locator("#key-count").get_attribute("data-keys")) == presses
        page.screenshot(path=str(Path("test-artifacts") / "ecg-templates-done.png"))
        browser.close()
    return {"key_presses": presses, "templates": templates,
            "label_accuracy": 1 - wrong / labelled if labelled else None, "beats_with_reference": labelled}


def _arm(folder: Path, name: str, record: str, split_s: float, bodies: list[dict], reference: replay.EcgReference,
         how: str) -> dict[str, Any]:
    patient = f"bench-{record}"
    head = [b for b in bodies if b["start"] < split_s]
    tail = [b for b in bodies if b["start"] >= split_s]
    daemon = LocalDaemon(folder / f"{name}.db", folder / f"{name}.log").start()
    try:
        device = daemon.create_token("device")
        with daemon.client() as admin:
            clinician = admin.post("/v1/tokens", json={"role": "clinician", "name": CLINICIAN}).json()["token"]
        first = _stream(daemon, device, head)
        offsets = {w["id"]: w["offset_s"] for w in first}
        out: dict[str, Any] = {"beats_streamed": len(first)}
        if how == "template":
            out.update(_label_by_template(daemon, clinician, patient, reference, offsets))
        elif how == "one_by_one":
            out.update(_label_one_by_one(daemon, clinician, patient, reference, offsets))
        with daemon.client(clinician) as api:
            model = api.wait_learned("ecg", patient, timeout=600.0)
        out["updates_applied"] = model["updates_applied"]
        out["rest"] = _score(_stream(daemon, device, tail), reference, split_s)
        return out
    finally:
        daemon.stop()


def run(record: str = "208", label_minutes: float = 5.0, minutes: float | None = None, out: str = "bench/results",
        progress: bool = False) -> dict[str, Any]:
    split_s = label_minutes * 60.0
    bodies = list(replay.ecg_requests(record, patient_id=f"bench-{record}", minutes=minutes))
    reference = replay.ecg_reference(record)
    Path("test-artifacts").mkdir(exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="biofo-templates-") as tmp:
        folder = Path(tmp)
        arms = {how: _arm(folder, how, record, split_s, bodies, reference, how)
                for how in ("template", "one_by_one", "no_labels")}
    result = {
        "record": record, "label_minutes": label_minutes, "minutes": minutes,
        **arms,
        "press_ratio": arms["one_by_one"]["key_presses"] / max(1, arms["template"]["key_presses"]),
        "wall_s": time.monotonic() - started,
    }
    _write(Path(out), result)
    return result


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _write(folder: Path, r: dict[str, Any]) -> None:
    lines = [
        f"# Template labelling vs one by one, record {r['record']}", "",
        f"First {r['label_minutes']:g} min labelled, the rest scored (predictions made after the labels were learned).",
        "Command: `biofo bench templates --json" + (f" --record {r['record']}" if r["record"] != "208" else "") + "`", "",
        "| arm | key presses | labels right | rest accuracy | VEB Se | VEB +P | SVEB Se | SVEB +P | rest beats |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("template", "one_by_one", "no_labels"):
        arm = r[name]
        rest = arm["rest"]
        lines.append(
            f"| {name.replace('_', ' ')} | {arm.get('key_presses', 0)} | {_pct(arm.get('label_accuracy'))} |"
            f" {_pct(rest['accuracy'])} | {_pct(rest['VEB']['se'])} | {_pct(rest['VEB']['ppv'])} |"
            f" {_pct(rest['SVEB']['se'])} | {_pct(rest['SVEB']['ppv'])} | {rest['n']} |")
    lines += ["", f"Key presses, one by one / template: {r['press_ratio']:.1f}×; wall time {r['wall_s']:.0f} s."]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"template_workflow_{r['record']}.md").write_text("\n".join(lines) + "\n")
