"""Checkpoints of a torch ``Learner`` as engine-neutral bytes (format: ``models.archive``).

Float bits are copied as is, so ``loads(dumps(learner))`` is bit-identical and continues learning
identically; the onnxruntime engine reads and writes the same bytes without torch.
"""

from __future__ import annotations

import torch

from models.archive import Archive, pack, read_meta, unpack
from models.factory import build_learner
from models.learner import Learner

__all__ = ["dumps", "loads", "read_meta"]


def dumps(learner: Learner) -> bytes:
    arrays = {key: tensor.numpy() for key, tensor in learner.state_dict().items()}
    return pack(Archive(learner.spec, learner.version, list(learner.classes), arrays))


def loads(blob: bytes) -> Learner:
    archive = unpack(blob)
    learner = build_learner(archive.spec)
    state = {key: torch.from_numpy(array.copy()) for key, array in archive.arrays.items()}
    learner.load_state_dict(state)
    return learner
