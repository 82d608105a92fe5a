"""``biofo bench fuzz``: schemathesis against the daemon's own ``/openapi.json``, every operation, once
with no token and once with a token of each role.

A fresh daemon on 127.0.0.1 is first given real data (MIT-BIH record 100 and a CHB-MIT seizure crop,
with reference labels), and the fuzzer draws path parameters from those patients, windows and labels
part of the time, so that it reaches stored rows rather than only 404s. Every schemathesis check runs
except ``positive_data_acceptance``: a body can satisfy the JSON Schema and still be unusable for
reasons a schema cannot state (rows of unequal length, a sampling rate below what the modality needs,
more samples than ``BIOFO_MAX_SAMPLES``), and the daemon rightly answers those with a 422 naming the
field. Pass means no server error and no answer outside the documented statuses, media types and
schemas for any role.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from app.client import LOCAL_ADMIN_TOKEN as ADMIN_TOKEN
from app.client import LocalDaemon
from signals.aami import AAMI_CLASSES
from signals.datafiles import require
from signals.eeg_features import EEG_CLASSES
from signals.replay import ecg_reference, ecg_requests, eeg_requests

ROLES = ("none", "device", "clinician", "admin")
EXCLUDED_CHECKS = ("positive_data_acceptance",)
SEIZURE_CROP = "chbmit/crops/seizure/chb01_03_ti-seizure.edf"


def seed(daemon: LocalDaemon) -> dict[str, list[Any]]:
    """Real windows and labels for two patients; returns the values the fuzzer may use as ids."""
    window_ids: list[int] = []
    label_ids: list[int] = []
    reference = ecg_reference("100")
    with daemon.client() as admin:
        for body in [*ecg_requests("100", minutes=0.5, patient_id="fuzz-ecg"),
                     *list(eeg_requests(require(SEIZURE_CROP), patient_id="chb01"))[:4]]:
            response = admin.post("/v1/windows", json=body)
            response.raise_for_status()
            windows = response.json()["windows"]
            window_ids += [w["id"] for w in windows]
            labels = [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]), "labeled_by": "bench"}
                      for w in windows[:5] if body["modality"] == "ecg" and reference.label_at(w["offset_s"])]
            if labels:
                answer = admin.post("/v1/labels", json={"labels": labels})
                answer.raise_for_status()
                label_ids += answer.json()["label_ids"]
    return {"patients": ["fuzz-ecg", "chb01"], "windows": window_ids, "labels": label_ids}


def config(ids: dict[str, list[Any]], probability: float = 0.5) -> str:
    """A schemathesis.toml that sometimes fills path parameters with ids that exist."""
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines += ["[dictionaries.classes]", f"values = {json.dumps([*AAMI_CLASSES, *EEG_CLASSES])}", ""]
    lines.append("[parameters]")
    for key, name in (("path.patient_id", "patients"), ("path.window_id", "windows"), ("path.label_id", "labels"),
                      ("body.labels[*].window_id", "windows"), ("body.labels[*].label", "classes")):
        lines.append(f'"{key}" = {{ dictionary = "{name}", probability = {probability} }}')
    return "\n".join(lines) + "\n"


def fuzz_command(url: str, token: str | None, config_file: Path, report: Path, max_examples: int,
                 seed_value: int) -> list[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file), "run",
        f"{url}/openapi.json", "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
        "--max-examples", str(max_examples), "--seed", str(seed_value), "--workers", "1",
        "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
        "--no-color", "--request-timeout", "60",
    ]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    return command


def run(
    max_examples: int = 200, roles: list[str] | None = None, seed_value: int = 0, out: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    selected = tuple(roles or ROLES)
    with tempfile.TemporaryDirectory(prefix="biofo-fuzz-") as scratch:
        folder = Path(out) if out else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        with LocalDaemon(folder / "fuzz.db", folder / "daemon.log") as daemon:
            ids = seed(daemon)
            tokens: dict[str, str | None] = {"none": None, "admin": ADMIN_TOKEN}
            tokens.update({role: daemon.create_token(role) for role in ("device", "clinician")})
            config_file = folder / "schemathesis.toml"
            config_file.write_text(config(ids))
            # One schemathesis process per role, side by side against the one daemon.
            started = time.monotonic()
            results = {}
            with ExitStack() as outputs:
                processes = {
                    role: subprocess.Popen(
                        fuzz_command(daemon.url, tokens[role], config_file, folder / f"report-{role}.json",
                                     max_examples, seed_value),
                        stdout=outputs.enter_context((folder / f"schemathesis-{role}.txt").open("w")),
                        stderr=subprocess.STDOUT,
                    )
                    for role in selected
                }
                for role, process in processes.items():
                    process.wait()
            for role, process in processes.items():
                report = folder / f"report-{role}.json"
                summary = json.loads(report.read_text()) if report.exists() else {}
                results[role] = {
                    "exit_status": process.returncode,
                    "test_cases": summary.get("test_cases"),
                    "failures": summary.get("failures"),
                    "errors": summary.get("errors"),
                    "output": (folder / f"schemathesis-{role}.txt").read_text()[-20000:],
                }
            seconds = time.monotonic() - started
            alive = daemon.process is not None and daemon.process.poll() is None
            log = daemon.tail(400)
    return {
        "ok": alive and all(r["exit_status"] == 0 for r in results.values()),
        "max_examples": max_examples,
        "seed": seed_value,
        "seconds": seconds,
        "excluded_checks": list(EXCLUDED_CHECKS),
        "daemon_alive": alive,
        "tracebacks_in_log": log.count("Traceback"),
        "roles": results,
    }
