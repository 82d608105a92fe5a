"""The bundled base models every new patient's model is forked from.

Each modality has ``models/pretrained/<modality>.biofo`` (an engine-neutral checkpoint) and
``<modality>.card.json`` (data, protocol, metrics, seed), both written by ``biofo train-base``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRETRAINED = Path(__file__).resolve().parents[1] / "models" / "pretrained"
MODALITIES = ("ecg", "eeg")


@dataclass(frozen=True)
class BaseModel:
    name: str
    modality: str
    rule: str
    checkpoint: bytes
    card: dict[str, Any]


def base_path(modality: str, folder: Path = PRETRAINED) -> Path:
    return folder / f"{modality}.biofo"


def card_path(modality: str, folder: Path = PRETRAINED) -> Path:
    return folder / f"{modality}.card.json"


def load_bases(folder: Path = PRETRAINED) -> dict[str, BaseModel]:
    bases: dict[str, BaseModel] = {}
    for modality in MODALITIES:
        path = base_path(modality, folder)
        if not path.exists():
            raise FileNotFoundError(f"bundled base model missing: {path} (run `biofo train-base`)")
        card = json.loads(card_path(modality, folder).read_text())
        bases[modality] = BaseModel(
            name=card["name"], modality=modality, rule=card["rule"], checkpoint=path.read_bytes(), card=card
        )
    return bases
