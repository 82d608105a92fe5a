"""The checkpoint file format, in numpy alone: an ``.npz`` of named arrays plus JSON metadata.

The archive holds one array per ``Learner.state_dict()`` entry (weights, masks, fixed heads and
feedback matrices, optimizer moments, counters, the learner's generator state) and ``__meta__``:
UTF-8 JSON bytes ``{"format", "format_version", "spec", "version", "classes"}`` stored as a uint8
array. Nothing is pickled, and loading uses ``np.load(..., allow_pickle=False)``, so a reader in
any language that can read ``.npy`` files can run inference from it.

Every engine reads and writes checkpoints through this module (the torch one via
``models.checkpoint``), so there is one format and an engine without torch never imports it.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "biofo.checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
# np.load parses each .npy header with ast.literal_eval, and CPython's AST builder keeps one
# recursion counter per interpreter (gh-106905): two threads loading at once can fail with
# "SystemError: AST constructor recursion depth mismatch", seen when the daemon reloads evicted
# models under load. Loads take this lock (unpacking a bundled base takes about 5 ms).
_NP_LOAD = threading.Lock()


@dataclass
class Archive:
    spec: dict[str, Any]
    version: int
    classes: list[str]
    arrays: dict[str, np.ndarray]  # state-dict name -> array, as the learner's state_dict holds it


def pack(archive: Archive) -> bytes:
    if META_KEY in archive.arrays:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": archive.spec,
        "version": int(archive.version),
        "classes": list(archive.classes),
    }
    arrays = dict(archive.arrays)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(blob: bytes) -> Archive:
    with _NP_LOAD, np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        meta = _meta(archive)
        arrays = {key: archive[key] for key in archive.files if key != META_KEY}
    return Archive(meta["spec"], int(meta["version"]), list(meta["classes"]), arrays)


def read_meta(blob: bytes) -> dict[str, Any]:
    with _NP_LOAD, np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return _meta(archive)


def _meta(archive: Any) -> dict[str, Any]:
    if META_KEY not in archive.files:
        raise ValueError("not a biofo checkpoint: no __meta__ entry")
    meta = json.loads(archive[META_KEY].tobytes().decode("utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"unsupported checkpoint format {meta.get('format')!r} v{meta.get('format_version')}"
        )
    return meta
