"""Leave-one-experiment-out validation of the write-verify pulse-response models (scripts/cards/README.md, "Leave one experiment out").

For every run (``experiment``) of a tidy write-verify table — the RADAR write tests and the
ISPP files from ``convert_radar.py`` — fit on all the other runs and predict the held-out
run's mean pulses and success rate per level:

* **shared** — :func:`analogmem.calibrate.fit_pulse_response` (one set of parameters for
  every window, start state, scheme and run). The held-out run's effect is unknown: it is
  integrated over its fitted N(0, τ²) distribution, so none of the held-out run's data enter
  its prediction (its windows, start states, scheme and budget are the inputs);
* **per-window** — the first card's model: per window, the geometric mixture fitted by
  :func:`analogmem.calibrate.fit_geometric_mixture` on the training rows with exactly that
  window; a window no training run used is refused (a miss).

Criteria of the issue: mean pulses within 20 % at >= 80 % of (run, level) pairs, success
within 2 points. A held-out run whose scheme no training run shares cannot be predicted by
either model; it is reported, and counted as a miss.

**Noise floor.** A pair's empirical mean is itself a noisy estimate (9–4,066 programs of a
heavy-tailed count, several programs of one cell): even a model that knew the pair's TRUE
mean would miss the 20 % band now and then. :func:`hit_probability` estimates, per pair, the
probability that the true mean lies within the tolerance of the empirical one by a cluster
bootstrap over the pair's cells (the resampled mean plays the empirical mean, the observed
mean the true one); the sum over pairs is the number of pairs any model can be expected to
hit, and :func:`at_least_probability` the chance that a perfect model reaches the issue's
80 %. The in-sample row (each run's own effect fitted, the fit to all runs) is the ceiling of
the covariates themselves.

    python -m scripts.cards.loeo_write_verify /tmp/radar --json scripts/cards/plots/write-verify-loeo.json \\
        --plot scripts/cards/plots/write-verify-loeo.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._io import save_figure, write_json
from analogmem.calibrate import fit_geometric_mixture, fit_pulse_response, read_write_verify
from analogmem.errors import CalibrationError

PULSES_TOL = 0.20
SUCCESS_TOL = 0.02
TARGET_SHARE = 0.80
N_BOOT = 4000


def hit_probability(values: Any, clusters: Any, tol: float, relative: bool, n_boot: int = N_BOOT,
                    seed: int | np.random.Generator = 0) -> float:
    """Probability that a pair's TRUE mean lies within ``tol`` of its empirical mean, by the
    cluster bootstrap.

    ``values``: the pair's per-program outcomes (pulses, or success as 0/1), shape (n,);
    ``clusters``: the cell of each program, shape (n,) (cells are resampled with
    replacement, all of a cell's programs together, so repeated programs of one cell are not
    taken as independent). With ``m`` the observed mean (standing for the true mean) and
    ``m*`` a resampled mean (standing for the empirical mean), the criterion is
    ``|m / m* − 1| ≤ tol`` when ``relative`` (as the issue's "within 20 %" of the data), else
    ``|m − m*| ≤ tol``. Returns the share of ``n_boot`` resamples meeting it.
    """
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=np.float64)
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    inv = inv.reshape(-1)
    sums, counts = np.bincount(inv, weights=v), np.bincount(inv).astype(np.float64)
    c = sums.size
    draws = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(np.float64)  # (n_boot, cells)
    boot = (draws @ sums) / (draws @ counts)
    m = float(v.mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(m / boot - 1.0) if relative else np.abs(m - boot)
    return float(np.mean(np.where(np.isnan(err), 0.0, err) <= tol))


def at_least_probability(probabilities: Any, k: int) -> float:
    """P(at least ``k`` of independent events with these probabilities happen) (the
    Poisson-binomial tail, by convolution)."""
    dist = np.array([1.0])
    for p in np.asarray(probabilities, dtype=np.float64):
        dist = np.concatenate([dist * (1.0 - p), [0.0]]) + np.concatenate([[0.0], dist * p])
    return float(dist[max(int(k), 0):].sum())


def per_window_prediction(train: Any, test: Any) -> dict[tuple[float, float], tuple[float, float] | None]:
    """Per window of ``test``: (mean pulses, success) of today's per-window model fitted on
    ``train``'s rows with that window (None: no training row has it). The budget is the
    held-out rows' ``max_pulses`` when given, else the most pulses of the training rows."""
    out = {}
    for (lo, hi), g in test.groupby(["window_lo_ohm", "window_hi_ohm"]):
        tr = train[(train.window_lo_ohm == lo) & (train.window_hi_ohm == hi)]
        if len(tr) == 0 or not tr.success.any():
            out[(lo, hi)] = None
            continue
        mix = fit_geometric_mixture(tr.pulses.to_numpy(), tr.success.to_numpy())
        given = g.max_pulses.dropna()
        budget = int(given.max()) if len(given) else int(tr.pulses.max())
        out[(lo, hi)] = (mix.mean(budget), float(1.0 - mix.survival(np.array([budget]))[0]))
    return out


def _cells(g: Any) -> np.ndarray:
    """The cell of each row (its own cluster for every row when the table has no ``cell``)."""
    return g.cell.to_numpy() if "cell" in g else np.arange(len(g))


def _note(train: Any, g: Any) -> str | None:
    """What the training runs cannot tell about a held-out group (scheme, step)."""
    scheme = str(g.scheme.iloc[0])
    if scheme not in set(train.scheme):
        return f"scheme {scheme!r} in no training run"
    steps = sorted({float(v) for v in train.step_V[train.scheme == scheme].dropna()})
    step = g.step_V.dropna()
    if len(step) and steps and float(step.iloc[0]) not in steps:
        return f"step {float(step.iloc[0]):g} V in no training run (predicted at {steps} V)"
    return None


def loeo(df: Any, classes: int = 3, progress: bool = True) -> list[dict[str, Any]]:
    """One row per (held-out run, level): data and both models' predictions. Each fold's
    fit starts from the fit to all runs (a warm start: the optimum it reaches is its own)."""
    from tqdm import tqdm

    full = fit_pulse_response(df, classes=classes, stderr=False)
    in_sample = {(r["run"], r["level"]): r["pulses_mean_model_run"] for r in full.report}
    rows = []
    runs = sorted(df.experiment.unique())
    for held in tqdm(runs, desc="held-out runs", disable=None if progress else True):
        train, test = df[df.experiment != held], df[df.experiment == held]
        shared_ok = set(test.scheme) <= set(train.scheme)
        failure = None
        if shared_ok:
            try:
                fit = fit_pulse_response(train, classes=classes, stderr=False, start=full)
                mean, ok = fit.predict(test, clip_steps=True)
            except CalibrationError as exc:  # reported in the table, not hidden
                shared_ok, failure = False, str(exc)
        if not shared_ok:
            mean, ok = np.full(len(test), np.nan), np.full(len(test), np.nan)
        pw = per_window_prediction(train, test)
        test = test.assign(_m=mean, _s=ok)
        for level, g in test.groupby("target_level", sort=True):
            win = (float(g.window_lo_ohm.iloc[0]), float(g.window_hi_ohm.iloc[0]))
            p = pw.get(win)
            rows.append({
                "run": held, "level": int(level), "scheme": str(g.scheme.iloc[0]), "n_cells": int(len(g)),
                "window_lo_ohm": win[0], "window_hi_ohm": win[1],
                "first_program_share": float((g.prior_programs == 0).mean()),
                "pulses_mean_data": float(g.pulses.mean()), "success_rate_data": float(g.success.mean()),
                "pulses_mean_shared": float(g._m.mean()), "success_rate_shared": float(g._s.mean()),
                "pulses_mean_per_window": None if p is None else float(p[0]),
                "success_rate_per_window": None if p is None else float(p[1]),
                "shared_refused": None if shared_ok else (failure or f"scheme {g.scheme.iloc[0]!r} is in no training run"),
                "note": _note(train, g),
                "pulses_mean_in_sample": float(in_sample.get((held, int(level)), np.nan)),
                "pulses_hit_probability_true_mean": hit_probability(g.pulses, _cells(g), PULSES_TOL, True,
                                                                    seed=[len(rows), 0]),
                "success_hit_probability_true_mean": hit_probability(g.success, _cells(g), SUCCESS_TOL, False,
                                                                     seed=[len(rows), 1]),
            })
    for r in rows:
        for m in ("shared", "per_window"):
            pred, succ = r[f"pulses_mean_{m}"], r[f"success_rate_{m}"]
            ok = pred is not None and np.isfinite(pred)
            r[f"pulses_error_{m}"] = pred / r["pulses_mean_data"] - 1.0 if ok else None
            r[f"success_error_{m}"] = succ - r["success_rate_data"] if ok else None
            r[f"pulses_ok_{m}"] = bool(ok and abs(r[f"pulses_error_{m}"]) <= PULSES_TOL)
            r[f"success_ok_{m}"] = bool(ok and abs(r[f"success_error_{m}"]) <= SUCCESS_TOL)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares of (run, level) pairs within the criteria, per model, over all pairs and over
    the pairs the per-window model can predict."""
    out = {}
    both = [r for r in rows if r["pulses_mean_per_window"] is not None]
    for m in ("shared", "per_window"):
        for name, sel in (("all", rows), ("per_window_predictable", both)):
            out[f"{m}_{name}"] = {
                "pairs": len(sel),
                "pulses_within_20pct": float(np.mean([r[f"pulses_ok_{m}"] for r in sel])) if sel else None,
                "success_within_2pt": float(np.mean([r[f"success_ok_{m}"] for r in sel])) if sel else None,
                "median_abs_pulses_error": float(np.median([abs(r[f"pulses_error_{m}"]) for r in sel
                                                            if r[f"pulses_error_{m}"] is not None]))
                if any(r[f"pulses_error_{m}"] is not None for r in sel) else None}
    n, need = len(rows), int(np.ceil(TARGET_SHARE * len(rows) - 1e-9))
    p_pulses = [r["pulses_hit_probability_true_mean"] for r in rows]
    p_both = [r["pulses_hit_probability_true_mean"] * r["success_hit_probability_true_mean"] for r in rows]
    ins = [abs(r["pulses_mean_in_sample"] / r["pulses_mean_data"] - 1.0) <= PULSES_TOL for r in rows
           if np.isfinite(r["pulses_mean_in_sample"])]
    out["noise_floor"] = {
        "pairs": n, "pairs_needed_for_target": need,
        "expected_pulses_hits_true_mean": float(np.sum(p_pulses)),
        "expected_success_hits_true_mean": float(np.sum([r["success_hit_probability_true_mean"] for r in rows])),
        "expected_both_hits_true_mean": float(np.sum(p_both)),
        "p_reach_target_pulses_true_mean": at_least_probability(p_pulses, need),
        "pairs_below_half_chance": int(np.sum(np.asarray(p_pulses) < 0.5)),
        "in_sample_pulses_within_20pct": float(np.mean(ins)) if ins else None}
    runs = sorted({r["run"] for r in rows})
    out["by_run_shared_pulses_within_20pct"] = {
        run: float(np.mean([r["pulses_ok_shared"] for r in rows if r["run"] == run])) for run in runs}
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    def pct(v: Any) -> str:
        return "refused" if v is None else f"{100 * v:+.0f} %"

    def num(v: Any, f: str) -> str:
        return "—" if v is None or not np.isfinite(v) else format(v, f)

    lines = ["| held-out run | level | programs | first programs | mean pulses: data | shared | error | per-window | "
             "error | in sample | P(true mean within 20 %) | success: data | shared | per-window |", "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['run']} | {r['level']} | {r['n_cells']} | {100 * r['first_program_share']:.0f} % | "
                     f"{r['pulses_mean_data']:.1f} | {num(r['pulses_mean_shared'], '.1f')} | "
                     f"{pct(r['pulses_error_shared'])} | {num(r['pulses_mean_per_window'], '.1f')} | "
                     f"{pct(r['pulses_error_per_window'])} | {num(r['pulses_mean_in_sample'], '.1f')} | "
                     f"{r['pulses_hit_probability_true_mean']:.2f} | {r['success_rate_data']:.4f} | "
                     f"{num(r['success_rate_shared'], '.4f')} | {num(r['success_rate_per_window'], '.4f')} |")
    return "\n".join(lines)


def floor_text(s: dict[str, Any]) -> str:
    """Markdown lines: the noise floor and the in-sample ceiling next to the models' hit counts."""
    f = s["noise_floor"]
    n = f["pairs"]

    def share(v: float) -> str:
        return f"{round(v * n)}/{n} = {100 * v:.0f} %"

    return "\n".join([
        f"- shared model, held out: mean pulses within 20 % at {share(s['shared_all']['pulses_within_20pct'])}, "
        f"success within 2 points at {share(s['shared_all']['success_within_2pt'])}",
        f"- per-window model, held out: {share(s['per_window_all']['pulses_within_20pct'])} and "
        f"{share(s['per_window_all']['success_within_2pt'])}",
        f"- shared model in sample (each run's own effect fitted, all runs): mean pulses within 20 % at "
        f"{share(f['in_sample_pulses_within_20pct'])}",
        "- noise floor (a model that knew each pair's true mean): expected "
        f"{f['expected_pulses_hits_true_mean']:.1f}/{n} "
        f"pairs within 20 %, {f['expected_success_hits_true_mean']:.1f}/{n} within 2 points, "
        f"{f['expected_both_hits_true_mean']:.1f}/{n} both; P(at least {f['pairs_needed_for_target']} pairs within "
        f"20 %) = {f['p_reach_target_pulses_true_mean']:.4f}; {f['pairs_below_half_chance']} pair(s) below an even "
        "chance"])


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    data = np.array([r["pulses_mean_data"] for r in rows])
    for m, mk in (("shared", "o"), ("per_window", "x")):
        pred = np.array([np.nan if r[f"pulses_mean_{m}"] is None else r[f"pulses_mean_{m}"] for r in rows])
        ax[0].loglog(data, pred, mk, ms=5, label=m.replace("_", "-"))
    lim = [5, 600]
    ax[0].plot(lim, lim, "k-", lw=0.8)
    ax[0].fill_between(lim, [v * 0.8 for v in lim], [v * 1.2 for v in lim], color="0.9")
    ax[0].set(xlabel="held-out mean pulses, data", ylabel="predicted", title="leave one run out (band ±20 %)")
    ax[0].legend()
    runs = sorted({r["run"] for r in rows})
    for m, off in (("shared", -0.2), ("per_window", 0.2)):
        share = [np.mean([r[f"pulses_ok_{m}"] for r in rows if r["run"] == run]) for run in runs]
        ax[1].barh(np.arange(len(runs)) + off, share, 0.4, label=m.replace("_", "-"))
    ax[1].set_yticks(range(len(runs)), runs, fontsize=7)
    ax[1].axvline(0.8, color="k", lw=0.8)
    ax[1].set(xlabel="share of levels within 20 %", title="per held-out run")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    args = ap.parse_args(argv)
    df = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    rows = loeo(df, args.classes)
    s = summary(rows)
    text = table(rows) + "\n\n" + floor_text(s)
    print(text)
    for k, v in s.items():
        print(k, v)
    if args.markdown:
        from analogmem._io import atomic_write_text

        atomic_write_text(args.markdown, text + "\n")
    if args.json:
        write_json(args.json, {"rows": rows, "summary": s}, settings=vars(args))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
