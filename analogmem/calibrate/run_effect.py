"""Run-to-run variation of write-verify as a predictive distribution (scripts/cards/README.md, "Run-to-run variation").

The shared pulse-response model (:mod:`analogmem.calibrate.pulse_response`) fits one run
effect ``τ·r`` on logit p by the joint mode of (parameters, run effects); held out one run
at a time its errors are far larger than τ implies (scripts/cards/README.md). This module
describes what a NEW run will do: its effect on the per-pulse hit probability's logit is

    ``u_{run, level} = b_run + w_{run, level}``,  ``b ~ N(0, σ_b²)``,  ``w ~ N(0, σ_w²)``,

a between-run component ``b`` shared by every window of one programming campaign and a
within-run, level-to-level component ``w`` of each window. ``σ_b`` and ``σ_w`` are estimated
from held-out residuals — for every (run, level) pair, ``e = ln(data / prediction)`` of the
mean pulses, the prediction made by a fit without that run — by maximising their Gaussian
marginal likelihood

    ``e_run ~ N(0, σ_b² J Jᵀ + diag(σ_w² J² + s²))``

per run (``J``: d ln E[pulses] / du at the pair, from the model; ``s²``: the sampling
variance of the pair's empirical ln mean, from its cells, a cluster estimate). The held-out
residuals carry the error of a fit that had not seen the run, so the components include
the parameter uncertainty of such a fit; their own uncertainty comes from a bootstrap over
runs (runs resampled with replacement, the likelihood maximised again), and predictions
integrate over the bootstrap replicates.

:class:`PairModel` gives a (run, level) pair's mean pulses, per-cell variance and success
as functions of ``u`` (closed forms of the truncated geometric mixture);
:func:`prediction_intervals` the 50/80/95 % intervals of a pair's empirical mean pulses
and success rate over ``n`` cells; :func:`few_cell_update` the posterior of a new run's
effects from its first cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .._seeding import SeedLike, as_generator
from ..emulator.pulse_response import PulseResponse
from ..errors import CalibrationError
from .write_verify import window_columns_S

__all__ = ["RunVariation", "PairModel", "pair_models", "estimate_run_variation", "prediction_intervals",
           "sampling_variance_log_mean", "truncated_moments", "few_cell_update", "program_rows", "INTERVAL_LEVELS",
           "predict_levels", "card_variation", "window_support", "adapt_to_run"]

#: Bootstrap replicates of (σ_b, σ_w) a card keeps (the first ones: a random sample of all).
MAX_CARD_REPLICATES = 100
#: Central prediction-interval probabilities reported by default.
INTERVAL_LEVELS = (0.5, 0.8, 0.95)


def truncated_moments(weights: np.ndarray, p: np.ndarray, budget: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E[M], E[M²] and P(X ≤ B) of ``M = min(X, B)``, ``X ~ Σ_k w_k Geometric₀(p_k)``.

    ``weights``, ``p``: shape (..., K); ``budget``: shape (...) (inf: none). Pulses spent
    by a failed operation are its budget B (the loop stops there)."""
    w = np.asarray(weights, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0)
    b = np.asarray(budget, dtype=np.float64)[..., None] * np.ones_like(p)
    q = 1.0 - p
    lq = np.log1p(-np.minimum(p, 1.0 - 1e-16))
    fin = np.isfinite(b)
    bb = np.where(fin, b, 0.0)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        qb = np.where(fin, np.exp(bb * lq), 0.0)           # q^B
        one_m_qb = np.where(fin, -np.expm1(bb * lq), 1.0)   # 1 - q^B
        a = q * one_m_qb / p                                # Σ_{t<B} q^{t+1} = E[M]
        # Σ_{t=1}^{B-1} t q^{t+1} = q² (1 − B q^{B−1} + (B−1) q^B) / p²
        s1 = q ** 2 * (1.0 - np.where(fin, bb * qb / np.where(q > 0, q, 1.0), 0.0)
                       + np.where(fin, (bb - 1.0) * qb, 0.0)) / p ** 2
        # small B·p: the closed form cancels; its series to first order in p
        small = fin & (bb * p < 1e-4)
        s1 = np.where(small, bb * (bb - 1.0) / 2.0 - p * (bb - 1.0) * bb * (bb + 1.0) / 3.0, s1)
        a = np.where(small, bb - p * bb * (bb + 1.0) / 2.0, a)
        ok = np.where(fin, -np.expm1((bb + 1.0) * lq), 1.0)
    m2 = 2.0 * s1 + a
    return (w * a).sum(-1), (w * m2).sum(-1), (w * ok).sum(-1)


@dataclass
class PairModel:
    """One (run, level) pair as the model sees it: its distinct programs (window, start
    state, scheme, budget) with their counts; the moments as functions of the pair's logit
    shift ``u`` (a NEW run's effect; 0 the population centre)."""

    weights: np.ndarray  #: (R, K) class weights
    logit_p: np.ndarray  #: (R, K) logit of the per-pulse hit probability at u = 0
    budget: np.ndarray   #: (R,) pulse budget (inf: none)
    count: np.ndarray    #: (R,) programs of each distinct row

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def moments(self, u: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per value of ``u`` (shape (D,)): the pair's expected mean pulses per program,
        the variance of one program's pulses (mixing over the pair's rows) and its success
        probability; each shape (D,)."""
        u = np.atleast_1d(np.asarray(u, dtype=np.float64))
        p = 1.0 / (1.0 + np.exp(-(self.logit_p[None, :, :] + u[:, None, None])))
        m1, m2, ok = truncated_moments(self.weights[None], p, self.budget[None, :])
        f = self.count / self.count.sum()
        mean = m1 @ f
        return mean, np.maximum(m2 @ f - mean ** 2, 0.0), ok @ f

    def slope(self, h: float = 1e-3) -> float:
        """J = d ln E[pulses] / du at u = 0 (central difference)."""
        m = self.moments(np.array([-h, h]))[0]
        return float((math.log(m[1]) - math.log(m[0])) / (2 * h))


def pair_models(response: PulseResponse, df: Any, by: Sequence[str] = ("experiment", "target_level"),
                clip_steps: bool = True) -> dict[tuple, PairModel]:
    """A :class:`PairModel` per group ``by`` of a tidy write-verify table (see
    :func:`~analogmem.calibrate.write_verify.read_write_verify`); the budget of a row is its
    ``max_pulses`` when given, else its scheme's on the card. ISPP steps outside the card's
    are clipped to them with ``clip_steps`` (the data cannot say more), else refused."""

    lo, hi = window_columns_S(df)
    work = df.assign(c_lo=lo, c_hi=hi, c_mp=df.max_pulses.astype(float), c_st=df.step_V.astype(float))
    cols = ["c_lo", "c_hi", "prior_programs", "scheme", "c_st", "c_mp"]
    out = {}
    for key, g in work.groupby(list(by), sort=True):
        rows = g.groupby(cols, dropna=False, sort=True).size().reset_index(name="c_n")
        ws, ls, bs = [], [], []
        for r in rows.itertuples(index=False):
            sc = response.scheme(r.scheme)
            step = None if not np.isfinite(r.c_st) else float(r.c_st)
            if step is not None and clip_steps and sc.steps_V:
                step = float(np.clip(step, min(sc.steps_V), max(sc.steps_V)))
            w, p = response.class_probabilities(r.c_lo, r.c_hi, int(r.prior_programs), r.scheme, step, 0.0)
            p = np.clip(p[0], 1e-300, 1.0 - 1e-16)
            ws.append(w[0])
            ls.append(np.log(p) - np.log1p(-p))
            bs.append(r.c_mp if np.isfinite(r.c_mp) else float(sc.max_pulses))
        out[key if isinstance(key, tuple) else (key,)] = PairModel(
            np.array(ws), np.array(ls), np.array(bs), rows.c_n.to_numpy(dtype=np.float64))
    return out


def sampling_variance_log_mean(values: Any, clusters: Any) -> float:
    """Variance of ln(mean of ``values``) from its sampling over cells: the cluster
    (sandwich) variance of the mean, all programs of one cell (``clusters``) together, over
    the mean squared (delta method)."""
    v = np.asarray(values, dtype=np.float64)
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    inv = inv.reshape(-1)
    c = int(inv.max()) + 1 if inv.size else 0
    m = float(v.mean())
    if c < 2 or m <= 0:
        return math.inf
    resid = np.bincount(inv, weights=v - m, minlength=c)
    var_mean = float(resid @ resid) / v.size ** 2 * c / (c - 1)
    return var_mean / m ** 2


@dataclass
class RunVariation:
    """Between-run (``sd_between``) and within-run level-to-level (``sd_within``) standard
    deviations of a new run's shift of logit p, their uncertainty and how they were
    estimated. ``replicates``: (B, 2) bootstrap estimates (σ_b, σ_w) over runs."""

    sd_between: float
    sd_within: float
    stderr_log: tuple[float, float]
    replicates: np.ndarray
    n_runs: int
    n_pairs: int
    loglik: float
    offset: float = 0.0
    method: str = "marginal likelihood of held-out ln(data/prediction) per (run, level); bootstrap over runs"
    notes: list[str] = field(default_factory=list)

    def interval(self, which: str, level: float = 0.9) -> tuple[float, float]:
        """Bootstrap percentile interval of ``which`` ('between' or 'within'); without
        replicates, the Wald interval on ln σ from ``stderr_log``."""
        col = {"between": 0, "within": 1}[which]
        a = (1 - level) / 2
        if self.replicates.size == 0:
            from scipy.stats import norm

            sd, z = (self.sd_between, self.sd_within)[col], float(norm.ppf(1 - a)) * self.stderr_log[col]
            return (sd * math.exp(-z), sd * math.exp(z)) if math.isfinite(z) else (0.0, math.inf)
        return (float(np.quantile(self.replicates[:, col], a)), float(np.quantile(self.replicates[:, col], 1 - a)))

    def draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 2) values of (σ_b, σ_w) for predictions: the bootstrap replicates (their
        sampling distribution), or the estimate repeated when there are none."""
        if self.replicates.size == 0:
            return np.tile([self.sd_between, self.sd_within], (n, 1))
        return self.replicates[rng.integers(0, self.replicates.shape[0], size=n)]

    def card_table(self) -> dict[str, Any]:
        """The ``[write_verify.run_variation]`` table of a device card (intervals from all
        replicates; the first ``MAX_CARD_REPLICATES`` of them kept for predictions)."""
        lo_b, hi_b = self.interval("between")
        lo_w, hi_w = self.interval("within")
        return {"sd_between": self.sd_between, "sd_within": self.sd_within,
                "sd_between_interval90": [lo_b, hi_b], "sd_within_interval90": [lo_w, hi_w],
                "replicates_between": [float(v) for v in self.replicates[:MAX_CARD_REPLICATES, 0]],
                "replicates_within": [float(v) for v in self.replicates[:MAX_CARD_REPLICATES, 1]],
                "n_runs": self.n_runs, "n_pairs": self.n_pairs, "method": self.method}

    def summary(self) -> dict[str, Any]:
        t = self.card_table()
        t.pop("replicates_between")
        t.pop("replicates_within")
        return {**t, "stderr_log_sd": list(self.stderr_log), "loglik": self.loglik, "offset": self.offset,
                "notes": self.notes}


def _neg_loglik(log_sd: np.ndarray, blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], offset: float) -> float:
    sb2, sw2 = np.exp(2.0 * log_sd)
    total = 0.0
    for e, j, s2 in blocks:
        c = sb2 * np.outer(j, j) + np.diag(sw2 * j ** 2 + s2)
        sign, logdet = np.linalg.slogdet(c)
        r = e - offset
        total += 0.5 * (logdet + r @ np.linalg.solve(c, r) + e.size * math.log(2 * math.pi))
    return total


def _fit(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], offset: float,
         starts: Sequence[tuple[float, float]] = ((-1.5, -1.5), (-0.5, -2.5), (-2.5, -0.5))
         ) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    best = None
    for start in starts:
        res = minimize(_neg_loglik, np.array(start), args=(blocks, offset), method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    x = np.clip(best.x, math.log(1e-4), math.log(20.0))
    return x, float(best.fun)


def estimate_run_variation(residual_log: Any, slope: Any, sampling_var: Any, run: Any, n_boot: int = 400,
                           seed: SeedLike = 0, offset: float = 0.0) -> RunVariation:
    """Between- and within-run SDs of the logit shift from held-out residuals.

    Args:
        residual_log: per (run, level) pair, ln(data mean pulses / held-out prediction),
            shape (n,).
        slope: per pair, J = d ln E[pulses] / du (about −1: a higher hit probability, fewer
            pulses), shape (n,).
        sampling_var: per pair, the variance of the data's ln mean from its finite cells
            (:func:`sampling_variance_log_mean`), shape (n,).
        run: per pair, its run (hashable), shape (n,).
        n_boot: bootstrap replicates over runs (0: none).
        seed: seed of the bootstrap.
        offset: a known mean of the residuals (0: predictions unbiased for a new run).

    Raises :class:`~analogmem.errors.CalibrationError` for fewer than 3 runs, mismatched
    lengths or non-finite inputs.
    """
    e, j, s2 = (np.asarray(v, dtype=np.float64) for v in (residual_log, slope, sampling_var))
    runs = np.asarray(run)
    if not (e.shape == j.shape == s2.shape == runs.shape) or e.ndim != 1:
        raise CalibrationError(f"residual_log, slope, sampling_var and run must be 1-D of one length, got "
                               f"{e.shape}, {j.shape}, {s2.shape}, {runs.shape}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(j)) and np.all(np.isfinite(s2)) and np.all(s2 >= 0)):
        raise CalibrationError("residual_log, slope and sampling_var must be finite (sampling_var >= 0): drop "
                               "pairs without a prediction or with a single cell first")
    names = sorted(set(runs.tolist()), key=str)
    if len(names) < 3:
        raise CalibrationError(f"need held-out residuals of at least 3 runs to separate between- and within-run "
                               f"variation, got {len(names)}")
    blocks = [(e[runs == r], j[runs == r], s2[runs == r]) for r in names]
    x, nll = _fit(blocks, offset)
    # standard errors of ln σ from the numerical Hessian of the negative log-likelihood
    h = 1e-3
    H = np.zeros((2, 2))
    for a in range(2):
        for b in range(2):
            def f(da: float, db: float) -> float:
                d = np.zeros(2)
                d[a] += da
                d[b] += db
                return _neg_loglik(x + d, blocks, offset)
            H[a, b] = (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4 * h * h)
    try:
        se = np.sqrt(np.maximum(np.diag(np.linalg.inv(H)), 0.0))
    except np.linalg.LinAlgError:
        se = np.full(2, np.nan)
    rng = as_generator(seed)
    reps = []
    for _ in range(int(n_boot)):
        pick = rng.integers(0, len(blocks), size=len(blocks))
        xb, _ = _fit([blocks[i] for i in pick], offset, starts=(tuple(x), (-1.5, -1.5)))
        reps.append(np.exp(xb))
    return RunVariation(sd_between=float(math.exp(x[0])), sd_within=float(math.exp(x[1])),
                        stderr_log=(float(se[0]), float(se[1])),
                        replicates=np.array(reps).reshape(-1, 2), n_runs=len(names), n_pairs=int(e.size),
                        loglik=-nll, offset=offset)


def _gamma_mean(rng: np.random.Generator, mean: np.ndarray, var_mean: np.ndarray) -> np.ndarray:
    """A draw of an empirical mean with this expectation and variance (a gamma law: positive,
    right-skewed like a mean of heavy-tailed counts)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(var_mean > 0, mean ** 2 / var_mean, np.inf)
        scale = np.where(var_mean > 0, var_mean / np.maximum(mean, 1e-300), 0.0)
    finite = np.isfinite(shape) & (shape < 1e12) & (mean > 0)
    out = np.array(mean, dtype=np.float64, copy=True)
    out[finite] = rng.gamma(shape[finite], scale[finite])
    return out


def prediction_intervals(model: PairModel | Sequence[PairModel], variation: RunVariation | None,
                         n_cells: int | None = None,
                         levels: Sequence[float] = INTERVAL_LEVELS, n_draws: int = 4000, seed: SeedLike = 0,
                         shared_between: float | None = None) -> dict[str, Any]:
    """Predictive distribution of a pair's EMPIRICAL mean pulses and success rate over
    ``n_cells`` programs (default: the pair's own count) in a new run, by Monte Carlo:
    (σ_b, σ_w) from ``variation``'s bootstrap replicates, ``u = b + w`` drawn from them (or
    ``b = shared_between`` given, e.g. the run's estimated effect), the mean of ``n_cells``
    programs from a gamma law with the model's mean and variance at ``u``, the success
    count binomial. ``variation`` None: no run-to-run variation (only the finite cells).
    ``model`` may be a sequence: the pair under draws of the fit's parameters (the first the
    estimate), each Monte-Carlo draw then takes one at random (parameter uncertainty).

    Returns ``{"n_cells", "pulses_mean": {"median", "expected", "interval50": [lo, hi], …},
    "success_rate": {…}}`` (intervals central, at ``levels``)."""
    rng = as_generator(seed)
    models = [model] if isinstance(model, PairModel) else list(model)
    model = models[0]
    n = model.n if n_cells is None else int(n_cells)
    if n < 1:
        raise CalibrationError(f"n_cells must be >= 1, got {n_cells!r}")
    if variation is None:
        u = np.zeros(n_draws)
    else:
        sd = variation.draws(n_draws, rng)
        b = (sd[:, 0] * rng.standard_normal(n_draws)) if shared_between is None else np.full(n_draws, shared_between)
        u = b + sd[:, 1] * rng.standard_normal(n_draws)
    pick = rng.integers(0, len(models), size=n_draws) if len(models) > 1 else np.zeros(n_draws, dtype=int)
    mean, var, ok = np.empty(n_draws), np.empty(n_draws), np.empty(n_draws)
    for i, m in enumerate(models):
        sel = pick == i
        if sel.any():
            mean[sel], var[sel], ok[sel] = m.moments(u[sel])
    emp = _gamma_mean(rng, mean, var / n)
    succ = rng.binomial(n, np.clip(ok, 0.0, 1.0)) / n
    out: dict[str, Any] = {"n_cells": n}
    for name, v, centre in (("pulses_mean", emp, model.moments(np.zeros(1))[0][0]),
                            ("success_rate", succ, model.moments(np.zeros(1))[2][0])):
        d = {"median": float(np.median(v)), "expected": float(np.mean(v)), "at_population_centre": float(centre)}
        for lv in levels:
            a = (1.0 - lv) / 2.0
            d[f"interval{round(100 * lv)}"] = [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))]
        out[name] = d
    return out


def program_rows(response: PulseResponse, df: Any, clip_steps: bool = True) -> PairModel:
    """A :class:`PairModel` with one row per program of a tidy table (row order kept): the
    observed programs of :func:`few_cell_update`."""
    df = df.assign(_row=np.arange(len(df)))
    models = pair_models(response, df, by=("_row",), clip_steps=clip_steps)
    rows = [models[(i,)] for i in range(len(df))]
    return PairModel(np.concatenate([m.weights for m in rows]), np.concatenate([m.logit_p for m in rows]),
                     np.concatenate([m.budget for m in rows]), np.ones(len(rows)))


def _log_lik_grid(obs: PairModel, pulses: np.ndarray, success: np.ndarray, ugrid: np.ndarray) -> np.ndarray:
    """ln P(observed programs | u) on ``ugrid`` (geometric mixture, failures censored)."""
    lp = obs.logit_p[None, :, :] + ugrid[:, None, None]           # (U, n, K)
    log_p, log_q = -np.logaddexp(0.0, -lp), -np.logaddexp(0.0, lp)
    x = np.asarray(pulses, dtype=np.float64)[None, :, None]
    ok = np.asarray(success, dtype=bool)[None, :, None]
    t = np.log(np.maximum(obs.weights[None], 1e-300)) + np.where(ok, log_p + x * log_q, (x + 1.0) * log_q)
    mx = t.max(axis=2, keepdims=True)
    return (mx[..., 0] + np.log(np.exp(t - mx).sum(axis=2))).sum(axis=1)


def few_cell_update(models: dict[Any, PairModel], observed: dict[Any, tuple[PairModel, Any, Any]],
                    variation: RunVariation, grid: int = 81) -> dict[str, Any]:
    """Posterior of a new run's effects given its first programs, by quadrature, and the
    prediction of its other programs.

    ``models``: level → :class:`PairModel` of the programs to predict; ``observed``: level →
    (:func:`program_rows` of the observed programs, their pulses, their success). With
    ``b ~ N(0, σ_b²)``, ``w_L ~ N(0, σ_w²)`` (σ at the estimate) and the observed programs'
    likelihood at ``u = b + w_L``, returns the posterior mean and SD of ``b`` and per level
    of ``models`` the posterior mean of the mean pulses and of the success rate (levels
    without observed programs learn ``b`` only)."""
    sb, sw = max(variation.sd_between, 1e-6), max(variation.sd_within, 1e-6)
    bgrid = np.linspace(-5.0 * sb, 5.0 * sb, grid)
    wgrid = np.linspace(-5.0 * sw, 5.0 * sw, grid)
    log_pb = -0.5 * (bgrid / sb) ** 2
    log_pw = -0.5 * (wgrid / sw) ** 2
    log_pw -= math.log(np.exp(log_pw).sum())
    uu = bgrid[:, None] + wgrid[None, :]                                 # (B, W)
    total = log_pb.copy()
    cond = {}
    for level in set(models) | set(observed):
        if level in observed:
            obs, x, ok = observed[level]
            ugrid = np.linspace(uu.min(), uu.max(), 4 * grid + 1)
            llw = np.interp(uu, ugrid, _log_lik_grid(obs, np.asarray(x), np.asarray(ok), ugrid)) + log_pw[None, :]
        else:
            llw = np.broadcast_to(log_pw[None, :], uu.shape)
        mx = llw.max(axis=1, keepdims=True)
        marg = mx[:, 0] + np.log(np.exp(llw - mx).sum(axis=1))          # ln ∫ N(w) L_L(b + w) dw
        cond[level] = np.exp(llw - marg[:, None])                        # p(w | b, data_L), (B, W)
        total = total + marg
    post_b = np.exp(total - total.max())
    post_b /= post_b.sum()
    mean_b = float(post_b @ bgrid)
    out: dict[str, Any] = {"b_mean": mean_b, "b_sd": float(math.sqrt(max(post_b @ bgrid ** 2 - mean_b ** 2, 0.0))),
                           "levels": {}}
    for level, m in models.items():
        joint = (cond[level] * post_b[:, None]).ravel()
        mean, _, ok = m.moments(uu.ravel())
        out["levels"][level] = {"pulses_mean": float(mean @ joint), "success_rate": float(ok @ joint)}
    return out


def window_support(df: Any, g_ref_S: float) -> dict[str, Any]:
    """The ``[write_verify.support]`` table of a fit to the tidy table ``df``: per window
    kind the [min, max] of the covariates ``position`` (and ``ln_width`` for two-sided
    windows) over the fitted windows, and the most prior programs (see
    :meth:`~analogmem.emulator.pulse_response.PulseResponse.support_issues`)."""
    from ..emulator.pulse_response import pulse_covariates

    lo, hi = window_columns_S(df)
    x = pulse_covariates(lo, hi, df.prior_programs.to_numpy(), np.nan, g_ref_S)
    above, below = np.isinf(hi), lo <= 0
    out: dict[str, Any] = {}
    for kind, sel in (("two_sided", ~above & ~below), ("open_above", above), ("open_below", below)):
        if sel.any():
            out[kind] = {"position": [float(x["position"][sel].min()), float(x["position"][sel].max())]}
            if kind == "two_sided":
                out[kind]["ln_width"] = [float(x["ln_width"][sel].min()), float(x["ln_width"][sel].max())]
    out["max_prior_programs"] = int(df.prior_programs.max())
    return out


def card_variation(response: PulseResponse) -> tuple[RunVariation | None, str]:
    """The run variation a card's predictions use, and where it comes from: the card's
    ``[write_verify.run_variation]`` (held-out estimate, with its bootstrap replicates); else
    the fit's joint-mode ``run_sd`` as the between-run SD (which held-out runs show to be
    too small: scripts/cards/README.md); else none (a one-run fit: only the cells' sampling)."""
    if response.run_sd_between > 0 or response.run_sd_within > 0:
        reps = np.array(response.run_sd_replicates, dtype=np.float64).reshape(-1, 2)
        return (RunVariation(response.run_sd_between, response.run_sd_within, (math.nan, math.nan), reps,
                             int(response.run_variation_table.get("n_runs", 0)),
                             int(response.run_variation_table.get("n_pairs", 0)), math.nan),
                "card run_variation (held-out estimate, bootstrap over runs)")
    if response.run_sd > 0:
        return (RunVariation(response.run_sd, 0.0, (math.nan, math.nan), np.zeros((0, 2)), 0, 0, math.nan),
                "the fit's joint-mode run_sd only (no held-out estimate: intervals too narrow for a new run)")
    return None, ("none (one run: run-to-run variation not estimable; intervals cover the cells' sampling and, "
                  "with parameter draws, the fit's parameters)")


def predict_levels(response: PulseResponse, windows: Any = None, n_cells: int = 100, prior_programs: int = 0,
                   scheme: str | None = None, step_V: float | None = None, max_pulses: int | None = None,
                   levels: Sequence[float] = INTERVAL_LEVELS, n_draws: int = 4000, seed: SeedLike = 0,
                   parameter_draws: Sequence[PulseResponse] = ()) -> list[dict[str, Any]]:
    """Prediction intervals of a NEW run's mean pulses and success rate per verify window.

    Args:
        response: a shared card model (``device.write_verify``).
        windows: (lo_S, hi_S) pairs (None: the card's levels).
        n_cells: programs per window in the run (the finite-cell part of the interval).
        prior_programs, scheme, step_V: the start state and pulse scheme.
        max_pulses: the budget (None: the scheme's).
        levels: central interval probabilities.
        parameter_draws: the model under draws of the fit's parameters from their
            covariance (:meth:`~analogmem.calibrate.pulse_response.PulseResponseFit.parameter_draws`);
            empty: the parameters as estimated.

    Returns one dict per window: ``window_lo_S``, ``window_hi_S``, ``pulses_mean`` and
    ``success_rate`` (median, expected, at_population_centre, interval50/80/95 as
    ``[lo, hi]``), ``warnings`` (the window outside the fit's support, by
    :meth:`~analogmem.emulator.pulse_response.PulseResponse.support_issues`) and
    ``run_variation`` (where the run-to-run part comes from). The interval combines the
    run effect (between- and within-run), the uncertainty of its SDs (bootstrap
    replicates), the finite number of cells and, with ``parameter_draws``, the fit's
    parameter uncertainty (a card's held-out SDs already include that of a fit without
    the run: the residuals they come from are such a fit's errors).
    """
    if not response.shared:
        raise CalibrationError("prediction intervals need a shared-geometric-mixture write-verify card")
    wins = (list(zip(response.window_lo_S, response.window_hi_S)) if windows is None
            else [(float(a), float(b)) for a, b in windows])
    lo = np.array([w[0] for w in wins])
    hi = np.array([w[1] for w in wins])
    budget = float(response.scheme(scheme).max_pulses if max_pulses is None else max_pulses)
    per_response = []
    for r in (response, *parameter_draws):
        w, p = r.class_probabilities(lo, hi, prior_programs, scheme, step_V, 0.0)
        p = np.clip(p, 1e-300, 1.0 - 1e-16)
        per_response.append((w, np.log(p) - np.log1p(-p)))
    variation, source = card_variation(response)
    issues = response.support_issues(lo, hi, prior_programs)
    out = []
    for j, (a, b) in enumerate(wins):
        m = [PairModel(w[j:j + 1], lg[j:j + 1], np.array([budget]), np.array([1.0])) for w, lg in per_response]
        iv = prediction_intervals(m, variation, n_cells=n_cells, levels=levels, n_draws=n_draws, seed=seed)
        name = f"window [{a:.6g}, {b:.6g}] S"
        out.append({"window_lo_S": a, "window_hi_S": b, **iv, "run_variation": source,
                    "parameter_draws": len(parameter_draws),
                    "warnings": [s for s in issues if s.startswith(name)]})
    return out


def adapt_to_run(response: PulseResponse, seen: Any, windows: Any = None, prior_programs: int = 0,
                 scheme: str | None = None, step_V: float | None = None) -> dict[str, Any]:
    """Few-cell calibration of a new run: its first programs ``seen`` (a tidy write-verify
    table, see :func:`~analogmem.calibrate.write_verify.read_write_verify`) update the run's
    effect; returns :func:`few_cell_update`'s posterior and, per window of ``windows``
    (default: the card's levels; programs of the given start state and scheme), the
    predicted mean pulses and success, plus ``run_effect``: the posterior mean of the
    between-run shift in units of the card's ``run_sd``, for
    ``WriteVerify.card(run_effect=...)`` (emulating the adapted run; its per-window parts
    are in the per-window predictions only). Needs a card with a run variation."""
    from .write_verify import read_write_verify

    variation, _ = card_variation(response)
    if variation is None or response.run_sd_between <= 0:
        raise CalibrationError("few-cell calibration needs the card's [write_verify.run_variation] (between- and "
                               "within-run SDs from held-out runs: scripts/cards/run_variation.py)")
    df = read_write_verify(seen, min_cells_per_level=1)
    lo_c, hi_c = window_columns_S(df)
    wins = (list(zip(response.window_lo_S, response.window_hi_S)) if windows is None
            else [(float(a), float(b)) for a, b in windows])
    budget = float(response.scheme(scheme).max_pulses)
    models, observed = {}, {}
    for j, (a, b) in enumerate(wins):
        w, p = response.class_probabilities(a, b, prior_programs, scheme, step_V, 0.0)
        p = np.clip(p, 1e-300, 1.0 - 1e-16)
        models[j] = PairModel(w, np.log(p) - np.log1p(-p), np.array([budget]), np.array([1.0]))
        same_hi = (np.isinf(hi_c) & math.isinf(b)) | np.isclose(hi_c, b, rtol=1e-9)
        sel = np.isclose(lo_c, a, rtol=1e-9, atol=0.0) & same_hi
        if sel.any():
            g = df[sel]
            observed[j] = (program_rows(response, g), g.pulses.to_numpy(), g.success.to_numpy())
    unmatched = len(df) - sum(len(o[1]) for o in observed.values())
    post = few_cell_update(models, observed, variation)
    post["run_effect"] = post["b_mean"] / response.run_sd if response.run_sd > 0 else 0.0
    post["programs_used"] = len(df) - unmatched
    post["programs_in_no_window"] = unmatched
    return post
