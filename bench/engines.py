"""``biofo bench engines``: the torch and onnxruntime engines side by side.

Latency: the bundled ECG base model (``models/pretrained/ecg.biofo``) is loaded by both engines
through the daemon's own interface (``app.engine.load_learner``) and fed consecutive real beats of
MIT-BIH record 208 (DS2, never seen by the base), one beat (batch 1) or 32 beats (batch 32) per
call: ``predict`` for inference, ``learn`` with the reference labels for an update. Both run on one
thread (``torch.set_num_threads(1)``; the onnxruntime sessions are single-threaded), and the two
engines alternate in short rounds so that load from other processes falls on both alike. Each
figure is the median over every timed call, after a warm-up.

Ageing: a patient's model keeps learning for days, and Adam's first moments of silent units decay
into subnormal floats after about 800 updates (``models.denormals``). Each engine runs
``AGE_UPDATES`` consecutive batch-1 updates on a fresh thread, through the engine's ``learn`` (which
flushes subnormals on its thread, as in the daemon) and, side by side, through the learner beneath
it without the flush (the path before); the figures are the median of the first and of the last
``AGE_WINDOW`` calls.

Install size: the ``site-packages`` of fresh virtual environments, installed by pip with the
versions running here: the onnxruntime engine's runtime (numpy, onnx, onnxruntime), then the same
plus torch; and the daemon as ``pip install .`` without and with the ``torch`` extra.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.base_models import base_path
from app.engine import ENGINES, Engine, load_learner
from models.denormals import flush_subnormals
from signals.ecg_features import beat_table

REPO = Path(__file__).resolve().parents[1]
RECORD = "208"
BATCHES = (1, 32)
ROUNDS = 10
CALLS_PER_ROUND = 30
WARMUP = 20
AGE_UPDATES = 3000
AGE_WINDOW = 200
RESULTS = "engines.md"
PACKAGE_FILES = ("pyproject.toml", "README.md", "app", "models", "signals", "bench")


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def _timed(call: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def latencies(
    blob: bytes, X: np.ndarray, y: np.ndarray, progress: bool
) -> dict[str, dict[str, float]]:
    """Median ms per call, ``{engine: {"infer_ms_b1", "update_ms_b1", ...}}``."""
    import torch

    torch.set_num_threads(1)
    engines: dict[str, Engine] = {name: load_learner(blob, name) for name in ENGINES}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in ENGINES}
    position = dict.fromkeys(ENGINES, 0)

    def batch(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        start = position[name] % (len(y) - size)
        position[name] += size
        return X[start : start + size], y[start : start + size]

    steps = [(name, size) for size in BATCHES for name in ENGINES]
    for name, size in steps:
        for _ in range(WARMUP):
            features, labels = batch(name, size)
            engines[name].predict(features)
            engines[name].learn(features, labels)
    for _ in tqdm(range(ROUNDS), desc="engines", disable=not progress):
        for name, size in steps:
            infer = samples[name].setdefault(f"infer_ms_b{size}", [])
            update = samples[name].setdefault(f"update_ms_b{size}", [])
            engine = engines[name]
            for _ in range(CALLS_PER_ROUND):
                features, labels = batch(name, size)
                infer.append(_timed(engine.predict, features))
                update.append(_timed(engine.learn, features, labels))
    return {
        name: {key: _median_ms(values) for key, values in figures.items()}
        for name, figures in samples.items()
    }


def ageing(blob: bytes, X: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """``{engine: {"flushed_first_ms", "flushed_last_ms", "unflushed_first_ms", ...}}``."""
    figures: dict[str, dict[str, float]] = {name: {} for name in ENGINES}
    for name in ENGINES:
        for arm in ("flushed", "unflushed"):
            seconds: list[float] = []

            def updates(name: str = name, arm: str = arm, seconds: list[float] = seconds) -> None:
                engine = load_learner(blob, name)
                # The learner beneath the engine: the same update without the engine's flush, on a
                # thread that does not inherit a flush from this one.
                learn = engine.learn if arm == "flushed" else engine._learner.learn
                flush_subnormals(False)
                for k in range(AGE_UPDATES):
                    start = k % (len(y) - 1)
                    seconds.append(_timed(learn, X[start : start + 1], y[start : start + 1]))

            worker = threading.Thread(target=updates)
            worker.start()
            worker.join()
            figures[name][f"{arm}_first_ms"] = _median_ms(seconds[:AGE_WINDOW])
            figures[name][f"{arm}_last_ms"] = _median_ms(seconds[-AGE_WINDOW:])
    return figures


def _site_packages_mib(python: Path) -> float:
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    total = sum(
        (Path(folder) / name).lstat().st_size
        for folder, _, names in os.walk(site) for name in names
    )
    return total / 2**20


def _pip_install(python: Path, requirements: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", *requirements],
        check=True, timeout=1800,
    )


def _package_copy(target: Path) -> Path:
    """The files ``pip install .`` reads, copied so that building leaves the repository alone."""
    target.mkdir()
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / name, target / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, target / name)
    return target


def install_sizes(progress: bool) -> dict[str, dict[str, float]]:
    """MiB of fresh environments: ``{"engine"|"daemon": {"onnxruntime": ..., "torch": ...}}``.

    torch is pinned to the exact build running here (the ``torch`` extra's CPU build): an
    unpinned torch from PyPI would be the multi-GB CUDA build."""
    runtime = [f"{name}=={version(name)}" for name in ("numpy", "onnx", "onnxruntime")]
    torch_pin = f"torch=={version('torch')}"
    sizes: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="biofo-install-") as folder:
        plans = {"engine": runtime, "daemon": [str(_package_copy(Path(folder) / "src"))]}
        for kind, requirements in tqdm(plans.items(), desc="installs", disable=not progress):
            venv = Path(folder) / kind
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            python = venv / "bin" / "python"
            _pip_install(python, requirements)
            imports = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
            if imports.returncode == 0:
                raise RuntimeError(f"{kind} install without torch pulled torch: {requirements}")
            without = _site_packages_mib(python)
            _pip_install(python, [torch_pin])
            sizes[kind] = {"onnxruntime": without, "torch": _site_packages_mib(python)}
    return sizes


def _markdown(result: dict[str, object]) -> str:
    rows = [
        "# Engines: torch eager vs onnxruntime",
        "",
        f"Bundled ECG base model, MIT-BIH record {RECORD} beats; median ms per call over "
        f"{ROUNDS * CALLS_PER_ROUND} calls, one thread per engine; {result['machine']}.",
        "",
        "| engine | infer b1 | update b1 | infer b32 | update b32 | install MiB | daemon MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    daemon = result["daemon_install_mib"]
    for name in ENGINES:
        f = result[name]
        rows.append(
            f"| {name} | {f['infer_ms_b1']:.3f} | {f['update_ms_b1']:.3f} "
            f"| {f['infer_ms_b32']:.3f} | {f['update_ms_b32']:.3f} "
            f"| {f['install_mib']:.0f} | {daemon[name]:.0f} |"
        )
    rows += [
        "",
        f"Batch-1 update ms over {AGE_UPDATES} consecutive updates on one thread (median of the "
        f"first and of the last {AGE_WINDOW}), with subnormals flushed (the daemon) and without:",
        "",
        "| engine | flushed, first | flushed, last | not flushed, first | not flushed, last |",
        "|---|---|---|---|---|",
    ]
    for name in ENGINES:
        f = result["ageing"][name]
        rows.append(
            f"| {name} | {f['flushed_first_ms']:.3f} | {f['flushed_last_ms']:.3f} "
            f"| {f['unflushed_first_ms']:.3f} | {f['unflushed_last_ms']:.3f} |"
        )
    speed, ratio = result["speedup"], result["install_ratio"]
    rows += [
        "",
        "Update / inference at batch 1: "
        + ", ".join(f"{name} {result['update_over_infer_b1'][name]:.1f}×" for name in ENGINES)
        + " (target for onnxruntime: ≤ 2.5×).",
        f"onnxruntime speed-up: inference {speed['infer_b1']:.2f}× (b1), {speed['infer_b32']:.2f}× "
        f"(b32); update {speed['update_b1']:.2f}× (b1), {speed['update_b32']:.2f}× (b32).",
        f"Install: the engine runtime is {ratio['engine']:.1f}× smaller without torch "
        f"({result['requirements']}); the whole daemon (`pip install .` vs `.[torch]`) "
        f"{ratio['daemon']:.1f}× smaller.",
        "",
        "`install MiB`: site-packages of a fresh venv with the onnxruntime engine's runtime, "
        "or the same plus torch. `daemon MiB`: `pip install .` without and with torch.",
        "",
    ]
    return "\n".join(rows)


def run(out: str = "bench/results", progress: bool = False) -> dict[str, object]:
    started = time.perf_counter()
    path = base_path("ecg")
    if not path.exists():
        raise FileNotFoundError(f"bundled ECG base model missing: {path} (run `biofo train-base`)")
    table = beat_table(RECORD)
    timings = latencies(path.read_bytes(), table.X, table.y, progress)
    aged = ageing(path.read_bytes(), table.X, table.y)
    sizes = install_sizes(progress)
    result: dict[str, object] = {
        name: {**timings[name], "install_mib": sizes["engine"][name]} for name in ENGINES
    }
    result["ageing"] = aged
    result["update_over_infer_b1"] = {
        name: timings[name]["update_ms_b1"] / timings[name]["infer_ms_b1"] for name in ENGINES
    }
    result["daemon_install_mib"] = sizes["daemon"]
    result["speedup"] = {
        f"{kind}_b{size}": timings["torch"][f"{kind}_ms_b{size}"]
        / timings["onnxruntime"][f"{kind}_ms_b{size}"]
        for kind in ("infer", "update") for size in BATCHES
    }
    result["install_ratio"] = {
        kind: sizes[kind]["torch"] / sizes[kind]["onnxruntime"] for kind in ("engine", "daemon")
    }
    result["requirements"] = ", ".join(
        f"{name} {version(name)}" for name in ("numpy", "onnx", "onnxruntime", "torch")
    )
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    result["seconds"] = time.perf_counter() - started
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS).write_text(_markdown(result))
    return result
