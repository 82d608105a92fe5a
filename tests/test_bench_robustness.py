"""``biofo bench robustness --quick`` run as a user runs it, and the variants it builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.robustness import FAMILIES, VARIANTS, daemon_beats
from signals.mitbih import read_record

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"qrs_se", "qrs_ppv", "veb_se", "veb_ppv", "sveb_se", "sveb_ppv"}


def test_noise_variants_have_the_stated_snr() -> None:
    x = read_record("100").signal[:, : 60 * 360]
    for name, snr_db in (("noise_broadband_12db", 12.0), ("noise_motion_6db", 6.0)):
        noisy, fs = VARIANTS[name](x, np.random.default_rng(0))
        assert fs == 360.0 and noisy.shape == x.shape
        ratio = 10 * np.log10(x.var(axis=1) / (noisy - x).var(axis=1))
        np.testing.assert_allclose(ratio, snr_db, atol=1e-6)
    resampled, fs = VARIANTS["rate_257"](x, np.random.default_rng(0))
    assert fs == 257.0 and abs(resampled.shape[1] - round(x.shape[1] * 257 / 360)) <= 1
    assert set(VARIANTS) == {"clean", *(n for names in FAMILIES.values() for n in names)}


def test_one_lead_devices_go_through_the_daemon_path() -> None:
    x = read_record("100").signal[:, : 60 * 360]
    times, features = daemon_beats(x[1:2], 360.0)
    assert times.size > 60 and features.shape == (times.size, 85)
    assert np.all(features[:, 39:78] == 0)  # the lead that was not sent


def test_bench_robustness_quick_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "robustness", "--quick", "--json", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["clean"]) == KEYS
    assert set(result["variants"]) == set(VARIANTS) - {"clean"}
    assert all(set(figures) == KEYS for figures in result["variants"].values())
    clean = result["clean"]
    assert clean["qrs_se"] > 0.97 and clean["qrs_ppv"] > 0.97 and clean["veb_se"] is not None
    # A one-lead device still gets most beats found (208's PVCs are the ones MLII alone misses).
    assert result["variants"]["lead_first"]["qrs_se"] > 0.9 and result["variants"]["lead_first"]["qrs_ppv"] > 0.97
    for family in FAMILIES:
        assert (tmp_path / f"robustness-quick-{family}.png").stat().st_size > 1000
    assert (tmp_path / "robustness-quick.md").read_text().startswith("# Device variants")
