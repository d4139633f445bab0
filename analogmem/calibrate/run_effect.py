"""Run-to-run variation of write-verify as a predictive distribution (issue #28).

The shared pulse-response model (:mod:`analogmem.calibrate.pulse_response`) fits one run
effect ``τ·r`` on logit p by the joint mode of (parameters, run effects); held out one run
at a time its errors are far larger than τ implies (calibration/README.md). This module
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

__all__ = ["RunVariation", "PairModel", "pair_models", "estimate_run_variation", "prediction_intervals",
           "sampling_variance_log_mean", "truncated_moments", "few_cell_update", "INTERVAL_LEVELS"]

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
    from .pulse_response import window_columns_S

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
        """The ``[write_verify.run_variation]`` table of a device card."""
        lo_b, hi_b = self.interval("between")
        lo_w, hi_w = self.interval("within")
        return {"sd_between": self.sd_between, "sd_within": self.sd_within,
                "sd_between_interval90": [lo_b, hi_b], "sd_within_interval90": [lo_w, hi_w],
                "replicates_between": [float(v) for v in self.replicates[:, 0]],
                "replicates_within": [float(v) for v in self.replicates[:, 1]],
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
         starts: Sequence[tuple[float, float]] = ((-1.5, -1.5), (-0.5, -2.5), (-2.5, -0.5))) -> tuple[np.ndarray, float]:
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


def prediction_intervals(model: PairModel, variation: RunVariation | None, n_cells: int | None = None,
                         levels: Sequence[float] = INTERVAL_LEVELS, n_draws: int = 4000, seed: SeedLike = 0,
                         shared_between: float | None = None) -> dict[str, Any]:
    """Predictive distribution of a pair's EMPIRICAL mean pulses and success rate over
    ``n_cells`` programs (default: the pair's own count) in a new run, by Monte Carlo:
    (σ_b, σ_w) from ``variation``'s bootstrap replicates, ``u = b + w`` drawn from them (or
    ``b = shared_between`` given, e.g. the run's estimated effect), the mean of ``n_cells``
    programs from a gamma law with the model's mean and variance at ``u``, the success
    count binomial. ``variation`` None: no run-to-run variation (only the finite cells).

    Returns ``{"n_cells", "pulses_mean": {"median", "expected", "interval50": [lo, hi], …},
    "success_rate": {…}}`` (intervals central, at ``levels``)."""
    rng = as_generator(seed)
    n = model.n if n_cells is None else int(n_cells)
    if n < 1:
        raise CalibrationError(f"n_cells must be >= 1, got {n_cells!r}")
    if variation is None:
        u = np.zeros(n_draws)
    else:
        sd = variation.draws(n_draws, rng)
        b = (sd[:, 0] * rng.standard_normal(n_draws)) if shared_between is None else np.full(n_draws, shared_between)
        u = b + sd[:, 1] * rng.standard_normal(n_draws)
    mean, var, ok = model.moments(u)
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


def few_cell_update(models: dict[Any, PairModel], cells: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    variation: RunVariation, grid: int = 121) -> dict[str, Any]:
    """Posterior of a new run's effects given its first cells, by quadrature.

    ``models``: the run's pairs (level → :class:`PairModel` of the REMAINING programs to
    predict); ``cells``: level → (pulses, success, row index into that level's model rows)
    of the observed programs. With ``b ~ N(0, σ_b²)``, ``w_L ~ N(0, σ_w²)`` (σ at the
    estimate) and the observed programs' geometric-mixture likelihood at ``u = b + w_L``,
    returns per level the posterior mean of the remaining programs' mean pulses and
    success, and the posterior mean and SD of ``b``."""
    sb, sw = variation.sd_between, variation.sd_within
    span = 5.0 * math.hypot(sb, sw)
    ugrid = np.linspace(-span, span, 2 * grid + 1)
    bgrid = np.linspace(-5.0 * sb, 5.0 * sb, grid)
    log_pb = -0.5 * (bgrid / sb) ** 2
    # per level: log L_L(u) on ugrid, then log ∫ N(w) L_L(b + w) dw on bgrid
    wgrid = np.linspace(-5.0 * sw, 5.0 * sw, grid)
    log_pw = -0.5 * (wgrid / sw) ** 2
    log_pw -= np.log(np.exp(log_pw).sum())
    per_level = {}
    total = log_pb.copy()
    for level, m in models.items():
        if level in cells:
            x, s, row = (np.asarray(v) for v in cells[level])
            ll = np.zeros(ugrid.size)
            lp = m.logit_p[row][None, :, :] + ugrid[:, None, None]    # (U, n, K)
            log_p = -np.logaddexp(0.0, -lp)
            log_q = -np.logaddexp(0.0, lp)
            xx = x[None, :, None].astype(np.float64)
            lf = np.where(s[None, :, None].astype(bool), log_p + xx * log_q, (xx + 1.0) * log_q)
            t = np.log(np.maximum(m.weights[row][None], 1e-300)) + lf
            mx = t.max(axis=2, keepdims=True)
            ll = (mx[..., 0] + np.log(np.exp(t - mx).sum(axis=2))).sum(axis=1)
        else:
            ll = np.zeros(ugrid.size)
        uu = bgrid[:, None] + wgrid[None, :]                         # (B, W)
        llw = np.interp(uu, ugrid, ll) + log_pw[None, :]
        mx = llw.max(axis=1, keepdims=True)
        marg = mx[:, 0] + np.log(np.exp(llw - mx).sum(axis=1))        # (B,)
        per_level[level] = (uu, llw, marg)
        total = total + marg
    post_b = np.exp(total - total.max())
    post_b /= post_b.sum()
    out: dict[str, Any] = {"b_mean": float(post_b @ bgrid),
                           "b_sd": float(math.sqrt(max(post_b @ bgrid ** 2 - (post_b @ bgrid) ** 2, 0.0))),
                           "levels": {}}
    for level, m in models.items():
        uu, llw, marg = per_level[level]
        # joint posterior of (b, w_L) ∝ post_b(b) · N(w) L_L(b+w) / marg_L(b)
        jw = np.exp(llw - marg[:, None]) * post_b[:, None]
        mean, _, ok = m.moments(uu.ravel())
        out["levels"][level] = {"pulses_mean": float(mean @ jw.ravel()), "success_rate": float(ok @ jw.ravel())}
    return out
