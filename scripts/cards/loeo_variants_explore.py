"""Exploratory LOEO folds of write-verify model variants that were tried and NOT adopted (scripts/cards/README.md, "Leave one experiment out").

Not the model: this script patches the shared pulse-response fit
(:mod:`analogmem.calibrate.pulse_response`) to try, on chosen held-out runs, covariates the
shipped model does not have, each known before the held-out run's outcomes:

* ``covariate VARIANT`` — the covariate set with ``ln_prior`` = ln(1 + prior programs)
  replaced by a saturating ``1 − exp(−n/2)`` (``sat2``), capped at 10 (``cap10``), both
  (``both_sat2``), a squared term (``sq``), or with the cell's programs in earlier files
  (experiment number as chronological order, :data:`loeo_covariate_checks.ORDER`) as
  ``ln(1 + n)`` (``cum``) or as a never-programmed indicator (``virgin``) added on p and on the
  class weights. The earlier-programs count travels in ``prior_programs`` as
  ``prior + 10000·earlier`` and the patched covariate function decodes it;
* ``cell-effect`` — a per-address random effect ``v_c ~ N(0, σ_c²)`` on logit p crossed with
  the run effect, fitted jointly (h-likelihood, as the run effect) with σ_c FIXED (the joint
  mode is degenerate at σ_c = 0 for cells with a few dozen programs); the held-out run's
  cells get their fitted effect (0 for a cell no training run programmed), its run effect is
  integrated over N(0, τ²). Printed per fold: ``_b`` the shipped model, ``_cS`` the crossed fit
  with the cells' effects, ``_nS`` the same fit without them.

Each fold prints the relative error of the mean pulses per level and how many are within 20 %.

    python -m scripts.cards.loeo_variants_explore /tmp/radar covariate sat2 writetest3,writetest1 --classes 2
    python -m scripts.cards.loeo_variants_explore /tmp/radar cell-effect writetest5,writetest1,writetest3 --classes 2
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

import analogmem.calibrate.pulse_response as C
import analogmem.emulator.pulse_response as E
from analogmem._io import write_json
from analogmem.calibrate import read_write_verify
from analogmem.calibrate.pulse_response import expected_pulses, window_columns_S
from scripts.cards.loeo_covariate_checks import with_history

_ENC = 10000


def _patch_covariates(variant: str) -> None:
    orig = E.pulse_covariates

    def cov_fn(lo: Any, hi: Any, prior: Any, step: Any, g_ref: float) -> dict[str, np.ndarray]:
        enc = np.broadcast_to(np.asarray(prior, float), np.broadcast(np.asarray(lo), np.asarray(prior)).shape)
        pr, cumb = enc % _ENC, enc // _ENC
        c = orig(lo, hi, pr, step, g_ref)
        c["ln_cum"] = np.log1p(cumb)
        c["virgin"] = (cumb == 0).astype(float)
        c["sat2"] = 1 - np.exp(-pr / 2.0)
        c["ln_prior_sq"] = np.log1p(pr) ** 2
        c["prior_cap"] = np.log1p(np.minimum(pr, 10))
        return c

    def swap(names: tuple[str, ...], new: str) -> tuple[str, ...]:
        return tuple(new if x == "ln_prior" else x for x in names)

    base_p, base_w = E.P_EFFECTS, E.WEIGHT_EFFECTS
    sets = {"base": (base_p, base_w), "sat2": (swap(base_p, "sat2"), swap(base_w, "sat2")),
            "cap10": (swap(base_p, "prior_cap"), swap(base_w, "prior_cap")),
            "both_sat2": (base_p + ("sat2",), base_w + ("sat2",)),
            "cum": (base_p + ("ln_cum",), base_w + ("ln_cum",)),
            "virgin": (base_p + ("virgin",), base_w + ("virgin",)), "sq": (base_p + ("ln_prior_sq",), base_w)}
    E.pulse_covariates = C.pulse_covariates = cov_fn
    C.P_EFFECTS, C.WEIGHT_EFFECTS = E.P_EFFECTS, E.WEIGHT_EFFECTS = sets[variant]


def covariate_fold(df: Any, held: str, classes: int) -> list[float]:
    tr, te = df[df.experiment != held], df[df.experiment == held]
    fit = C.fit_pulse_response(tr, classes=classes, stderr=False)
    m, _ = fit.predict(te, clip_steps=True)
    te = te.assign(_m=m)
    return [float(g._m.mean() / g.pulses.mean() - 1) for _, g in te.groupby("target_level")]


def _design(data: Any, fit: Any, cells_all: np.ndarray) -> SimpleNamespace:
    cov = C._covariates(data, fit.g_ref_S, fit.schemes)
    X = np.column_stack([cov[n] for n in fit.x_names])
    Z = np.column_stack([cov[n] for n in fit.z_names])
    run = np.searchsorted(fit.runs, data.experiment.to_numpy())
    cell = np.searchsorted(cells_all, data.cell.to_numpy())
    x = data.pulses.to_numpy(float)
    cens = ~data.success.to_numpy(bool)
    key = np.column_stack([run, cell, X, Z, x, cens])
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return SimpleNamespace(X=X[first], Z=Z[first], x=x[first], cens=cens[first], run=run[first], cell=cell[first],
                           count=np.bincount(inv.reshape(-1)).astype(float), n_runs=len(fit.runs),
                           n_cells=len(cells_all))


def _objective(params: np.ndarray, d: SimpleNamespace, k: int, n_theta: int, n_free: int,
               prior_sd: float) -> tuple[float, np.ndarray]:
    """Negative joint log-likelihood of (θ, run effects u, cell effects v; ln σ_c last, fixed)."""
    theta = params[:n_theta]
    u = params[n_theta:n_theta + d.n_runs]
    v = params[n_theta + d.n_runs:-1]
    s = params[-1]
    log_tau = theta[-1]
    li, q, p, log_pi = C._row_loglik(theta, d, k, u[d.run] + v[d.cell])
    free = theta[k:n_free]
    ll = float(li @ d.count) - 0.5 * float(free @ free) / prior_sd ** 2
    ll += -0.5 * np.sum(u ** 2) * math.exp(-2 * log_tau) - u.size * log_tau
    ll += -0.5 * np.sum(v ** 2) * math.exp(-2 * s) - v.size * s
    x = d.x[:, None]
    dlf = np.where(d.cens[:, None], -(x + 1.0) * p, (1.0 - p) - x * p)
    G = q * dlf * d.count[:, None]
    g_row = G.sum(axis=1)
    dz = q * d.count[:, None] - np.exp(log_pi) * d.count[:, None]
    grad = np.concatenate([G.sum(axis=0), d.X.T @ g_row, dz[:, 1:].sum(axis=0), (dz[:, 1:].T @ d.Z).ravel(),
                           [np.sum(u ** 2) * math.exp(-2 * log_tau) - u.size]])
    grad[k:n_free] -= free / prior_sd ** 2
    gu = np.bincount(d.run, weights=g_row, minlength=d.n_runs) - u * math.exp(-2 * log_tau)
    gv = np.bincount(d.cell, weights=g_row, minlength=d.n_cells) - v * math.exp(-2 * s)
    return -ll, -np.concatenate([grad, gu, gv, [0.0]])


def _predict(fit: Any, test: Any, v_of_cell: np.ndarray, tau: float) -> np.ndarray:
    r = fit.response()
    lo, hi = window_columns_S(test)
    s = test.scheme.iloc[0]
    w, p = C._probabilities(r, lo, hi, test.prior_programs.to_numpy(), s, np.full(len(test), np.nan), 0.0)
    budget = np.where(np.isnan(test.max_pulses.to_numpy(float)), fit.scheme_budgets[s], test.max_pulses.to_numpy(float))
    nodes, wts = np.polynomial.hermite_e.hermegauss(21)
    wts = wts / wts.sum()
    lg = np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-12))
    m = np.zeros(len(test))
    for z, wt in zip(nodes, wts):
        m += wt * expected_pulses(w, 1 / (1 + np.exp(-(lg + v_of_cell[:, None] + tau * z))), budget)[0]
    return m


def cell_effect_fold(df: Any, held: str, classes: int, sigmas: list[float]) -> dict[str, list[float]]:
    from scipy.optimize import minimize

    tr, te = df[df.experiment != held], df[df.experiment == held]
    base = C.fit_pulse_response(tr, classes=classes, stderr=False)
    cells_all = np.unique(tr.cell.to_numpy())
    d = _design(tr, base, cells_all)
    k, px, pz = classes, len(base.x_names), len(base.z_names)
    n_theta, n_free = base.theta.size, classes + px + (classes - 1) * (1 + pz)
    cols = {"_b": base.predict(te, clip_steps=True)[0]}
    for sig in sigmas:
        x0 = np.concatenate([base.theta, np.asarray(base.run_effects) * base.run_sd, np.zeros(d.n_cells),
                             [math.log(sig)]])
        res = minimize(lambda v: _objective(v, d, k, n_theta, n_free, base.prior_sd), x0, jac=True,
                       method="L-BFGS-B", options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-13, "gtol": 1e-7})
        fit = dataclasses.replace(base, theta=res.x[:n_theta])
        v = res.x[n_theta + d.n_runs:-1]
        j = np.minimum(np.searchsorted(cells_all, te.cell.to_numpy()), cells_all.size - 1)
        v_te = np.where(cells_all[j] == te.cell.to_numpy(), v[j], 0.0)
        cols[f"_c{sig}"] = _predict(fit, te, v_te, fit.run_sd)
        cols[f"_n{sig}"] = _predict(fit, te, np.zeros(len(te)), fit.run_sd)
    te = te.assign(**cols)
    return {c: [float(g[c].mean() / g.pulses.mean() - 1) for _, g in te.groupby("target_level")] for c in cols}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path)
    ap.add_argument("what", choices=["covariate", "cell-effect"])
    ap.add_argument("variant_or_folds")
    ap.add_argument("folds", nargs="?")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--sigma", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    df = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    out: dict[str, Any] = {}
    if args.what == "covariate":
        variant, folds = args.variant_or_folds, args.folds.split(",")
        hist = with_history(df)
        df = df.assign(prior_programs=df.prior_programs.to_numpy()
                       + _ENC * (hist.programs_before.to_numpy() - hist.repetition.to_numpy()))
        _patch_covariates(variant)
        for held in folds:
            t = time.time()
            errs = covariate_fold(df, held, args.classes)
            out[held] = {variant: errs}
            print(variant, held, "K", args.classes, f"ok {sum(abs(e) <= .2 for e in errs)}/{len(errs)}",
                  " ".join(f"{e:+.2f}" for e in errs), f"{time.time() - t:.0f}s", flush=True)
    else:
        for held in args.variant_or_folds.split(","):
            t = time.time()
            out[held] = cell_effect_fold(df, held, args.classes, args.sigma)
            print(held, "K", args.classes, f"{time.time() - t:.0f}s")
            for name, errs in out[held].items():
                print(f"   {name:<8} ok {sum(abs(e) <= .2 for e in errs)}/{len(errs)}  "
                      + " ".join(f"{e:+.2f}" for e in errs), flush=True)
    if args.json:
        write_json(args.json, out, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
