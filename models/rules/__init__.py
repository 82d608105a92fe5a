"""Learning rules by name. Every rule implements ``models.rules.base.Rule``."""

from __future__ import annotations

from models.rules.base import Prediction, Rule, StepContext, Update
from models.rules.biofo import BioFO
from models.rules.bp import BP
from models.rules.dfa import DFA, SDFA
from models.rules.drtp import DRTP
from models.rules.fa import FA
from models.rules.ff import FF
from models.rules.lls import LLS, LLSM, LLSMxM
from models.rules.pepita import PEPITA
from models.rules.ssdfa import SSDFA

RULES: dict[str, type[Rule]] = {
    rule.name: rule
    for rule in (BioFO, BP, FA, DFA, SDFA, SSDFA, DRTP, PEPITA, FF, LLS, LLSM, LLSMxM)
}

__all__ = ["RULES", "Prediction", "Rule", "StepContext", "Update"]
