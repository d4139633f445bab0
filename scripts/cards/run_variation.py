"""Run-to-run variation of the RADAR write-verify card, validated leaving one experiment out (scripts/cards/README.md, "Run-to-run variation").

From the fold models of ``loeo_folds.py`` (each fitted without one run), for every
held-out (run, level) pair: the residual ``e = ln(data / prediction)`` of its mean pulses
(prediction: the fold model at the population centre of the run effect), the slope
``J = d ln E[pulses] / du`` and the sampling variance of the data's ln mean over the pair's
cells. Then

1. **the card's run variation**: σ_b (between runs) and σ_w (within a run, level to level)
   of a new run's shift of logit p by the marginal likelihood of all pairs' residuals, with a
   bootstrap over runs (:func:`analogmem.calibrate.run_effect.estimate_run_variation`),
   written into the card's ``[write_verify.run_variation]`` (``--card-out``);
2. **coverage, leave one experiment out**: for each held-out run, σ_b and σ_w estimated from
   the OTHER runs' residuals only, and the held-out run's 50/80/95 % prediction intervals of
   each level's mean pulses and success rate (its own number of programs, its fold model);
   the share of the pairs inside them, and the median width of the 80 % interval relative to
   the prediction. For reference the same intervals with the fit's joint-mode τ alone;
3. **few-cell calibration**: the first k programs (k = 16, 32, 64, in file order) of a
   held-out run update its effects (:func:`~analogmem.calibrate.run_effect.few_cell_update`)
   and the run's other programs are predicted per level: the share of pairs within 20 %,
   against the same programs predicted without the update.

    python -m scripts.cards.loeo_folds /tmp/radar --json scripts/cards/plots/write-verify-folds.json
    python -m scripts.cards.run_variation /tmp/radar scripts/cards/plots/write-verify-folds.json \\
        --card devices/rram-radar.toml --card-out devices/rram-radar.toml --json docs/results/run_variation.json

(the tables of scripts/cards/README.md are rendered from that JSON by ``scripts/docs_tables.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._io import atomic_write_text, write_json
from analogmem.calibrate import read_write_verify
from analogmem.calibrate.run_effect import (INTERVAL_LEVELS, RunVariation, estimate_run_variation, few_cell_update,
                                            pair_models, prediction_intervals, program_rows,
                                            sampling_variance_log_mean, window_support)
from analogmem.emulator.cells import parse_card

PULSES_TOL = 0.20
FEW_CELLS = (16, 32, 64)


def fold_device(card_raw: dict[str, Any], table: dict[str, Any]) -> Any:
    """The card with a fold's ``[write_verify]`` table (a model that never saw the run)."""
    import tomli_w

    raw = {**card_raw, "write_verify": table}
    raw.pop("fit_report", None)
    return parse_card(tomli_w.dumps(raw), "fold")


def residual_rows(df: Any, folds: dict[str, Any], card_raw: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    """Per held-out (run, level): data, fold prediction, residual, J, s²; and the fold models."""
    rows, devices = [], {}
    for run in sorted(df.experiment.unique()):
        f = folds.get(run, {})
        if "write_verify" not in f:
            continue
        dev = fold_device(card_raw, f["write_verify"])
        devices[run] = dev
        test = df[df.experiment == run]
        models = pair_models(dev.write_verify, test)
        for (_, level), m in models.items():
            g = test[test.target_level == level]
            pred = float(m.moments(0.0)[0][0])
            rows.append({"run": run, "level": int(level), "scheme": str(g.scheme.iloc[0]), "n_programs": int(len(g)),
                         "pulses_mean_data": float(g.pulses.mean()), "success_rate_data": float(g.success.mean()),
                         "pulses_mean_prediction": pred, "success_rate_prediction": float(m.moments(0.0)[2][0]),
                         "residual_log": math.log(float(g.pulses.mean()) / pred), "slope": m.slope(),
                         "sampling_var": sampling_variance_log_mean(g.pulses, g.cell),
                         "joint_mode_run_sd": float(dev.write_verify.run_sd)})
    return rows, devices


def _estimate(rows: list[dict[str, Any]], n_boot: int, seed: Any) -> RunVariation:
    return estimate_run_variation([r["residual_log"] for r in rows], [r["slope"] for r in rows],
                                  [r["sampling_var"] for r in rows], [r["run"] for r in rows], n_boot=n_boot,
                                  seed=seed)


def coverage(df: Any, rows: list[dict[str, Any]], devices: dict, n_boot: int) -> list[dict[str, Any]]:
    """Adds to each row its leave-one-experiment-out intervals (σ from the other runs only)
    and those of the joint-mode τ alone; returns the per-run estimates."""
    per_run = []
    for k, run in enumerate(sorted(devices)):
        others = [r for r in rows if r["run"] != run]
        var = _estimate(others, n_boot, [k, 1])
        tau = RunVariation(float(devices[run].write_verify.run_sd), 0.0, (0.0, 0.0), np.zeros((0, 2)), 0, 0, 0.0)
        per_run.append({"held_out": run, "sd_between": var.sd_between, "sd_within": var.sd_within})
        models = pair_models(devices[run].write_verify, df[df.experiment == run])
        for r in rows:
            if r["run"] != run:
                continue
            m = models[(run, r["level"])]
            for name, v in (("", var), ("_joint_mode", tau)):
                iv = prediction_intervals(m, v, n_cells=r["n_programs"], seed=[k, r["level"], len(name)])
                for lv in INTERVAL_LEVELS:
                    key = f"interval{round(100 * lv)}"
                    for what, data in (("pulses_mean", r["pulses_mean_data"]),
                                       ("success_rate", r["success_rate_data"])):
                        lo, hi = iv[what][key]
                        r[f"{what}_{key}{name}"] = [lo, hi]
                        r[f"{what}_{key}{name}_covers"] = bool(lo <= data <= hi)
                if not name:
                    r["pulses_mean_predictive_median"] = iv["pulses_mean"]["median"]
    return per_run


def few_cells(df: Any, rows: list[dict[str, Any]], devices: dict, per_run: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """For each held-out run and k: the first k programs update the run's effects; the
    run's other programs are predicted per level, adapted and not."""
    sd = {p["held_out"]: p for p in per_run}
    out = []
    for run, dev in sorted(devices.items()):
        test = df[df.experiment == run].reset_index(drop=True)
        var = RunVariation(sd[run]["sd_between"], sd[run]["sd_within"], (0.0, 0.0), np.zeros((0, 2)), 0, 0, 0.0)
        for k in FEW_CELLS:
            if k >= len(test):
                continue
            seen, rest = test.iloc[:k], test.iloc[k:]
            models = {key[1]: m for key, m in pair_models(dev.write_verify, rest).items()}
            observed = {}
            for level, g in seen.groupby("target_level"):
                observed[level] = (program_rows(dev.write_verify, g), g.pulses.to_numpy(), g.success.to_numpy())
            post = few_cell_update(models, observed, var)
            for level, m in models.items():
                g = rest[rest.target_level == level]
                data = float(g.pulses.mean())
                adapted = post["levels"][level]["pulses_mean"]
                plain = float(m.moments(0.0)[0][0])
                out.append({"run": run, "k": k, "level": int(level), "n_programs_predicted": int(len(g)),
                            "n_seen_in_level": int(len(observed[level][1])) if level in observed else 0,
                            "pulses_mean_data": data, "pulses_mean_adapted": adapted, "pulses_mean_unadapted": plain,
                            "adapted_within_20pct": bool(abs(adapted / data - 1) <= PULSES_TOL),
                            "unadapted_within_20pct": bool(abs(plain / data - 1) <= PULSES_TOL),
                            "b_posterior_mean": post["b_mean"], "b_posterior_sd": post["b_sd"]})
    return out


def summary(rows: list[dict[str, Any]], few: list[dict[str, Any]], n_all_pairs: int) -> dict[str, Any]:
    n = len(rows)
    cov: dict[str, Any] = {"pairs": n, "pairs_in_table": n_all_pairs}
    for name in ("", "_joint_mode"):
        for what in ("pulses_mean", "success_rate"):
            for lv in INTERVAL_LEVELS:
                key = f"interval{round(100 * lv)}"
                hits = int(sum(r[f"{what}_{key}{name}_covers"] for r in rows))
                cov[f"{what}_{key}{name}"] = {"covered": hits, "share": hits / n if n else None}
    widths = [(r["pulses_mean_interval80"][1] - r["pulses_mean_interval80"][0]) / r["pulses_mean_prediction"]
              for r in rows]
    cov["pulses_mean_interval80_median_relative_width"] = float(np.median(widths))
    widths95 = [(r["pulses_mean_interval95"][1] - r["pulses_mean_interval95"][0]) / r["pulses_mean_prediction"]
                for r in rows]
    cov["pulses_mean_interval95_median_relative_width"] = float(np.median(widths95))
    cov["unadapted_within_20pct"] = int(sum(abs(r["pulses_mean_data"] / r["pulses_mean_prediction"] - 1) <= PULSES_TOL
                                            for r in rows))
    fc = {}
    for k in FEW_CELLS:
        sel = [r for r in few if r["k"] == k]
        if sel:
            fc[str(k)] = {"pairs": len(sel), "adapted_within_20pct": int(sum(r["adapted_within_20pct"] for r in sel)),
                          "unadapted_within_20pct": int(sum(r["unadapted_within_20pct"] for r in sel)),
                          "median_abs_error_adapted": float(np.median([abs(r["pulses_mean_adapted"] /
                                                                           r["pulses_mean_data"] - 1) for r in sel])),
                          "median_abs_error_unadapted": float(np.median([abs(r["pulses_mean_unadapted"] /
                                                                             r["pulses_mean_data"] - 1) for r in sel]))}
    return {"coverage": cov, "few_cells": fc}


def write_card(card_path: Path, out: Path, variation: RunVariation, support: dict[str, Any]) -> None:
    """The card with ``[write_verify.run_variation]`` and ``[write_verify.support]`` (the
    windows all runs cover) set, checked to load before writing."""
    import tomli_w

    text = card_path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    raw = tomllib.loads(text)
    raw["write_verify"]["run_variation"] = variation.card_table()
    raw["write_verify"]["support"] = support
    step = ("python -m scripts.cards.loeo_folds /tmp/radar --json scripts/cards/plots/write-verify-folds.json && python "
            "-m scripts.cards.run_variation /tmp/radar scripts/cards/plots/write-verify-folds.json --card "
            "devices/rram-radar.toml --card-out devices/rram-radar.toml --json docs/results/run_variation.json")
    if step not in raw["source"]["regenerate"]:
        raw["source"]["regenerate"] += " && " + step
    body = header + "\n" + tomli_w.dumps(raw)
    parse_card(body, str(out))
    atomic_write_text(out, body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("folds", type=Path, help="loeo_folds.py's JSON")
    ap.add_argument("--card", type=Path, default=Path("devices/rram-radar.toml"))
    ap.add_argument("--card-out", type=Path)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--n-boot-fold", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    df = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    folds = json.loads(args.folds.read_text())["folds"]
    card_raw = tomllib.loads(args.card.read_text())
    rows, devices = residual_rows(df, folds, card_raw)
    variation = _estimate(rows, args.n_boot, 0)
    per_run = coverage(df, rows, devices, args.n_boot_fold)
    for p in per_run:
        p["joint_mode_tau"] = float(devices[p["held_out"]].write_verify.run_sd)
    few = few_cells(df, rows, devices, per_run)
    n_all = int(df.groupby(["experiment", "target_level"]).ngroups)
    s = summary(rows, few, n_all)
    print(json.dumps({"run_variation": variation.summary(), **s}, indent=1, default=float))
    if args.json:
        write_json(args.json, {"run_variation": variation.summary(), "per_held_out_run": per_run, "rows": rows,
                               "few_cells": few, "summary": s}, settings=vars(args))
    if args.card_out:
        write_card(args.card, args.card_out, variation, window_support(df, card_raw["write_verify"]["g_ref_S"]))
        print(f"wrote {args.card_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
