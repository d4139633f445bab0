"""Which observable covariates could move the write-verify LOEO misses (scripts/cards/README.md, "Leave one experiment out")?

Model-free checks on the RADAR tidy write-verify table (``convert_radar.py``) of covariates the
shared pulse-response model does not use, each known before a held-out run's outcomes:

* **per-cell effect** — the same physical cells (addresses) are programmed in every write
  test. A cell's effect is its mean residual ln(1 + pulses) after the (run, level, in-run
  repetition 0/1/2/3+) mean; the check is whether the average training-run effect of a
  held-out pair's cells predicts the shared model's LOEO error of that pair (Pearson and
  Spearman over the pairs the model predicts; also within runs), and how much a cell's
  effect persists from one run to another (correlation matrix of the per-cell effects);
* **cumulative programs / never-programmed cells** — with the experiment number taken as the
  chronological order (writetest1..7, then the ISPP files; an assumption: the files carry no
  time stamps), a cell's programs in all earlier files; first programs of cells never
  programmed before vs cells programmed before, per run;
* **in-run repetition** — mean pulses by the address's repetition index within its run
  (0 = its first program in the run), per run.

    python -m scripts.cards.loeo_covariate_checks /tmp/radar scripts/cards/plots/write-verify-loeo.json \\
        --json scripts/cards/plots/write-verify-covariates.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._io import write_json

#: Chronological order assumed for the cumulative program count (the experiment number).
ORDER = ("writetest1", "writetest2", "writetest3", "writetest4", "writetest5", "writetest6", "writetest7-run1",
         "writetest7-run2", "ispp-2bpc-wlstep0.050", "ispp-2bpc-wlstep0.100")
REPETITION_BINS = (-1, 0, 1, 2, 4, 8, 16, 32, 10**6)


def with_history(df: Any) -> Any:
    """Add ``repetition`` (the address's program index within its run, 0 = first) and
    ``programs_before`` (its programs in all earlier runs of :data:`ORDER` plus earlier in
    this run)."""
    df = df.copy()
    df["repetition"] = df.groupby(["experiment", "cell"]).cumcount()
    earlier: dict[int, int] = {}
    before = np.zeros(len(df), dtype=int)
    runs = [r for r in ORDER if r in set(df.experiment)] + sorted(set(df.experiment) - set(ORDER))
    for run in runs:
        idx = np.flatnonzero((df.experiment == run).to_numpy())
        cells = df.cell.to_numpy()[idx]
        before[idx] = [earlier.get(int(c), 0) for c in cells] + df.repetition.to_numpy()[idx]
        for c in cells:
            earlier[int(c)] = earlier.get(int(c), 0) + 1
    df["programs_before"] = before
    return df


def cell_effects(df: Any) -> Any:
    """Per row: residual of ln(1 + pulses) after its (run, level, repetition 0/1/2/3+) mean."""
    key = [df.experiment, df.target_level, np.minimum(df.repetition, 3)]
    lp = np.log1p(df.pulses.astype(float))
    return lp - lp.groupby(key).transform("mean")


def checks(df: Any, loeo_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The three checks of the module docstring (RADAR-scheme write tests only)."""
    from scipy.stats import pearsonr, spearmanr

    df = with_history(df)
    wt = df[df.scheme == "radar"].copy()
    wt["resid"] = cell_effects(wt)
    err = {(r["run"], r["level"]): r["pulses_error_shared"] for r in loeo_rows}
    pairs = []
    for held in sorted(set(wt.experiment)):
        effect = wt[wt.experiment != held].groupby("cell").resid.mean()
        test = wt[wt.experiment == held]
        for level, g in test.groupby("target_level"):
            e = err.get((held, int(level)))
            if e is None:
                continue
            pairs.append((held, float(g.cell.map(effect).fillna(0.0).mean()), float(-np.log1p(e))))
    runs = np.array([p[0] for p in pairs])
    cell_pred = np.array([p[1] for p in pairs])
    log_miss = np.array([p[2] for p in pairs])  # ln(data / prediction)
    centred = [np.concatenate([v[runs == r] - v[runs == r].mean() for r in sorted(set(runs))])
               for v in (cell_pred, log_miss)]
    per_cell = wt.groupby(["cell", "experiment"]).resid.mean().unstack()
    corr = per_cell.corr(min_periods=50)
    off = corr.to_numpy()[~np.eye(len(corr), dtype=bool)]
    first = df[df.repetition == 0]
    virgin = {run: {"never_programmed_n": int((g.programs_before == 0).sum()),
                    "never_programmed_mean_pulses": float(g.pulses[g.programs_before == 0].mean())
                    if (g.programs_before == 0).any() else None,
                    "programmed_before_n": int((g.programs_before > 0).sum()),
                    "programmed_before_mean_pulses": float(g.pulses[g.programs_before > 0].mean())
                    if (g.programs_before > 0).any() else None,
                    "mean_programs_before": float(g.programs_before.mean())}
              for run, g in first.groupby("experiment")}
    bins = np.asarray(REPETITION_BINS)
    labels = [f"{lo + 1}" if hi == lo + 1 else f"{lo + 1}-{hi}" if hi < 10**6 else f"{lo + 1}+"
              for lo, hi in zip(bins[:-1], bins[1:])]
    rep = {}
    for run, g in df.groupby("experiment"):
        b = np.searchsorted(bins, g.repetition.to_numpy(), side="left") - 1
        rep[run] = {labels[i]: {"mean_pulses": float(g.pulses[b == i].mean()), "programs": int((b == i).sum())}
                    for i in range(len(labels)) if (b == i).any()}
    return {
        "cell_effect_vs_loeo_miss": {
            "pairs": len(pairs), "pearson": float(pearsonr(cell_pred, log_miss)[0]),
            "spearman": float(spearmanr(cell_pred, log_miss)[0]),
            "pearson_within_runs": float(pearsonr(*centred)[0]),
            "sd_pair_mean_cell_effect": float(np.std(cell_pred, ddof=1)),
            "sd_log_miss": float(np.std(log_miss, ddof=1))},
        "cell_effect_persistence": {"runs": list(corr.columns), "correlation": corr.round(4).to_numpy().tolist(),
                                    "median_between_runs": float(np.nanmedian(off)),
                                    "max_between_runs": float(np.nanmax(off))},
        "first_programs_never_vs_before": virgin,
        "mean_pulses_by_repetition": rep,
        "chronological_order_assumed": list(ORDER)}


def main(argv: list[str] | None = None) -> int:
    import json

    from analogmem.calibrate import read_write_verify

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("loeo", type=Path, help="JSON of loeo_write_verify.py")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    df = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    out = checks(df, json.loads(args.loeo.read_text())["rows"])
    print(json.dumps({k: out[k] for k in ("cell_effect_vs_loeo_miss", "first_programs_never_vs_before")}, indent=1))
    persistence = out["cell_effect_persistence"]["median_between_runs"]
    print("cell-effect persistence between runs: median r =", round(persistence, 3))
    for run, v in out["mean_pulses_by_repetition"].items():
        print(run, " ".join(f"{k}:{x['mean_pulses']:.0f}" for k, x in v.items()))
    if args.json:
        write_json(args.json, out, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
