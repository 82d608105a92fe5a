"""``biofo bench robustness``: the real MIT-BIH records as other bedside devices would send them.

Each variant turns a record's two leads (360 Hz, mV) into what a different device sends, and the
result goes through the daemon's own ingest code, ``app.modalities.extract`` (what every worker
process runs for ``POST /v1/windows``), as 10 s segments at the variant's rate with no R peaks:

- QRS Se / +P (EC57 matching, 150 ms, flutter left out) of the beats it answers, on the 44
  non-paced records;
- the hybrid protocol on DS2: the daemon's fork of the bundled base learns the beats of the first
  5 minutes by ``models.adaptation.PATIENT_POLICY`` (labelled with the class of the reference beat
  each detected beat matches), and VEB / SVEB Se and +P are counted on the detected beats after
  minute 5 that match a reference beat (beats the detector missed are in ``qrs_se``, not here).

Variants (families in ``FAMILIES``, one plot each in ``bench/results/``):

- ``rate_*``: the record resampled (``signals.resample``, polyphase) and sent at 128, 250, 257 or
  500 Hz;
- ``lead_first`` / ``lead_second``: one lead only; ``leads_swapped``; ``inverted`` (both leads' sign
  flipped); ``gain_x0.5`` / ``gain_x2``;
- ``wander``: respiration-like baseline wander, 0.5 mV at 0.25 Hz plus 0.3 mV at 0.07 Hz with
  random phases per lead;
- ``mains_50`` / ``mains_60``: a 0.2 mV sinusoid at 50 or 60 Hz plus 0.05 mV at its third harmonic;
- ``noise_*``: broadband (white Gaussian) or electrode-motion-like noise at 12 or 6 dB SNR. The
  SNR is per lead, 10 log10 of the lead's variance over the noise variance. The electrode-motion
  model (no MIT-BIH noise stress recording is staged here) is Gaussian noise band-limited to
  0.5-15 Hz whose amplitude is switched on in bursts: bursts of 0.5-4 s separated by gaps of 1-8 s,
  smoothed over 100 ms, scaled so the whole record has the stated SNR. It imitates the
  low-frequency, intermittent, QRS-band-overlapping artefact of electrodes moving on the skin.

Noise is drawn from a generator seeded with the variant and record names, so a run is repeatable.
``--quick`` runs every variant on two records' first 10 minutes (one of them in DS2).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app.modalities import Segment, extract  # noqa: E402
from app.registry import fork  # noqa: E402
from bench import eval_ecg, report  # noqa: E402
from bench.training import single_thread  # noqa: E402
from signals import classification  # noqa: E402
from signals.aami import AAMI_CLASSES  # noqa: E402
from signals.filters import butter_sos, zero_phase_filter  # noqa: E402
from signals.mitbih import DS2, NON_PACED, PATIENT_WINDOW_S, read_record  # noqa: E402
from signals.qrs import MATCH_WINDOW_S, BeatMatch, match_beats, match_pairs  # noqa: E402
from signals.replay import segment_bounds  # noqa: E402
from signals.resample import resample  # noqa: E402

FS = 360.0
SEGMENT_S = 10.0
QUICK_RECORDS = ("208", "233")
QUICK_MINUTES = 10.0

Variant = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, float]]


def _noise_at(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled, lead by lead, to ``snr_db`` (variance ratio)."""
    scale = np.sqrt(x.var(axis=1, keepdims=True) / (noise.var(axis=1, keepdims=True) * 10 ** (snr_db / 10)))
    return x + noise * scale


def _motion(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Electrode-motion-like noise (see the module docstring)."""
    band = zero_phase_filter(rng.standard_normal(shape), butter_sos(FS, 0.5, 15.0))
    gate = np.zeros(shape[1])
    at = int(rng.uniform(1.0, 8.0) * FS)
    while at < shape[1]:
        length = int(rng.uniform(0.5, 4.0) * FS)
        gate[at : at + length] = 1.0
        at += length + int(rng.uniform(1.0, 8.0) * FS)
    smooth = np.ones(int(0.1 * FS)) / int(0.1 * FS)
    return band * np.convolve(gate, smooth, mode="same")[None, :]


def _t(n: int) -> np.ndarray:
    return np.arange(n) / FS


def _rate(fs: float) -> Variant:
    return lambda x, rng: (resample(x, FS, fs), fs)


def _wander(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    t = _t(x.shape[1])
    phase = rng.uniform(0, 2 * np.pi, size=(x.shape[0], 2, 1))
    drift = 0.5 * np.sin(2 * np.pi * 0.25 * t + phase[:, 0]) + 0.3 * np.sin(2 * np.pi * 0.07 * t + phase[:, 1])
    return x + drift, FS


def _mains(hz: float) -> Variant:
    def add(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        t = _t(x.shape[1])
        phase = rng.uniform(0, 2 * np.pi)
        return x + 0.2 * np.sin(2 * np.pi * hz * t + phase) + 0.05 * np.sin(2 * np.pi * 3 * hz * t + phase), FS
    return add


def _broadband(snr_db: float) -> Variant:
    return lambda x, rng: (_noise_at(x, rng.standard_normal(x.shape), snr_db), FS)


def _electrode_motion(snr_db: float) -> Variant:
    return lambda x, rng: (_noise_at(x, _motion(x.shape, rng), snr_db), FS)


VARIANTS: dict[str, Variant] = {
    "clean": lambda x, rng: (x, FS),
    "rate_128": _rate(128.0),
    "rate_250": _rate(250.0),
    "rate_257": _rate(257.0),
    "rate_500": _rate(500.0),
    "lead_first": lambda x, rng: (x[:1], FS),
    "lead_second": lambda x, rng: (x[1:2], FS),
    "leads_swapped": lambda x, rng: (x[::-1], FS),
    "inverted": lambda x, rng: (-x, FS),
    "gain_x0.5": lambda x, rng: (0.5 * x, FS),
    "gain_x2": lambda x, rng: (2.0 * x, FS),
    "wander": _wander,
    "mains_50": _mains(50.0),
    "mains_60": _mains(60.0),
    "noise_broadband_12db": _broadband(12.0),
    "noise_broadband_6db": _broadband(6.0),
    "noise_motion_12db": _electrode_motion(12.0),
    "noise_motion_6db": _electrode_motion(6.0),
}
FAMILIES: dict[str, tuple[str, ...]] = {
    "rate": ("rate_128", "rate_250", "rate_257", "rate_500"),
    "leads": ("lead_first", "lead_second", "leads_swapped", "inverted"),
    "gain": ("gain_x0.5", "gain_x2"),
    "interference": ("wander", "mains_50", "mains_60"),
    "noise": ("noise_broadband_12db", "noise_broadband_6db", "noise_motion_12db", "noise_motion_6db"),
}


def daemon_beats(samples: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Beat times (s) and features the daemon's ingest code answers for a signal sent as 10 s
    segments without R peaks."""
    state: dict[str, Any] | None = None
    times: list[float] = []
    features: list[np.ndarray] = []
    channels = tuple(f"lead{k}" for k in range(samples.shape[0]))
    for lo, hi in segment_bounds(samples.shape[1], fs, SEGMENT_S):
        done = extract(state, Segment("ecg", samples[:, lo:hi], fs, lo / fs, channels))
        state = done.state
        for window in done.windows:
            times.append(window.offset_s)
            features.append(window.features)
    dim = features[0].size if features else 0
    return np.asarray(times), np.asarray(features, dtype=np.float32).reshape(len(features), dim)


def _record_run(name: str, variant: str, minutes: float | None, base: bytes | None) -> dict[str, Any]:
    record = read_record(name)
    end = record.n_samples if minutes is None else min(record.n_samples, int(minutes * 60 * FS))
    rng = np.random.default_rng(zlib.crc32(f"{variant}/{name}".encode()))
    samples, fs = VARIANTS[variant](record.signal[:, :end], rng)
    times, X = daemon_beats(samples, fs)
    detected = np.rint(times * FS).astype(np.int64)
    reference = record.beat_samples[record.beat_samples < end]
    qrs = match_beats(reference, detected, FS, exclude=record.flutter)
    out: dict[str, Any] = {"qrs": qrs}
    if base is not None:
        pairs = match_pairs(reference, detected, int(round(MATCH_WINDOW_S * FS)))
        pairs = pairs[np.argsort(pairs[:, 1])]
        y = record.beat_classes[: reference.size][pairs[:, 0]]
        X, beat_time = X[pairs[:, 1]], times[pairs[:, 1]]
        labelled = beat_time < PATIENT_WINDOW_S
        learner = fork(base, "torch")
        snapshots = eval_ecg.adapt(learner, X[labelled], y[labelled], X[~labelled])
        out["confusion"] = classification.confusion(y[~labelled], snapshots[int(labelled.sum())], len(AAMI_CLASSES))
    return out


def _figures(qrs: BeatMatch, confusion: np.ndarray) -> dict[str, float | None]:
    scores = classification.scores_from_confusion(confusion, AAMI_CLASSES)["per_class"] if confusion.sum() else {}

    present = confusion.sum(axis=1)

    def get(cls: str, key: str) -> float | None:
        # null where the class is absent from the scored reference beats (cli.md)
        if not scores or present[AAMI_CLASSES.index(cls)] == 0:
            return None
        return scores.get(cls, {}).get(key)

    return {
        "qrs_se": qrs.sensitivity, "qrs_ppv": qrs.ppv,
        "veb_se": get("V", "se"), "veb_ppv": get("V", "ppv"),
        "sveb_se": get("S", "se"), "sveb_ppv": get("S", "ppv"),
    }


def run(quick: bool = False, out: str = "bench/results", progress: bool = False) -> dict[str, Any]:
    single_thread()
    started = time.perf_counter()
    qrs_records = list(QUICK_RECORDS if quick else NON_PACED)
    minutes = QUICK_MINUTES if quick else None
    ds2 = {name for name in qrs_records if name in DS2}
    base = eval_ecg.bundled_base()
    results: dict[str, dict[str, float | None]] = {}
    seconds: dict[str, float] = {}
    for variant in tqdm(VARIANTS, desc="robustness", disable=not progress):
        began = time.perf_counter()
        qrs = BeatMatch(0, 0, 0)
        confusion = np.zeros((len(AAMI_CLASSES),) * 2, dtype=np.int64)
        for name in qrs_records:
            done = _record_run(name, variant, minutes, base if name in ds2 else None)
            qrs += done["qrs"]
            if "confusion" in done:
                confusion += done["confusion"]
        results[variant] = _figures(qrs, confusion)
        seconds[variant] = time.perf_counter() - began
    clean = results.pop("clean")
    result: dict[str, Any] = {
        "clean": clean,
        "variants": results,
        "worst_drop": _worst_drop(clean, results),
        "records": qrs_records,
        "classification_records": sorted(ds2),
        "minutes": minutes,
        "quick": quick,
        "seconds_per_variant": seconds,
        "run_s": time.perf_counter() - started,
    }
    _write(Path(out), result)
    return result


def _worst_drop(clean: dict[str, float | None], variants: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Per figure, the largest fall from the clean run (in points) and the variant that had it."""
    worst: dict[str, Any] = {}
    for key, reference in clean.items():
        drops = {
            name: 100.0 * (reference - figures[key])
            for name, figures in variants.items()
            if reference is not None and figures[key] is not None
        }
        if drops:
            name = max(drops, key=drops.get)
            worst[key] = {"variant": name, "points": drops[name]}
    return worst


def _write(folder: Path, result: dict[str, Any]) -> None:
    stem = "robustness-quick" if result["quick"] else "robustness"
    keys = ("qrs_se", "qrs_ppv", "veb_se", "veb_ppv", "sveb_se", "sveb_ppv")
    rows = [["clean", *[result["clean"][k] for k in keys]]] + [
        [name, *[figures[k] for k in keys]] for name, figures in result["variants"].items()
    ]
    lines = [
        "# Device variants through the daemon's ingest path",
        "",
        f"QRS on {len(result['records'])} records, hybrid VEB / SVEB on "
        f"{len(result['classification_records'])} DS2 records"
        + (f", first {result['minutes']:g} minutes" if result["minutes"] else "")
        + f"; {result['run_s']:.0f} s. Command: `biofo bench robustness{' --quick' if result['quick'] else ''} --json`.",
        "",
        report.markdown_table(["variant", *keys], [[r[0], *[None if v is None else round(100 * v, 2) for v in r[1:]]]
                                                    for r in rows]),
    ]
    report.write_outputs(folder, stem, "\n".join(lines), result)
    for family, names in FAMILIES.items():
        fig, ax = plt.subplots(figsize=(7.0, 4.2))
        labels = ["clean", *names]
        width = 0.8 / len(keys)
        for k, key in enumerate(keys):
            values = [result["clean"][key]] + [result["variants"][n][key] for n in names]
            ax.bar(np.arange(len(labels)) + k * width, [np.nan if v is None else 100 * v for v in values],
                   width, label=key)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=8, rotation=15)
        ax.set_ylabel("%")
        ax.set_ylim(50, 100.5)
        ax.set_title(f"{family}: QRS and hybrid VEB / SVEB through the daemon's path", fontsize=10)
        ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax.grid(alpha=0.3, axis="y")
        report.save_figure(fig, folder / f"{stem}-{family}.png")
