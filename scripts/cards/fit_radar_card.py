"""Fit the ``rram-radar`` device card from the tidy RADAR tables (``convert_radar.py``).

    python -m scripts.cards.convert_radar "$ANALOGMEM_DATA/rram-radar" /tmp/radar
    python -m scripts.cards.fit_radar_card /tmp/radar --out devices/rram-radar.toml \\
        --plot scripts/cards/plots/rram-radar.png --json scripts/cards/plots/rram-radar.json

The card (input: conductance, S) carries

* ``[write_verify]``: the shared pulse-response model (``model = "shared-geometric-mixture"``)
  fitted by :func:`analogmem.calibrate.fit_pulse_response` to the write-verify traces of every
  run (``--write-verify`` names a subset): one set of parameters for any window inside the
  card's range, the start state (first program or re-program), the pulse scheme (RADAR,
  ISPP with its step) and the run-to-run effect; the card's levels are the 3-bit windows of
  ``writetest3`` (the largest run);
* ``[retention]``: the Arrhenius time–temperature equivalence fitted to ``radar-ber.csv``;
* ``[relaxation]`` (``table-log-time``): per level, the read spread of the cells at 1 s
  (the verified spread), before the bake (``--prebake-age-s`` after programming; the data
  do not state it, 3600 s is assumed) and after each bake of ``--bake`` (default expts 3 and
  4: 30 min at 100 °C and at 120 °C) at ``t_pre + t_eq``, with ``t_eq`` the bake's
  equivalent time at T_ref from the retention fit.

The relaxation rows are referenced to verified cells: the kernels add
``sqrt(σ_row² − σ_P²)`` to the programmed value, the verified values already carry the
level's verified spread σ_v, so each row holds ``sqrt(σ_meas² − σ_v² + σ_P²)`` and a
verified cell read at a tabulated time has exactly the measured spread σ_meas.

It then emulates every run on the new card — each (run, level, prior programs) group with
its own windows, start state, scheme and the run's fitted effect, through
``EmulatedBench.program(..., verify=WriteVerify.card(windows=...))`` — and writes data vs
emulation per (run, level), and the pre/post-bake spreads of every experiment (the ones not
used for the fit are out-of-sample checks). ``scripts/cards/loeo_write_verify.py`` is the
out-of-sample check of the write-verify model (leave one run out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

import analogmem
from analogmem._io import atomic_write_text, save_figure, write_json
from analogmem.calibrate.bake_law import bake_points, fit_bake_law
from analogmem.calibrate.pulse_response import fit_pulse_response, response_table
from analogmem.calibrate.retention import fit_arrhenius
from analogmem.calibrate.write_verify import read_write_verify, spread_table, write_verify_card

PREBAKE_AGE_S = 3600.0
T_VERIFIED_S = 1.0
#: Ages (s at T_ref) past the last bake where the card's spread rows come from the fitted
#: bake law (scripts/cards/README.md, "Retention past the tabulated ages"), so the emulator extrapolates by the law, not by holding the last bake
LAW_TIMES_S = (1e13, 1e14, 1e15, 1e16)
#: Bakes with the standard 3-bit windows the law is fitted to (scripts/cards/retention_law.py)
LAW_BAKES = ("radar-expt1", "radar-expt2", "radar-expt3", "radar-expt4")


def _bake_reads(reads: Any, device: str) -> tuple[Any, Any, float]:
    d = reads[reads.device == device]
    pre, post = d[d.time_s == 0], d[d.time_s > 0]
    if pre.empty or post.empty or post.temperature_K.isna().any():
        raise SystemExit(f"{device}: needs pre-bake reads and post-bake reads with a stated temperature")
    return pre, post, float(post.temperature_K.iloc[0])


def verified_stats(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """Median and standard deviation (S) of the verified conductance per window of a
    pulse-response table (from its quantile functions of ln g)."""
    u = (np.arange(4000) + 0.5) / 4000
    g = np.exp(np.array([np.interp(u, table.probabilities, q) for q in table.log_g_quantiles]))
    return np.median(g, axis=1), g.std(axis=1, ddof=1)


def build_card(tables: Path, bakes: list[str], prebake_age_s: float = PREBAKE_AGE_S,
               write_verify: list[str] | None = None, keep: Any = None) -> tuple[str, dict[str, Any]]:
    """The card's TOML text and the fit summary. ``keep``: a device whose ``[write_verify]``
    table and fit report are taken as they are instead of fitting them again (the shipped
    card's test rebuilds everything else around it)."""
    import pandas as pd
    import tomli_w

    reads = pd.read_csv(tables / "radar-reads.csv")
    if keep is None:
        wv_all = read_write_verify(tables / "radar-write-verify.csv", min_cells_per_level=1)
        if write_verify:
            wv_all = wv_all[wv_all.experiment.isin(write_verify)]
        wv = fit_pulse_response(wv_all)
        response, wv_table, wv_report = wv.response(), wv.card_table(), wv.fit_summary()
        runs = wv.runs
    else:
        response, wv_table, wv_report = keep.write_verify, response_table(keep.write_verify), keep.fit_report[
            "write_verify"]
        runs = list(wv_report["run_effects"])
    arr = fit_arrhenius(tables / "radar-ber.csv")
    levels = response.table()
    n_levels = levels.n_levels
    median, verified_std = verified_stats(levels)
    sigma_p = float(np.median(verified_std))
    card = write_verify_card("rram-radar", "", "", levels.log_g_quantiles, sigma_p, wv_table, wv_report)
    g_max = card["range"]["g_max_S"]

    # spread per level: pre-bake (pooled over the bake experiments) and after each bake
    pre = spread_table(pd.concat([_bake_reads(reads, d)[0] for d in bakes]))
    rows_t = {T_VERIFIED_S: verified_std, prebake_age_s: pre.std_S.to_numpy()}
    bake_info = []
    for d in bakes:
        _, post, temp = _bake_reads(reads, d)
        t = prebake_age_s + float(arr.equivalent_time_s(float(post.time_s.iloc[0]), temp))
        s = spread_table(post).std_S.to_numpy()
        rows_t[t] = np.sqrt((rows_t[t] ** 2 + s ** 2) / 2) if t in rows_t else s  # same bake twice: pool
        bake_info.append({"experiment": d, "bake_time_s": float(post.time_s.iloc[0]), "bake_temperature_K": temp,
                          "age_at_read_s": t})
    # past the last bake: the spread laws in Arrhenius-equivalent age (scripts/cards/retention_law.py validates them)
    law = fit_bake_law(bake_points(reads, [d for d in LAW_BAKES if (reads.device == d).any()], arr.equivalent_time_s,
                                   prebake_age_s))
    pre_std = pre.std_S.to_numpy()
    for t in LAW_TIMES_S:
        rows_t[t] = np.array([law.std_at(int(lv), t, prebake_age_s, float(sd)) for lv, sd in zip(pre.index, pre_std)])
    order = np.argsort(median)  # knots by increasing x
    times = sorted(rows_t)
    sigma_rows = []
    for t in times:
        meas = rows_t[t]
        row = np.sqrt(np.maximum(meas ** 2 - verified_std ** 2, 0.0) + sigma_p ** 2)
        sigma_rows.append([float(v) for v in row[order] * 1e6])
    # the mean through bakes: the law's shift of each level's verified median, at every age past the pre-bake read
    mean_rows = [[float(v) for v in np.asarray(r)[order]]
                 for r in law.mean_shift_rows_uS(times, prebake_age_s, [int(lv) for lv in pre.index], median)]

    card.update({
        "card": {"name": "rram-radar", "schema_version": 1, "technology": "RRAM", "input": "conductance",
                 "description": "1T1R RRAM, 3 bits per cell programmed with RADAR write-verify: shared "
                                "pulse-response model (any verify window in range, first program or re-program, "
                                "RADAR or ISPP scheme, run-to-run effect), verified-level distributions, spread after "
                                "bakes, Arrhenius retention."},
        "source": {
            "citation": "A. Levy et al., 'RADAR: A Fast and Energy-Efficient Programming Technique for Multiple "
                        "Bits-per-Cell RRAM Arrays', IEEE TED 2021 (doi 10.1109/TED.2021.3097975); data: "
                        "akashlevy/RRAM-RADAR-Tuning exptdata/ (read from $ANALOGMEM_DATA/rram-radar)",
            "regenerate": "python -m scripts.cards.convert_radar \"$ANALOGMEM_DATA/rram-radar\" /tmp/radar && "
                          "python -m scripts.cards.fit_radar_card /tmp/radar --out devices/rram-radar.toml "
                          "--plot scripts/cards/plots/rram-radar.png --json scripts/cards/plots/rram-radar.json && "
                          "python -m scripts.cards.loeo_folds /tmp/radar --json "
                          "scripts/cards/plots/write-verify-folds.json && python -m scripts.cards.run_variation /tmp/radar scripts/cards/plots/write-verify-folds.json "
                          "--card devices/rram-radar.toml --card-out devices/rram-radar.toml --json "
                          "docs/results/run_variation.json (or, keeping the write-verify model: fit_radar_card.py "
                          "/tmp/radar --out devices/rram-radar.toml --keep-write-verify devices/rram-radar.toml)",
            "notes": (f"write-verify traces: {', '.join(runs)}; bakes: {', '.join(bakes)}. Programming "
                      f"noise sigma_P = {sigma_p * 1e6:.3f} uS is the median spread of verified cells (a write "
                      "without verify is not in the data); verified spreads per level come from the card's "
                      "shared write-verify model. Relaxation rows are referenced to verified cells: "
                      "row = sqrt(sigma_measured^2 - sigma_verified^2 + sigma_P^2), so a verified cell read at a "
                      f"tabulated time has the measured spread. Pre-bake reads assumed {prebake_age_s:g} s after "
                      "programming (not stated in the data). Rows past the last bake (t >= "
                      f"{LAW_TIMES_S[0]:g} s) follow the fitted bake law sigma = sigma_pre (t/t_pre)^c_L of "
                      f"{', '.join(law.experiments)} (fit_report.bake_law); beyond {LAW_TIMES_S[-1]:g} s the last "
                      "row is held. The mean of each level follows the fitted law mu = mu_pre (t/t_pre)^m_L "
                      "(fit_report.bake_law) from the pre-bake read on, as relaxation.mean_uS: the shift of the "
                      "level's verified median (uS, at every tabulated time)."),
        },
        "relaxation": {"model": "table-log-time", "g_ref_S": g_max, "extrapolation": "hold",
                       "times_s": [float(t) for t in times],
                       "x_knots": [float(v) for v in median[order] / g_max], "sigma_uS": sigma_rows,
                       "mean_uS": mean_rows},
        "retention": arr.card_table(),
        "fit_report": {"write_verify": wv_report, "bakes": bake_info,
                       "bake_law": {**law.summary(), "law_times_s": list(LAW_TIMES_S), "prebake_age_s": prebake_age_s},
                       "retention": {"activation_energy_eV": arr.activation_energy_eV,
                                     "activation_energy_stderr_eV": arr.activation_energy_stderr_eV,
                                     "rms_log10_ber": arr.rms_log10, "n_points": arr.n}},
    })
    text = ("# Fitted by scripts/cards/fit_radar_card.py from the RADAR RRAM measurements; do not edit by hand.\n"
            "# Conductances in siemens, times in seconds, spreads in uS referenced to g_ref_S.\n\n"
            + tomli_w.dumps(card))
    analogmem.emulator.cells.parse_card(text, "rram-radar")  # refuse to write a card that does not load
    summary = {"n_levels": n_levels, "g_max_S": g_max, "sigma_program_S": sigma_p, "times_s": times,
               "bakes": bake_info, "write_verify": {k: v for k, v in wv_report.items() if k != "covariance"}}
    return text, summary


def _inside(lo: float, hi: float) -> float:
    """A target (S) inside the window: its geometric centre, or 2 % past a one-sided window's edge."""
    if np.isinf(hi):
        return lo * 1.02
    if lo <= 0:
        return hi / 1.02
    return float(np.sqrt(lo * hi))


def emulate_runs(device: Any, wv_table: Any, run_effects: dict[str, float], seed: int = 0) -> list[dict[str, Any]]:
    """Per (run, level): data vs emulated mean pulses and success rate. Every (run, level,
    prior programs) group is programmed on an ``EmulatedBench`` with as many cells as the
    data, in its own window, start state, scheme (and ISPP step) and the run's fitted effect."""
    from analogmem.calibrate.pulse_response import window_columns_S

    out = []
    lo_all, hi_all = window_columns_S(wv_table)
    wv_table = wv_table.assign(_lo=lo_all, _hi=hi_all)
    for (run, level), g in wv_table.groupby(["experiment", "target_level"], sort=True):
        pulses, ok = [], []
        for prior, h in g.groupby("prior_programs", sort=True):
            lo, hi = float(h._lo.iloc[0]), float(h._hi.iloc[0])
            step = float(h.step_V.iloc[0]) if np.isfinite(h.step_V.iloc[0]) else None
            budget = int(h.max_pulses.iloc[0]) if np.isfinite(h.max_pulses.iloc[0]) else None
            bench = analogmem.EmulatedBench(device, n_cells=len(h), seed=[seed, int(level), int(prior)])
            rep = bench.program(np.full(len(h), _inside(lo, hi)), verify=analogmem.WriteVerify.card(
                max_pulses=budget, windows=[(lo, hi)], prior_programs=int(prior), scheme=str(h.scheme.iloc[0]),
                step_V=step, run_effect=run_effects.get(run, 0.0)))
            pulses.append(rep.pulses)
            ok.append(rep.success)
        pulses, ok = np.concatenate(pulses), np.concatenate(ok)
        out.append({"run": run, "level": int(level), "n_cells": len(g), "pulses_mean_data": float(g.pulses.mean()),
                    "pulses_mean_emulated": float(pulses.mean()), "success_rate_data": float(g.success.mean()),
                    "success_rate_emulated": float(ok.mean())})
    return out


def emulate_bake(device: Any, reads: Any, experiment: str, prebake_age_s: float = PREBAKE_AGE_S,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Per level: measured vs emulated spread (S) before and after the experiment's bake."""
    pre, post, temp = _bake_reads(reads, experiment)
    s_pre, s_post = spread_table(pre), spread_table(post)
    pr = device.write_verify
    levels = s_pre.index.to_numpy()
    counts = s_post.n.to_numpy()
    targets = np.concatenate([np.full(c, np.exp(np.interp(0.5, pr.probabilities, pr.log_g_quantiles[int(lv)])))
                              for lv, c in zip(levels, counts)])
    lv_of = np.repeat(levels, counts)
    bench = analogmem.EmulatedBench(device, n_cells=targets.size, seed=seed)
    bench.program(targets, verify=analogmem.WriteVerify.card())
    bench.wait(prebake_age_s)
    g_pre = bench.read()
    bench.bake(float(post.time_s.iloc[0]), temp)
    g_post = bench.read()
    out = []
    for i, lv in enumerate(levels):
        m = lv_of == lv
        out.append({"experiment": experiment, "level": int(lv), "bake_temperature_K": temp,
                    "std_prebake_data_S": float(s_pre.std_S.iloc[i]), "std_prebake_emulated_S": float(g_pre[m].std(ddof=1)),
                    "std_postbake_data_S": float(s_post.std_S.iloc[i]),
                    "std_postbake_emulated_S": float(g_post[m].std(ddof=1))})
    return out


def plot(path: Path, wv_rows: list[dict], bake_rows: list[dict], fitted: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for run in sorted({r["run"] for r in wv_rows}):
        rows = [r for r in wv_rows if r["run"] == run]
        ax[0].loglog([r["pulses_mean_data"] for r in rows], [r["pulses_mean_emulated"] for r in rows], "o", ms=4,
                     label=run)
    lim = [5, 600]
    ax[0].plot(lim, lim, "k-", lw=0.8)
    ax[0].fill_between(lim, [v * 0.8 for v in lim], [v * 1.2 for v in lim], color="0.9")
    ax[0].set(xlabel="mean pulses per (run, level), data", ylabel="emulated (run's fitted effect)",
              title="write-verify, in sample (band ±20 %)")
    ax[0].legend(fontsize=6)
    for exp in sorted({r["experiment"] for r in bake_rows}):
        rows = [r for r in bake_rows if r["experiment"] == exp]
        x = [r["level"] for r in rows]
        style = "-" if exp in fitted else ":"
        line, = ax[1].plot(x, [r["std_postbake_data_S"] * 1e6 for r in rows], "o" + style,
                           label=f"{exp} data ({rows[0]['bake_temperature_K'] - 273.15:.0f} °C)"
                                 + ("" if exp in fitted else ", held out"))
        ax[1].plot(x, [r["std_postbake_emulated_S"] * 1e6 for r in rows], "x", color=line.get_color(), ms=9)
    ax[1].set(xlabel="level", ylabel="σ of g after bake (µS)", title="post-bake spread: data (o) vs emulated (x)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("--out", type=Path, required=True, help="device card to write (TOML)")
    ap.add_argument("--write-verify", nargs="+", default=None, help="runs to fit the write-verify model to "
                    "(default: every run of radar-write-verify.csv)")
    ap.add_argument("--bake", nargs="+", default=["radar-expt3", "radar-expt4"])
    ap.add_argument("--check", nargs="+", default=["radar-expt1", "radar-expt2", "radar-expt3", "radar-expt4"],
                    help="experiments whose bakes are emulated and compared (those not in --bake are held out)")
    ap.add_argument("--prebake-age-s", type=float, default=PREBAKE_AGE_S)
    ap.add_argument("--keep-write-verify", type=Path, default=None,
                    help="take the [write_verify] table (with its run variation) and its fit report from this card "
                         "instead of fitting them again")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    keep = analogmem.load_device(args.keep_write_verify) if args.keep_write_verify else None
    text, summary = build_card(args.tables, args.bake, args.prebake_age_s, args.write_verify, keep=keep)
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    device = analogmem.load_device(args.out)
    wv_all = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    effects = dict(summary["write_verify"]["run_effects"])
    wv_rows = emulate_runs(device, wv_all[wv_all.experiment.isin(list(effects))], effects)
    reads = pd.read_csv(args.tables / "radar-reads.csv")
    bake_rows = [r for e in args.check for r in emulate_bake(device, reads, e, args.prebake_age_s)]
    print(f"{'run':>22} {'level':>5} {'pulses data':>12} {'emulated':>9} {'success data':>13} {'emulated':>9}")
    for r in wv_rows:
        print(f"{r['run']:>22} {r['level']:>5} {r['pulses_mean_data']:>12.1f} {r['pulses_mean_emulated']:>9.1f} "
              f"{r['success_rate_data']:>13.4f} {r['success_rate_emulated']:>9.4f}")
    within = np.mean([abs(r["pulses_mean_emulated"] / r["pulses_mean_data"] - 1) <= 0.2 for r in wv_rows])
    print(f"in sample: mean pulses within 20 % at {100 * within:.0f} % of (run, level) pairs")
    print(f"{'experiment':>12} {'level':>5} {'σ post data µS':>15} {'emulated':>9} {'ratio':>6}")
    for r in bake_rows:
        print(f"{r['experiment']:>12} {r['level']:>5} {r['std_postbake_data_S'] * 1e6:>15.2f} "
              f"{r['std_postbake_emulated_S'] * 1e6:>9.2f} {r['std_postbake_emulated_S'] / r['std_postbake_data_S']:>6.2f}"
              + ("" if r["experiment"] in args.bake else "  (held out)"))
    if args.json:
        write_json(args.json, {"card": str(args.out), "fit": summary, "write_verify_check": wv_rows,
                               "bake_check": bake_rows, "fitted_bakes": args.bake}, settings=vars(args))
    if args.plot:
        plot(args.plot, wv_rows, bake_rows, args.bake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
