"""Fit the beat-template correlation threshold (``signals.templates.THRESHOLD``).

On the first 5 minutes of every DS1 record except 208 (the record the template workflow is
measured on), beats with reference R peaks are clustered online, as the daemon clusters them, for
each candidate threshold; reported per threshold: templates per record, key presses over the fit
set (one per template and one to apply, per record) as a fraction of its beats, member purity (the
fraction of beats whose AAMI class is the majority class of their template, i.e. labelled right
when each template gets its majority label) and the same fraction over the non-N beats alone (N
dominates the purity). Chosen: the purest threshold whose presses stay within a tenth of the beats,
the template workflow's goal.

    python -m bench.templates_fit
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from signals.ecg_features import record_beats
from signals.mitbih import DS1, read_record
from signals.templates import TemplateClusterer, qrs_wave, rr_group

CANDIDATES = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)
PRESS_BUDGET = 0.10  # key presses per beat: 10x fewer than one key per beat
MINUTES = 5.0


def _first_minutes(name: str) -> tuple[list[tuple[np.ndarray, str]], np.ndarray]:
    """(qrs wave, rr group) and AAMI class of every beat in the record's first ``MINUTES``."""
    record = read_record(name)
    first = record.beat_times_s < MINUTES * 60
    beats = [b for b, keep in zip(record_beats(record), first) if keep]
    return [(qrs_wave(b.context, b.context_r_index), rr_group(b.features)) for b in beats], record.beat_classes[first]


def run(out: str = "bench/results") -> dict:
    records = {name: _first_minutes(name) for name in DS1 if name != "208"}
    rows = {}
    for threshold in CANDIDATES:
        pure = total = templates = abnormal_pure = abnormal = 0
        for shapes, classes_of in records.values():
            clusterer = TemplateClusterer(threshold)
            for key, (wave, group) in enumerate(shapes):
                clusterer.add(key, wave, group)
            for template in clusterer.templates:
                classes = Counter(int(classes_of[k]) for k in template.members)
                majority, count = classes.most_common(1)[0]
                pure += count
                total += len(template.members)
                abnormal += sum(n for c, n in classes.items() if c != 0)
                abnormal_pure += count if majority != 0 else 0
            templates += len(clusterer.templates)
        rows[threshold] = {"purity": pure / total, "abnormal_purity": abnormal_pure / abnormal,
                           "templates_per_record": templates / len(records),
                           "presses_per_beat": (templates + len(records)) / total,
                           "beats": total, "abnormal_beats": abnormal}
    within = [t for t, r in rows.items() if r["presses_per_beat"] <= PRESS_BUDGET]
    chosen = max(within, key=lambda t: (rows[t]["purity"], rows[t]["abnormal_purity"]), default=min(CANDIDATES))
    lines = ["# Beat-template threshold fit", "",
             (f"First {MINUTES:g} min of the DS1 records except 208, reference R peaks, QRS waveforms;"
              f" chosen {chosen} (purest within {PRESS_BUDGET:g} key presses per beat)."), "",
             "Command: `python -m bench.templates_fit`", "",
             "| threshold | purity | non-N purity | templates per record | presses per beat | beats | non-N beats |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {100 * r['purity']:.2f} % | {100 * r['abnormal_purity']:.1f} % | {r['templates_per_record']:.1f}"
              f" | {r['presses_per_beat']:.3f} | {r['beats']} | {r['abnormal_beats']} |" for t, r in rows.items()]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "templates_fit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"chosen": chosen, "rows": rows}


if __name__ == "__main__":
    run()
