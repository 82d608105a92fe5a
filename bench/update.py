"""``biofo bench update``: what one streaming update costs against one forward pass.

For every rule, a network of the daemon's default shape (the bundled ECG base: 85 features,
its hidden widths, 5 classes) is timed on a real DS2 beat at batch 1: ``Learner.predict`` (one
forward pass) and ``Learner.learn`` (one update, which includes its own forward pass), each the
median of ``REPEATS`` calls after a warm-up, in CPU seconds of the calling thread (one torch
thread), which other processes on a shared machine do not inflate as they do wall time.
``update_over_forward`` is the ratio of the medians;
``macs_update_over_forward`` the same ratio in counted multiply-accumulates (``models.cost``),
which does not depend on the machine's load.

Peak memory against depth: the working memory of one learn call (``models.memory``: tensors
allocated during the call, weights and optimizer moments excluded) for Bio-FO and BP with 2 to 8
hidden layers of 256, at batch 1 (the daemon's case) and at batch 64.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench import datasets, report
from bench.rules import RULE_NAMES
from bench.training import MIB, single_thread

REPEATS = 200
DEPTHS = tuple(range(2, 9))
MEMORY_BATCHES = (1, 64)


def _median_s(fn: Any, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        began = time.thread_time()
        fn()
        times.append(time.thread_time() - began)
    return statistics.median(times)


def run(
    out: str = "bench/results",
    progress: bool = False,
    repeats: int = REPEATS,
    depths: tuple[int, ...] = DEPTHS,
) -> dict[str, Any]:
    from app.base_models import base_path
    from models import checkpoint
    from models.factory import build_learner
    from models.memory import peak_tensor_bytes
    from models.rules import RULES

    single_thread()
    started = time.perf_counter()
    base = checkpoint.loads(base_path("ecg").read_bytes())
    hidden = [layer["units"] for layer in base.spec["layers"]]
    beats = datasets.beats("100")
    x, y = beats.X[:1], beats.y[:1]
    common = {
        "input_dim": base.network.input_dim, "classes": list(base.classes), "seed": 0,
        "input_mean": base.spec["input_mean"], "input_std": base.spec["input_std"],
    }
    rules: dict[str, dict[str, Any]] = {}
    for name in [name for name in RULE_NAMES if name in RULES]:
        learner = build_learner({**common, "hidden": hidden, "rule": name})
        forward_s = _median_s(lambda: learner.predict(x), repeats)
        update_s = _median_s(lambda: learner.learn(x, y), repeats)
        forward_macs = learner.predict_detail(x).macs
        update_macs = learner.learn(x, y).macs
        rules[name] = {
            "update_over_forward": update_s / forward_s,
            "forward_ms": 1e3 * forward_s,
            "update_ms": 1e3 * update_s,
            "macs_forward": forward_macs,
            "macs_update": update_macs,
            "macs_update_over_forward": update_macs / forward_macs,
        }
    memory: dict[int, dict[str, dict[int, float]]] = {}
    for batch in MEMORY_BATCHES:
        xb, yb = beats.X[:batch], beats.y[:batch]
        memory[batch] = {}
        for name in ("biofo", "bp"):
            memory[batch][name] = {}
            for depth in depths:
                learner = build_learner({**common, "hidden": [256] * depth, "rule": name})
                learner.learn(xb, yb)
                peak = peak_tensor_bytes(lambda: learner.learn(xb, yb))[1]
                memory[batch][name][depth] = peak / MIB
    result = {
        "model": {"hidden": hidden, "input_dim": common["input_dim"], "classes": common["classes"]},
        "rules": rules,
        "peak_mem_mib": memory[1],
        "peak_mem_mib_batch64": memory[64],
        "repeats": repeats,
        "run_s": time.perf_counter() - started,
    }
    folder = Path(out)
    report.write_outputs(folder, "update", _markdown(result), result)
    report.plot_lines(
        {f"{name}, batch {batch}": (list(depths), [memory[batch][name][d] for d in depths])
         for batch in MEMORY_BATCHES for name in ("biofo", "bp")},
        "hidden layers (256 units)", "peak working memory of one update, MiB",
        "Peak memory of one update against depth", folder / "update-memory-depth.png",
    )
    return result


def _markdown(result: dict[str, Any]) -> str:
    rules = result["rules"]
    model = result["model"]
    lines = [
        "# Cost of one streaming update",
        "",
        f"Model: {model['input_dim']} → {' → '.join(map(str, model['hidden']))} → "
        f"{len(model['classes'])} (the bundled ECG base's shape), batch 1, one thread; median CPU "
        f"time of {result['repeats']} calls. Target: Bio-FO update ≤ 2.5 × forward.",
        "",
        report.markdown_table(
            ["rule", "forward ms", "update ms", "update / forward (time)",
             "update / forward (MACs)"],
            [[name, r["forward_ms"], r["update_ms"], r["update_over_forward"],
              r["macs_update_over_forward"]] for name, r in rules.items()],
        ),
        "",
        "## Peak working memory of one update (MiB) against depth (hidden layers of 256)",
        "",
    ]
    for key, batch in (("peak_mem_mib", 1), ("peak_mem_mib_batch64", 64)):
        table = result[key]
        depths = list(table["biofo"])
        lines += [
            f"Batch {batch}:",
            "",
            report.markdown_table(
                ["rule", *map(str, depths)],
                [[name, *(table[name][d] for d in depths)] for name in table],
            ),
            "",
        ]
    lines.append(f"Wall time of this run: {result['run_s']:.0f} s.")
    return "\n".join(lines)
