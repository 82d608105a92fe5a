"""Fit the beat-template correlation threshold (``signals.templates.THRESHOLD``).

On the first 5 minutes of every DS1 record except 208 (the record the template workflow is
measured on), beats with reference R peaks are clustered online for each candidate threshold;
reported per threshold: templates per record, member purity (the fraction of beats whose AAMI
class is the majority class of their template, i.e. labelled right when each template gets its
majority label) and the same fraction over the non-N beats alone (N dominates the purity). Chosen:
the lowest threshold (fewest templates) with purity ≥ 99 % and non-N purity ≥ 97 %.

    python -m bench.templates_fit
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from signals.ecg_features import beat_table
from signals.mitbih import DS1
from signals.templates import TemplateClusterer

CANDIDATES = (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)
TARGET_PURITY = 0.99
TARGET_ABNORMAL_PURITY = 0.97
MINUTES = 5.0


def run(out: str = "bench/results") -> dict:
    tables = {name: beat_table(name) for name in DS1 if name != "208"}
    rows = {}
    for threshold in CANDIDATES:
        pure = total = templates = abnormal_pure = abnormal = 0
        for table in tables.values():
            first = table.time_s < MINUTES * 60
            clusterer = TemplateClusterer(threshold)
            for i in np.flatnonzero(first):
                clusterer.add(int(i), table.X[i])
            for template in clusterer.templates:
                classes = Counter(int(table.y[i]) for i in template.members)
                majority, count = classes.most_common(1)[0]
                pure += count
                total += len(template.members)
                abnormal += sum(n for c, n in classes.items() if c != 0)
                abnormal_pure += count if majority != 0 else 0
            templates += len(clusterer.templates)
        rows[threshold] = {"purity": pure / total, "abnormal_purity": abnormal_pure / abnormal,
                           "templates_per_record": templates / len(tables), "beats": total, "abnormal_beats": abnormal}
    chosen = min((t for t, r in rows.items()
                  if r["purity"] >= TARGET_PURITY and r["abnormal_purity"] >= TARGET_ABNORMAL_PURITY),
                 default=max(CANDIDATES))
    lines = ["# Beat-template threshold fit", "",
             f"First {MINUTES:g} min of the DS1 records except 208, reference R peaks; chosen {chosen}.", "",
             "| threshold | purity | non-N purity | templates per record | beats | non-N beats |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {t} | {100 * r['purity']:.2f} % | {100 * r['abnormal_purity']:.1f} % | {r['templates_per_record']:.1f}"
              f" | {r['beats']} | {r['abnormal_beats']} |" for t, r in rows.items()]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "templates_fit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"chosen": chosen, "rows": rows}


if __name__ == "__main__":
    run()
