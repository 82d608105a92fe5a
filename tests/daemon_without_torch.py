"""The daemon on the onnxruntime engine, in a process that checks torch is never imported.

    python -m tests.daemon_without_torch learn|restart DB [--block-torch]    # from the repository

Runs the daemon's own app (``app.server.create_app``, lifespan, update worker) in-process through
Starlette's test client and replays a real MIT-BIH record into it with the reference labels:

- ``learn``: posts the first minutes of record 208, labels the first windows, waits until every
  label is learned, then exits with ``os._exit`` (a crash: no shutdown checkpoint);
- ``restart``: opens the same database, so the start restores the newest checkpoint and replays
  the labels after it, then posts and labels the next minute and shuts down cleanly.

``--block-torch`` makes ``import torch`` fail, as on a base install without the ``torch`` extra;
otherwise torch stays importable and must simply never be imported. The last line of stdout is
a JSON summary; the exit status is non-zero if torch was imported.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.abc
import json
import os
import sys
from pathlib import Path

PATIENT = "bed-ort"
RECORD = "208"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
LEARN_MINUTES, RESTART_MINUTES = 1.0, 1.5
LEARN_LABELS = 25


class NoTorch(importlib.abc.MetaPathFinder):
    """``import torch`` fails as if torch were not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _label(client, windows: list[dict]) -> int:
    from signals.replay import ecg_reference

    reference = ecg_reference(RECORD)
    labels = [
        {"window_id": w["id"], "label": reference.label_at(w["offset_s"]), "labeled_by": "dr test"}
        for w in windows if reference.label_at(w["offset_s"]) is not None
    ]
    response = client.post("/v1/labels", json={"labels": labels})
    assert response.status_code == 202, response.text
    return int(response.json()["update_seq"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["learn", "restart"])
    parser.add_argument("db")
    parser.add_argument("--block-torch", action="store_true")
    args = parser.parse_args()
    if args.block_torch:
        sys.meta_path.insert(0, NoTorch())

    from fastapi.testclient import TestClient

    from app.client import V1Calls

    class InProcess(V1Calls, TestClient):
        """The daemon's app in this process, with the v1 calls."""
    from app.server import create_app
    from app.settings import Settings
    from signals.replay import ecg_requests

    settings = Settings.from_env(db=args.db, admin_token=ADMIN_TOKEN)
    bodies = list(ecg_requests(RECORD, minutes=RESTART_MINUTES, patient_id=PATIENT))
    learn_bodies = [body for body in bodies if body["start"] < 60.0 * LEARN_MINUTES]
    app = create_app(settings)
    client = InProcess(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    client.__enter__()  # the lifespan: store, restore and replay, update worker
    summary: dict[str, object] = {"engine": app.state.registry.engine}
    if args.phase == "learn":
        windows = []
        for body in learn_bodies:
            response = client.post("/v1/windows", json=body)
            assert response.status_code == 201, response.text
            windows += response.json()["windows"]
        seq = _label(client, windows[:LEARN_LABELS])
    else:
        model = client.get(f"/v1/models/ecg/{PATIENT}").json()
        summary["restored_version"] = model["version"]
        summary["restored_onnx_sha256"] = hashlib.sha256(
            client.get(f"/v1/models/ecg/{PATIENT}/onnx").content
        ).hexdigest()
        windows = []
        for body in bodies[len(learn_bodies):]:
            response = client.post("/v1/windows", json=body)
            assert response.status_code == 201, response.text
            windows += response.json()["windows"]
        seq = _label(client, windows)
    model = client.wait_applied("ecg", PATIENT, seq)
    onnx_blob = client.get(f"/v1/models/ecg/{PATIENT}/onnx").content
    summary.update(
        version=model["version"], applied_seq=model["applied_seq"],
        onnx_sha256=hashlib.sha256(onnx_blob).hexdigest(),
    )
    if args.phase == "restart":
        Path(args.db).with_suffix(".onnx").write_bytes(onnx_blob)
        client.__exit__(None, None, None)  # clean shutdown: the shutdown checkpoint
    summary["torch_imported"] = "torch" in sys.modules
    print(json.dumps(summary), flush=True)
    status = 1 if summary["torch_imported"] else 0
    if args.phase == "learn":
        os._exit(status)  # a crash: no shutdown, no checkpoint of the labels since the last one
    return status


if __name__ == "__main__":
    sys.exit(main())
