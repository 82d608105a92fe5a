"""Independent random streams derived from the one seed a model spec carries.

Network initialisation, a rule's fixed random matrices and the randomness a rule may use while
learning each get their own stream, so adding a layer option never shifts the fixed matrices of a
rule and vice versa.
"""

from __future__ import annotations

import numpy as np
import torch

PURPOSES = ("init", "rule", "learn")


def derived_seed(seed: int, purpose: str) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {PURPOSES}")
    state = np.random.SeedSequence([int(seed), PURPOSES.index(purpose)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def generator(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, purpose))
