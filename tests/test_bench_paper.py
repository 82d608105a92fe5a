"""`biofo bench paper --dataset ... --quick --json`, run as a user runs it, on the real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.paper import PAPER_ACCURACY, PAPER_DEPTH, PAPER_RULES, QUICK_SCALES
from bench.rules import PAPER_WH

ROOT = Path(__file__).resolve().parents[1]
RULE_KEYS = {"accuracy", "joules", "joules_to_target", "paper_wh", "paper_accuracy"}


def _run(dataset: str, out: Path) -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    biofo = Path(sys.executable).with_name("biofo")
    done = subprocess.run(
        [str(biofo), "bench", "paper", "--dataset", dataset, "--quick", "--out", str(out),
         "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dataset", ["mitbih", "chbmit"])
def test_bench_paper_quick(dataset: str, tmp_path: Path) -> None:
    result = _run(dataset, tmp_path)
    assert result["dataset"] == dataset
    assert list(result["rules"]) == list(PAPER_RULES)
    sources = {row["energy_source"] for row in result["rules"].values()}
    assert len(sources) == 1 and result["meter"].startswith(sources.pop())
    for name, row in result["rules"].items():
        assert RULE_KEYS <= set(row), name
        assert 0.0 <= row["accuracy"] <= 1.0, name
        assert row["joules"] > 0, name
        assert row["joules_to_target"] is not None and 0 <= row["joules_to_target"] <= row["joules"]
        assert row["paper_wh"] == PAPER_WH[dataset].get(name)
        assert row["paper_accuracy"] == PAPER_ACCURACY[dataset][name]
        assert row["biofo_over_rule"] == pytest.approx(
            result["rules"]["biofo"]["joules"] / row["joules"])
    # Greedy Bio-FO: one phase per layer, each as long as the others.
    biofo = result["rules"]["biofo"]
    assert biofo["steps"] == biofo["greedy_steps"] * PAPER_DEPTH[dataset]
    assert len(result["biofo_layers"]["val_end_of_layer"]) == PAPER_DEPTH[dataset]
    # Two factors: the longer schedule takes more steps and more work for every rule.
    large, small = (result["scales"][f"{scale:g}"]["rules"] for scale in QUICK_SCALES)
    for name in PAPER_RULES:
        assert large[name]["steps"] > small[name]["steps"], name
        assert large[name]["macs_total"] > small[name]["macs_total"], name
    # Each greedy phase re-runs the frozen layers before it, so from layer 2 on (equal widths)
    # every phase's step costs more than the one before.
    phases = biofo["macs_per_step_by_layer"][1:]
    assert all(later > earlier for earlier, later in zip(phases, phases[1:]))
    assert set(result["energy_order"]) == {f"{scale:g}" for scale in QUICK_SCALES}
    sizes = result["sizes"]
    assert sizes["train"] > sizes["test"] > sizes["validation"] > 0
    honest = result["patient_level"]
    assert list(honest["rules"]) == list(PAPER_RULES)
    for name, row in honest["rules"].items():
        assert 0 <= row["common_target_joules"] <= row["joules"], name
    assert all(isinstance(met, bool) for met in honest["goals"].values())
    table = (tmp_path / f"paper-{dataset}-quick.md").read_text()
    # Its settings row, one row per factor and the patient-level row.
    assert table.count("| biofo |") == 1 + 2 + 1
    for plot in ("accuracy-energy", "layers"):
        assert (tmp_path / f"paper-{dataset}-quick-{plot}.png").stat().st_size > 0
