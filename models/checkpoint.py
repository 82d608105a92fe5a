"""Checkpoints as engine-neutral bytes: an ``.npz`` of numpy arrays plus the JSON spec.

The archive holds one array per ``Learner.state_dict()`` entry (weights, masks, fixed heads and
feedback matrices, optimizer moments, counters, the learner's generator state) and ``__meta__``:
UTF-8 JSON bytes ``{"format", "format_version", "spec", "version", "classes"}`` stored as a uint8
array. Nothing is pickled, and loading uses ``np.load(..., allow_pickle=False)``, so a reader in
any language that can read ``.npy`` files can run inference from it. Float bits are copied as is,
so ``loads(dumps(learner))`` is bit-identical and continues learning identically.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch

from models.factory import build_learner
from models.learner import Learner

FORMAT = "biofo.checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


def dumps(learner: Learner) -> bytes:
    arrays = {key: tensor.numpy() for key, tensor in learner.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": learner.spec,
        "version": learner.version,
        "classes": list(learner.classes),
    }
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_meta(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
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


def loads(blob: bytes) -> Learner:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        meta = _meta(archive)
        state = {
            key: torch.from_numpy(archive[key].copy()) for key in archive.files if key != META_KEY
        }
    learner = build_learner(meta["spec"])
    learner.load_state_dict(state)
    return learner
