"""Every learning rule documents itself as river's estimators do: its class docstring says what it
stores and what a step costs, and holds a small example that runs here as a doctest.

The examples are formula-level checks on a few synthetic numbers (shapes of what is stored, the
MACs a step counts, a loss going down); behaviour on real records is tested elsewhere.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from models.rules import RULES

MODULES = sorted({rule.__module__ for rule in RULES.values()})


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_class_says_what_it_stores_and_costs_with_an_example(name: str) -> None:
    doc = RULES[name].__dict__.get("__doc__") or ""
    assert "Stores between steps" in doc, f"{name}: no storage in its class docstring"
    assert "cost per sample" in doc.lower(), f"{name}: no cost in its class docstring"
    assert ">>> " in doc, f"{name}: no example in its class docstring"


@pytest.mark.parametrize("module", MODULES)
def test_rule_examples_run(module: str) -> None:
    tests = doctest.DocTestFinder().find(importlib.import_module(module))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{module}: no examples"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
