"""Map a file's or a device's EEG channel names onto one canonical bipolar montage.

The canonical montage is the 18-channel "double banana" present in nearly every CHB-MIT file.
Each canonical channel is taken, in order of preference, from:

1. the same bipolar pair under any spelling (case, spaces, an ``EEG`` prefix, MNE's ``-0``/``-1``
   suffix for duplicate names, old 10-20 names T3/T4/T5/T6, the ``01`` typo for ``O1``);
2. the reversed pair with its sign flipped (``P7-T7`` is exactly ``-(T7-P7)``: a bipolar
   derivation is a difference of two potentials, so reversing it is lossless);
3. two referential channels on the same reference (``FP1-REF`` and ``F7-REF``, ``FP1`` and ``F7``,
   ``FP1-CS2`` and ``F7-CS2``, ``FP1-A1`` and ``F7-A1``, eegmmidb's dot-padded ``Fp1.`` and
   ``F7..``), subtracted: the reference cancels. Two electrodes on different references (``FP1-A1``
   and ``FZ-A2``) are not subtracted, since the difference would keep ``A1 - A2`` in it.

A canonical channel found nowhere is filled with zeros and reported in ``missing``. Every input
channel that feeds no canonical channel (placeholders ``-`` and ``.``, ``--0``-style dummies,
``EDF Annotations``, ECG, VNS, other derivations, later duplicates) is reported in ``ignored``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from signals.errors import SegmentRejected

CANONICAL_CHANNELS: tuple[str, ...] = (
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1",
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
    "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
    "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
    "FZ-CZ", "CZ-PZ",
)  # fmt: skip

# 10-20 positions (with the 10-10 names used by CHB-MIT) that can appear in a derivation.
_ELECTRODES = frozenset(
    "FP1 FP2 FPZ AF3 AF4 AF7 AF8 F1 F2 F3 F4 F5 F6 F7 F8 F9 F10 FZ FC1 FC2 FC3 FC4 FC5 FC6 FCZ "
    "FT7 FT8 FT9 FT10 C1 C2 C3 C4 C5 C6 CZ T7 T8 T9 T10 TP7 TP8 TP9 TP10 CP1 CP2 CP3 CP4 CP5 CP6 "
    "CPZ P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 PZ PO3 PO4 PO7 PO8 POZ O1 O2 OZ IZ".split()
)
# Old 10-20 names of the same positions, and the digit-for-letter typo found in CHB-MIT headers.
_ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8", "01": "O1"}
# Second halves that name a common reference rather than an electrode.
_REFERENCES = frozenset(
    {"REF", "CS2", "AVG", "AV", "LE", "AR", "A1A2", "M1M2", "A1", "A2", "M1", "M2"}
)
_MNE_DUPLICATE = re.compile(r"^(.+-.+)-\d+$")


def _electrode(token: str) -> str | None:
    token = _ALIASES.get(token, token)
    return token if token in _ELECTRODES else None


def parse_channel(name: str) -> tuple[str, str] | None:
    """``(first, second)`` electrodes of a channel name; the second is ``""`` for a referential
    channel named by its electrode alone and the reference name for ``E-REF`` style names.
    None for anything that is not a scalp EEG derivation."""
    text = name.strip().upper()
    if text.startswith("EEG "):
        text = text[4:]
    # eegmmidb's EDF writer pads each label to four characters with dots ("T7..", "Fp1.").
    text = re.sub(r"\s+", "", text).rstrip(".")
    duplicate = _MNE_DUPLICATE.match(text)
    if duplicate:
        text = duplicate.group(1)
    parts = text.split("-")
    if len(parts) == 1:
        first = _electrode(parts[0])
        return (first, "") if first else None
    if len(parts) != 2:
        return None
    first = _electrode(parts[0])
    if first is None:
        return None
    if parts[1] in _REFERENCES:
        return first, parts[1]
    second = _electrode(parts[1])
    return (first, second) if second else None


@dataclass(frozen=True)
class Derivation:
    """A canonical channel built as the difference of two referential input channels."""

    channel: str  # canonical name, e.g. "FP1-F7"
    plus: str  # input channel names, as sent
    minus: str


@dataclass(frozen=True)
class ChannelMap:
    """How to build each canonical channel from an input channel list.

    ``terms[k]`` lists ``(input index, weight)`` pairs summed into canonical channel ``k``;
    an empty tuple means the channel is missing (zeros)."""

    channels: tuple[str, ...]
    terms: tuple[tuple[tuple[int, float], ...], ...]
    ignored: tuple[str, ...]
    missing: tuple[str, ...]
    reversed: tuple[str, ...]
    derived: tuple[str, ...]

    def derivations(self) -> tuple[Derivation, ...]:
        """Each derived canonical channel with the two input channels it was subtracted from."""
        out = []
        for canonical, terms in zip(CANONICAL_CHANNELS, self.terms):
            if canonical in self.derived:
                (plus, _), (minus, _) = terms
                out.append(Derivation(canonical, self.channels[plus], self.channels[minus]))
        return tuple(out)

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """``(len(channels), n)`` -> ``(len(CANONICAL_CHANNELS), n)`` float64."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[0] != len(self.channels):
            raise SegmentRejected(
                "channels", f"samples has shape {samples.shape}; expected ({len(self.channels)}, n) "
                "to match the channel names"
            )
        out = np.zeros((len(CANONICAL_CHANNELS), samples.shape[1]), dtype=np.float64)
        for k, terms in enumerate(self.terms):
            for index, weight in terms:
                out[k] += weight * samples[index]
        return out


@lru_cache(maxsize=256)
def _map_channels(channels: tuple[str, ...]) -> ChannelMap:
    bipolar: dict[tuple[str, str], int] = {}
    referential: dict[str, dict[str, int]] = {}
    for index, name in enumerate(channels):
        parsed = parse_channel(name)
        if parsed is None:
            continue
        first, second = parsed
        if second and second not in _REFERENCES:
            bipolar.setdefault((first, second), index)
        else:
            referential.setdefault(second, {}).setdefault(first, index)

    terms: list[tuple[tuple[int, float], ...]] = []
    missing: list[str] = []
    reversed_: list[str] = []
    derived: list[str] = []
    for canonical in CANONICAL_CHANNELS:
        first, second = canonical.split("-")
        if (first, second) in bipolar:
            terms.append(((bipolar[(first, second)], 1.0),))
        elif (second, first) in bipolar:
            terms.append(((bipolar[(second, first)], -1.0),))
            reversed_.append(canonical)
        else:
            shared = [ref for ref in referential.values() if first in ref and second in ref]
            if shared:
                terms.append(((shared[0][first], 1.0), (shared[0][second], -1.0)))
                derived.append(canonical)
            else:
                terms.append(())
                missing.append(canonical)
    used = {index for channel_terms in terms for index, _ in channel_terms}
    return ChannelMap(
        channels=channels,
        terms=tuple(terms),
        ignored=tuple(name for index, name in enumerate(channels) if index not in used),
        missing=tuple(missing),
        reversed=tuple(reversed_),
        derived=tuple(derived),
    )


def map_channels(channels: list[str] | tuple[str, ...]) -> ChannelMap:
    """The canonical mapping for a channel list (cached: a stream sends the same list each time)."""
    return _map_channels(tuple(channels))


@dataclass(frozen=True)
class CanonicalEeg:
    samples: np.ndarray  # (len(CANONICAL_CHANNELS), n) float64, microvolts
    ignored: tuple[str, ...]
    missing: tuple[str, ...]
    reversed: tuple[str, ...]
    derived: tuple[str, ...]


def to_canonical(samples: np.ndarray, channels: list[str] | tuple[str, ...]) -> CanonicalEeg:
    """Samples in the canonical montage, with what was ignored, missing, reversed or derived."""
    mapping = map_channels(channels)
    return CanonicalEeg(
        samples=mapping.apply(samples),
        ignored=mapping.ignored,
        missing=mapping.missing,
        reversed=mapping.reversed,
        derived=mapping.derived,
    )
