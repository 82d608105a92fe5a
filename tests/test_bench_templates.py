"""``biofo bench templates`` as a user runs it (shorter: 1 minute labelled, 2 minutes of record 208)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_templates_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "biofo"), "bench", "templates", "--record", "208", "--label-minutes", "1",
         "--minutes", "2", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    template, one_by_one = result["template"], result["one_by_one"]
    # One key per template and one Enter; every beat of the first minute labelled and learned.
    assert template["key_presses"] == template["templates"] + 1
    assert template["updates_applied"] == template["beats_streamed"] == one_by_one["beats_streamed"]
    assert one_by_one["key_presses"] == one_by_one["updates_applied"]
    assert result["press_ratio"] == one_by_one["key_presses"] / template["key_presses"] > 1
    assert result["no_labels"]["updates_applied"] == 0
    assert template["rest"]["n"] == one_by_one["rest"]["n"] > 0
    assert "| template |" in (tmp_path / "template_workflow_208.md").read_text()
