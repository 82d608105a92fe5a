"""The examples in the docstrings of the scoring and tally modules run as doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["signals.classification", "app.prequential"])
def test_module_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
