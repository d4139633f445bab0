"""Leave one bake out: the spread/mean laws of retention through bakes (issue #28).

For each RADAR bake experiment with the standard 3-bit windows (expts 1–4: 30 min at 80,
100, 100 and 120 °C), fit :func:`analogmem.calibrate.bake_law.fit_bake_law` on the OTHER
bakes and predict the held-out bake's post-bake spread and mean per level from its
pre-bake reads and its Arrhenius-equivalent age (``fit_arrhenius`` on the BER table; the
pre-bake read taken ``--prebake-age-s`` after programming, as the card assumes): the
coverage of the 50/80/95 % intervals of the spread, the misread fraction predicted and
measured. Holding out expt 4 predicts past every fitted age — what a card's table cannot.
Expts 5 and 6 (120 °C, adjusted windows: no misread) are predicted by the law fitted to
expts 1–4.

    python -m scripts.cards.convert_radar ../shared/data/rram-radar /tmp/radar
    python -m scripts.cards.retention_law /tmp/radar --json docs/results/retention_law.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from analogmem._io import write_json
from analogmem.calibrate import fit_arrhenius
from analogmem.calibrate.bake_law import bake_points, fit_bake_law

#: The RADAR 3-bit level windows (kΩ) of the original analysis (../shared/data README).
WINDOWS_KOHM = list(zip([0, 4.38, 4.84, 5.42, 6.16, 7.19, 9.23, 35], [4.3, 4.75, 5.3, 6.01, 6.99, 8.9, 25, math.inf]))
STANDARD = ["radar-expt1", "radar-expt2", "radar-expt3", "radar-expt4"]
ADJUSTED = ["radar-expt5", "radar-expt6"]
LEVELS = (0.5, 0.8, 0.95)


def rows_for(law: Any, points: list[Any], fitted_on: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in points:
        pr = law.predict(p.level, p.age_s, p.prebake_age_s, p.mean_pre_S, p.std_pre_S, p.n_post, LEVELS,
                         window_S=p.window_S, pre_reads_S=p.pre_reads_S)
        row = {"held_out": p.experiment, "fitted_on": fitted_on, "level": p.level, "age_s": p.age_s,
               "n_post": p.n_post, "std_pre_S": p.std_pre_S, "std_post_S": p.std_post_S,
               "std_post_pred_S": pr["std_post_S"]["median"], "mean_pre_S": p.mean_pre_S,
               "mean_post_S": p.mean_post_S, "mean_post_pred_S": pr["mean_post_S"]["median"],
               "misread_post": p.misread_post, "misread_post_pred": pr.get("misread_post"),
               "open": bool(p.window_S is not None and (p.window_S[0] <= 0 or math.isinf(p.window_S[1])))}
        for lv in LEVELS:
            key = f"interval{round(100 * lv)}"
            lo, hi = pr["std_post_S"][key]
            row[f"std_post_{key}_S"] = [lo, hi]
            row[f"std_post_{key}_covers"] = bool(lo <= p.std_post_S <= hi)
            lo, hi = pr["mean_post_S"][key]
            row[f"mean_post_{key}_covers"] = bool(lo <= p.mean_post_S <= hi)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("--prebake-age-s", type=float, default=3600.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    reads = pd.read_csv(args.tables / "radar-reads.csv")
    arr = fit_arrhenius(args.tables / "radar-ber.csv")
    windows = [(a * 1e3, b * 1e3) for a, b in WINDOWS_KOHM]
    points = bake_points(reads, STANDARD, arr.equivalent_time_s, args.prebake_age_s, windows)
    rows = []
    for held in STANDARD:
        train = [e for e in STANDARD if e != held]
        law = fit_bake_law([p for p in points if p.experiment in train])
        rows += rows_for(law, [p for p in points if p.experiment == held], train)
    full = fit_bake_law(points)
    adjusted = bake_points(reads, ADJUSTED, arr.equivalent_time_s, args.prebake_age_s, None)
    rows += rows_for(full, adjusted, STANDARD)
    held = [r for r in rows if r["held_out"] in STANDARD]
    summary: dict[str, Any] = {"pairs_leave_one_bake_out": len(held), "pairs_adjusted_windows": len(rows) - len(held)}
    for lv in LEVELS:
        key = f"interval{round(100 * lv)}"
        for name, sel in (("lobo", held), ("adjusted", [r for r in rows if r not in held])):
            summary[f"std_post_{key}_covered_{name}"] = int(sum(r[f"std_post_{key}_covers"] for r in sel))
    summary["median_abs_log_error_std_lobo"] = float(pd.Series([abs(math.log(r["std_post_pred_S"] / r["std_post_S"]))
                                                                for r in held]).median())
    summary["median_abs_log_error_std_hold"] = float(pd.Series([abs(math.log(r["std_pre_S"] / r["std_post_S"]))
                                                                for r in held]).median())
    summary["misread_post_data_lobo"] = float(sum(r["misread_post"] for r in held) / len(held))
    summary["misread_post_pred_lobo"] = float(sum(r["misread_post_pred"] for r in held) / len(held))
    out = {"law": full.summary(), "rows": rows, "summary": summary,
           "arrhenius": {"activation_energy_eV": arr.activation_energy_eV,
                         "reference_temperature_K": arr.reference_temperature_K}}
    for k, v in summary.items():
        print(k, v)
    if args.json:
        write_json(args.json, out, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
