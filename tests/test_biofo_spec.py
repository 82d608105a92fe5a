"""``models.biofo_spec``: the one description of Bio-FO both engines read, importable without torch.

Its options, state keys and optimizer slots are compared here with what the torch code builds,
so the description cannot drift from the torch rule and optimizers it describes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.biofo_onnx import plan_for
from models.biofo_spec import Options, optimizer_slots
from models.factory import build_learner
from models.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoTorch())
import models.biofo_spec, models.onnx_graph, models.biofo_onnx, models.ort_learner
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "torch")))
"""


def test_spec_and_graph_toolkit_import_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    "config",
    [
        {"name": "adam", "lr": 1e-3},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        {"name": "sgd", "lr": 0.1},
    ],
)
def test_optimizer_slots_are_what_the_optimizers_keep(config: dict) -> None:
    optimizer = build_optimizer(config)
    optimizer.bind({"w": torch.zeros(2, 3)})
    kept = tuple(key.removeprefix("w.") for key in optimizer.state_dict())
    assert optimizer_slots(optimizer.describe()) == kept


@pytest.mark.parametrize("head", ["gaussian", "ternary"])
def test_state_keys_of_the_graphs_are_the_torch_learners(head: str) -> None:
    learner = build_learner({
        "input_dim": 5, "classes": ["a", "b", "c"], "hidden": [6, 6, 6], "rule": "biofo",
        "rule_options": {"head": head},
    })
    torch_keys = {key for key in learner.state_dict() if not key.startswith("learner.")}
    assert set(plan_for(learner.spec).state_shapes()) == torch_keys
    assert learner.rule.options == Options(head=head).as_dict()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"head": "uniform"}, "biofo head must be one of"),
        ({"schedule": "layerwise"}, "biofo schedule must be one of"),
        ({"greedy_steps": 0}, "greedy_steps must be >= 1"),
        ({"early_exit": 1.5}, r"early_exit must be in \(0, 1\]"),
        ({"head_scale": 0.0}, "head_scale must be positive"),
    ],
)
def test_bad_options_are_refused_by_the_torch_rule_with_the_reason(options, message) -> None:
    spec = {"input_dim": 2, "classes": ["a", "b"], "hidden": [3], "rule_options": options}
    with pytest.raises(ValueError, match=message):
        build_learner(spec)


def test_unknown_option_is_refused() -> None:
    spec = {"input_dim": 2, "classes": ["a", "b"], "hidden": [3], "rule_options": {"heads": 2}}
    with pytest.raises(ValueError, match="spec.rule_options for 'biofo'"):
        build_learner(spec)
