"""AAMI EC57 heartbeat classes and the MIT-BIH beat symbols that map to them.

The mapping is the standard one (N = normal, bundle-branch and escape beats; S = supraventricular
ectopic; V = ventricular ectopic; F = fusion; Q = paced and unclassifiable). Annotations that are
not beats (rhythm changes ``+``, noise ``~``, artefacts ``|``, comments ``"``, blocked P waves
``x``, flutter waves ``!``, flutter onset/end ``[`` ``]``) have no class.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

SYMBOL_TO_AAMI: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("N", "L", "R", "e", "j"), "N"),
        **dict.fromkeys(("A", "a", "J", "S"), "S"),
        **dict.fromkeys(("V", "E"), "V"),
        "F": "F",
        **dict.fromkeys(("/", "f", "Q"), "Q"),
    }
)


def aami_class(symbol: str) -> str | None:
    """The AAMI class of a MIT-BIH annotation symbol, or None when the symbol is not a beat."""
    return SYMBOL_TO_AAMI.get(symbol)


def aami_index(symbol: str) -> int | None:
    """The position of the symbol's class in ``AAMI_CLASSES``, or None when it is not a beat."""
    cls = SYMBOL_TO_AAMI.get(symbol)
    return None if cls is None else AAMI_CLASSES.index(cls)
