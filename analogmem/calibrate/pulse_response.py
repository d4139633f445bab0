"""Fitting the shared pulse-response model of program-and-verify (scripts/cards/README.md, "rram-radar").

One set of physical parameters for every verify window, start state, pulse scheme and run
(:mod:`analogmem.emulator.pulse_response` states the model): the pulses a programming
operation needs are a mixture of K geometric laws on {0, 1, …} whose per-pulse hit
probabilities move with the window (position, relative width, one-sided windows), the start
state (first program or re-program, and how many re-programs) and the scheme (ISPP step,
a shift per scheme), on the logit scale; the class weights move with the start state, the
one-sided windows and the scheme; and a run-level random effect ``τ·r``, ``r ~ N(0, 1)``
shared by all operations of one run (experiment), captures what differs between runs of
the same chip.

The fit maximises the likelihood with failed operations right-censored (``X > pulses``, as
:func:`~analogmem.calibrate.write_verify.fit_geometric_mixture`) jointly over the parameters
and each run's effect ``u_e ~ N(0, τ²)`` — the Laplace approximation of the marginal
likelihood without its log-determinant term (the h-likelihood of Lee & Nelder), exact in
the limit of many operations per run; the shared data have 278–23,593 per run, whose
effects are then known to ±0.02–0.05 on logit p against τ = 0.11 fitted there — by L-BFGS with the
analytic gradient. The effects carry a weak N(0, ``prior_sd``²) penalty (maximum a
posteriori): it keeps a class weight the data push to 0 finite and moves nothing the data
determine. Standard errors come from the numerical Hessian of the joint objective (the
parameters' block of its inverse, so they include the runs' uncertainty). Covariates that
do not vary in the data, or that the scheme indicators already explain (an ISPP step seen
at one value only), are left out (coefficient 0) and reported as such. Predictions for a
new run integrate its effect over N(0, τ²) by Gauss–Hermite quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._io import save_figure
from ..emulator.pulse_response import (P_EFFECTS, SCHEME_TERMS, WEIGHT_EFFECTS, PulseResponse, PulseScheme,
                                       pulse_covariates)
from ..errors import CalibrationError
from .run_effect import predict_levels, window_support
from .write_verify import overlapping_windows, read_write_verify, window_columns_S, write_verify_card

__all__ = ["PulseResponseFit", "fit_pulse_response", "window_columns_S", "expected_pulses", "response_table",
           "stationarity"]

_INIT_P = {1: (0.05,), 2: (0.5, 0.02), 3: (0.95, 0.15, 0.01), 4: (0.95, 0.3, 0.05, 0.005)}

#: Draws of the fitted parameters behind the fit report's prediction intervals.
PARAMETER_DRAWS = 50
#: A card's input range reaches this many times the edge of its window open above.
OPEN_RANGE_FACTOR = 2.0
#: With no failed operation and no ``max_pulses`` column, a scheme's budget is this many
#: times the most pulses any operation took (the data show only that it is larger).
NO_FAILURE_BUDGET_FACTOR = 10


def expected_pulses(weights: np.ndarray, p: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[min(X, B)] and P(X ≤ B) of a geometric mixture ``X ~ Σ_k w_k Geometric₀(p_k)``.

    ``weights``, ``p``: shape (..., K); ``budget``: shape (...), inf for none."""
    b = np.asarray(budget, dtype=np.float64)[..., None]
    q = 1.0 - p
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        tail_b = np.where(np.isinf(b), 0.0, q ** np.where(np.isinf(b), 0.0, b))
        mean = q * (1.0 - tail_b) / p
        ok = 1.0 - np.where(np.isinf(b), 0.0, q ** np.where(np.isinf(b), 0.0, b + 1.0))
    return (weights * mean).sum(axis=-1), (weights * ok).sum(axis=-1)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _covariates(df: Any, g_ref_S: float, schemes: list[str]) -> dict[str, np.ndarray]:
    """Every candidate covariate of a tidy table's rows: :func:`pulse_covariates` and, per
    scheme after the first (the reference), its indicator ``scheme:NAME`` and the indicator
    times each one-sided window, ``scheme:NAME:open_above`` / ``:open_below``."""
    lo, hi = window_columns_S(df)
    cov = pulse_covariates(lo, hi, df.prior_programs.to_numpy(), df.step_V.to_numpy(), g_ref_S)
    for s in schemes[1:]:
        on = (df.scheme.to_numpy() == s).astype(float)
        for term in SCHEME_TERMS:
            cov[_scheme_key(s, term)] = on * (cov[term] if term else 1.0)
    return cov


def _scheme_key(scheme: str, term: str) -> str:
    return f"scheme:{scheme}" + (f":{term}" if term else "")


class _Design:
    """The fit's data, compressed to distinct rows (run, covariates, pulses, censored) with counts."""

    def __init__(self, df: Any, g_ref_S: float, schemes: list[str], x_names: list[str], z_names: list[str]):
        cov = _covariates(df, g_ref_S, schemes)
        X = np.column_stack([cov[n] for n in x_names]) if x_names else np.zeros((len(df), 0))
        Z = np.column_stack([cov[n] for n in z_names]) if z_names else np.zeros((len(df), 0))
        runs = sorted(df.experiment.unique())
        run = np.searchsorted(runs, df.experiment.to_numpy())
        x = df.pulses.to_numpy(dtype=float)
        cens = ~df.success.to_numpy(dtype=bool)
        key = np.column_stack([run, X, Z, x, cens])
        uniq, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
        self.count = np.bincount(inv.reshape(-1), minlength=len(uniq)).astype(float)
        self.X, self.Z, self.x, self.cens, self.run = X[first], Z[first], x[first], cens[first], run[first]
        self.n_runs = len(runs)
        self.runs = runs


def _select(candidates: dict[str, np.ndarray], order: list[str]) -> tuple[list[str], list[str]]:
    """Columns kept (linearly independent of those before them and of the intercept), and dropped."""
    kept, dropped = [], []
    base = [np.ones_like(next(iter(candidates.values())))] if candidates else []
    for name in order:
        col = candidates[name]
        trial = np.column_stack(base + [candidates[k] for k in kept] + [col])
        scale = np.maximum(np.abs(trial).max(axis=0), 1e-300)
        if np.linalg.matrix_rank(trial / scale, tol=1e-8) == trial.shape[1]:
            kept.append(name)
        else:
            dropped.append(name)
    return kept, dropped


@dataclass
class PulseResponseFit:
    """Result of :func:`fit_pulse_response`: the fitted shared model, its standard errors,
    the runs' estimated effects and a per-(run, level) report of data vs model."""

    classes: int
    g_ref_S: float
    range_S: tuple[float, float]
    window_lo_S: list[float]
    window_hi_S: list[float]
    x_names: list[str]
    z_names: list[str]
    schemes: list[str]
    theta: np.ndarray
    stderr: np.ndarray
    loglik: float
    n: int
    runs: list[str]
    run_effects: list[float]
    scheme_budgets: dict[str, int]
    scheme_steps: dict[str, list[float]]
    probabilities: list[float]
    final_quantiles: dict[str, tuple[list[float], list[float], list[float]]]
    dropped: list[str]
    prior_sd: float
    report: list[dict[str, Any]] = field(default_factory=list)
    run_effect_sd: list[float] = field(default_factory=list)
    covariance: np.ndarray | None = None
    budget_sources: dict[str, str] = field(default_factory=dict)
    support: dict[str, Any] = field(default_factory=dict)
    intervals: list[dict[str, Any]] = field(default_factory=list)

    # ---- parameter vector layout: alpha (K), beta (X), gamma (K-1), delta ((K-1) x Z), log tau
    def _split(self, theta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        return _unpack(self.theta if theta is None else theta, self.classes, len(self.x_names), len(self.z_names))

    @property
    def run_sd(self) -> float:
        """τ: standard deviation of the run effect on logit p."""
        return float(math.exp(self._split()[4]))

    @property
    def parameters(self) -> dict[str, tuple[float, float]]:
        """Name → (estimate, standard error); τ is reported as ``log_run_sd``."""
        names = _param_names(self.classes, self.x_names, self.z_names)
        return {n: (float(v), float(s)) for n, v, s in zip(names, self.theta, self.stderr)}

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + self.theta.size * math.log(self.n)

    def response(self) -> PulseResponse:
        """The fitted model as the emulator's :class:`~analogmem.emulator.pulse_response.PulseResponse`."""
        a, b, g, D, _ = self._split()
        beta = dict(zip(self.x_names, b.tolist()))
        p_effects = {n: beta[n] for n in P_EFFECTS if n in beta}
        delta = {n: tuple(D[:, j].tolist()) for j, n in enumerate(self.z_names)}
        weight_effects = {n: delta[n] for n in WEIGHT_EFFECTS if n in delta}
        schemes = []
        for s in self.schemes:
            shifts = {}
            for term, (p_field, w_field) in SCHEME_TERMS.items():
                key = _scheme_key(s, term)
                shifts[p_field] = float(beta.get(key, 0.0))
                shifts[w_field] = tuple(delta[key]) if key in delta else ()
            pos, above, below = self.final_quantiles[s]
            schemes.append(PulseScheme(s, self.scheme_budgets[s], steps_V=tuple(self.scheme_steps[s]),
                                       position_quantiles=tuple(pos), open_above_log_quantiles=tuple(above),
                                       open_below_log_quantiles=tuple(below), **shifts))
        return PulseResponse("shared-geometric-mixture", window_lo_S=tuple(self.window_lo_S),
                             window_hi_S=tuple(self.window_hi_S), max_pulses=schemes[0].max_pulses,
                             probabilities=tuple(self.probabilities), range_S=self.range_S, g_ref_S=self.g_ref_S,
                             class_logit_p=tuple(a.tolist()), class_logit_weight=(0.0,) + tuple(g.tolist()),
                             p_effects=p_effects, weight_effects=weight_effects, run_sd=self.run_sd,
                             schemes=tuple(schemes), support=dict(self.support))

    def parameter_draws(self, n: int = PARAMETER_DRAWS, seed: int = 0) -> list[PulseResponse]:
        """The model under ``n`` draws of its parameters from N(θ̂, covariance) (the
        prediction intervals' parameter uncertainty); empty without a finite covariance
        (``stderr=False``, or a singular Hessian). The run SD is kept at its estimate."""
        if self.covariance is None:
            return []
        k = self.theta.size - 1  # log τ is not drawn
        cov = np.asarray(self.covariance, dtype=np.float64)[:k, :k]
        if not np.all(np.isfinite(cov)):
            return []
        try:
            chol = np.linalg.cholesky(0.5 * (cov + cov.T))
        except np.linalg.LinAlgError:
            return []
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(int(n)):
            th = self.theta.copy()
            th[:k] = th[:k] + chol @ rng.standard_normal(k)
            out.append(replace(self, theta=th).response())
        return out

    def card_table(self) -> dict[str, Any]:
        """The ``[write_verify]`` table of a device card."""
        return response_table(self.response())

    def fit_summary(self) -> dict[str, Any]:
        """Parameters with standard errors, log-likelihood, BIC, the runs' effects (in units
        of τ), what was left out, the covariance of the parameters and the per-(run, level)
        report (non-finite numbers as strings, so TOML and JSON writers take it)."""
        return _toml_safe({"model": "shared-geometric-mixture", "classes": self.classes, "n_operations": self.n,
                "loglik": self.loglik, "bic": self.bic, "run_sd": self.run_sd, "prior_sd": self.prior_sd,
                "parameters": {k: {"estimate": v, "stderr": s} for k, (v, s) in self.parameters.items()},
                "run_effects": dict(zip(self.runs, self.run_effects)), "left_out": self.dropped,
                "scheme_budgets": dict(self.scheme_budgets), "scheme_budget_sources": dict(self.budget_sources),
                "support": dict(self.support), "prediction_intervals": self.intervals,
                "covariance": [] if self.covariance is None else self.covariance.tolist(),
                "report": self.report})

    def card(self, name: str, source: str, verified_std_S: float | None = None) -> dict[str, Any]:
        """A device card (dict for ``tomli_w``) with this pulse-response model: input
        conductance (S), ``g_max_S`` just above the largest verified conductance of the
        card's levels, programming noise σ_P = ``verified_std_S`` (default: the median
        spread of verified cells per level; a write without verify is not in such data)."""
        q = np.asarray(self.response().log_g_quantiles)
        sigma_p = float(np.median([r["verified_g_std_S"] for r in self.report if np.isfinite(r["verified_g_std_S"])])
                        if verified_std_S is None else verified_std_S)
        card = write_verify_card(name, source, "shared write-verify pulse-response model fitted by "
                                 "analogmem.calibrate.pulse_response", q, sigma_p, self.card_table(),
                                 self.fit_summary())
        # a target anywhere in a window open above programs that window: the input range
        # reaches OPEN_RANGE_FACTOR x its edge, not just the largest verified value
        open_lo = [lo for lo, hi in zip(self.window_lo_S, self.window_hi_S) if math.isinf(hi)]
        if open_lo:
            card["range"]["g_max_S"] = max(card["range"]["g_max_S"],
                                           math.ceil(OPEN_RANGE_FACTOR * max(open_lo) * 1e6) * 1e-6)
        return card

    def predict(self, data: Any, run_effect: float | None = None, quadrature: int = 21,
                clip_steps: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per row of a tidy table: expected pulses E[min(T, budget)] and P(success).

        ``run_effect`` None integrates the run effect over its N(0, τ²) distribution (what a
        new run is expected to do); a number fixes it (in units of τ). The budget of a row
        is its ``max_pulses`` when given, else its scheme's. Rows of a scheme the fit did
        not see are refused, as are ISPP steps outside the fitted ones unless
        ``clip_steps`` (then such a row is predicted at the nearest fitted step: the data
        cannot say more)."""
        df = read_write_verify(data, min_cells_per_level=1)
        unknown = sorted(set(df.scheme) - set(self.schemes))
        if unknown:
            raise CalibrationError(f"scheme(s) {unknown} are not in the fit (it has {self.schemes})")
        r = self.response()
        lo, hi = window_columns_S(df)
        nodes, wts = (np.polynomial.hermite_e.hermegauss(quadrature) if run_effect is None
                      else (np.array([float(run_effect)]), np.array([1.0])))
        wts = wts / wts.sum()
        budget = df.max_pulses.to_numpy(dtype=float).copy()
        mean, ok = np.zeros(len(df)), np.zeros(len(df))
        for s in self.schemes:
            sel = df.scheme.to_numpy() == s
            if not sel.any():
                continue
            budget[sel & np.isnan(budget)] = self.scheme_budgets[s]
            steps = df.step_V.to_numpy()[sel]
            step = np.where(np.isfinite(steps), steps, self.scheme_steps[s][0] if self.scheme_steps[s] else np.nan)
            if clip_steps and self.scheme_steps[s]:
                step = np.clip(step, min(self.scheme_steps[s]), max(self.scheme_steps[s]))
            for z, w in zip(nodes, wts):
                wk, pk = _probabilities(r, lo[sel], hi[sel], df.prior_programs.to_numpy()[sel], s, step, float(z))
                m, o = expected_pulses(wk, pk, budget[sel])
                mean[sel] += w * m
                ok[sel] += w * o
        return mean, ok

    def plot(self, path: Any) -> Any:
        """PNG: mean pulses per (run, level), data vs the model (the run's own effect), and
        the runs' estimated effects."""
        from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

        fig = Figure(figsize=(11, 4))
        ax = fig.subplots(1, 2)
        data = np.array([r["pulses_mean_data"] for r in self.report])
        model = np.array([r["pulses_mean_model_run"] for r in self.report])
        ax[0].loglog(data, model, "o", ms=4)
        lim = [max(min(data.min(), model.min()) * 0.8, 0.1), max(data.max(), model.max()) * 1.25]
        ax[0].plot(lim, lim, "k-", lw=0.8)
        ax[0].fill_between(lim, [v * 0.8 for v in lim], [v * 1.2 for v in lim], color="0.9")
        ax[0].set(xlabel="mean pulses, data", ylabel="mean pulses, model (run's effect)",
                  title="per run and level (band: ±20 %)")
        ax[1].barh(range(len(self.runs)), self.run_effects)
        ax[1].set_yticks(range(len(self.runs)), self.runs, fontsize=7)
        ax[1].set(xlabel="run effect (units of τ)", title=f"run effects, τ = {self.run_sd:.2f} on logit p")
        fig.tight_layout()
        return save_figure(fig, path)


def response_table(r: PulseResponse) -> dict[str, Any]:
    """The ``[write_verify]`` card table of a shared model (what ``parse_card`` reads back)."""
    return {"model": r.model, "window_lo_S": list(r.window_lo_S), "window_hi_S": list(r.window_hi_S),
            "range_S": list(r.range_S), "g_ref_S": r.g_ref_S, "class_logit_p": list(r.class_logit_p),
            "class_logit_weight": list(r.class_logit_weight), "run_sd": r.run_sd,
            "p_effects": dict(r.p_effects), "weight_effects": {k: list(v) for k, v in r.weight_effects.items()},
            "probabilities": list(r.probabilities),
            "schemes": {s.name: _scheme_table(s) for s in r.schemes},
            **({"run_variation": dict(r.run_variation_table)} if r.run_variation_table else {}),
            **({"support": dict(r.support)} if r.support else {})}


def _scheme_table(s: PulseScheme) -> dict[str, Any]:
    out: dict[str, Any] = {"max_pulses": s.max_pulses, "steps_V": list(s.steps_V)}
    for p_field, w_field in SCHEME_TERMS.values():
        out[p_field] = getattr(s, p_field)
        out[w_field] = list(getattr(s, w_field))
    out.update({"position_quantiles": list(s.position_quantiles),
                "open_above_log_quantiles": list(s.open_above_log_quantiles),
                "open_below_log_quantiles": list(s.open_below_log_quantiles)})
    return out


def _theta_of(r: PulseResponse) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """The fit's parameter layout (x names, z names, schemes, θ) of a shared model: the
    inverse of :meth:`PulseResponseFit.response`."""
    schemes = [s.name for s in r.schemes]
    k = len(r.class_logit_p)
    terms = {_scheme_key(s.name, t): (getattr(s, pf), getattr(s, wf)) for s in r.schemes[1:]
             for t, (pf, wf) in SCHEME_TERMS.items()}
    x_names = [n for n, (pv, _) in terms.items() if pv != 0.0] + list(r.p_effects)
    z_names = [n for n, (_, wv) in terms.items() if wv] + list(r.weight_effects)
    beta = [terms[n][0] if n in terms else r.p_effects[n] for n in x_names]
    delta = np.array([list(terms[n][1]) if n in terms else list(r.weight_effects[n])
                      for n in z_names]).reshape(len(z_names), k - 1)
    theta = np.concatenate([r.class_logit_p, beta, r.class_logit_weight[1:], delta.T.ravel(),
                            [math.log(r.run_sd) if r.run_sd > 0 else -math.inf]])
    return x_names, z_names, schemes, theta


def stationarity(response: PulseResponse, data: Any, covariance: Any, prior_sd: float = 10.0) -> float:
    """How far a shared model's parameters lie from the optimum of the penalised likelihood
    of ``data``, in standard errors: the length ``sqrt(gᵀ Σ g)`` of the Newton step to the
    optimum in the metric of the parameters' covariance ``Σ`` (``g``: the gradient at the
    model's parameters, the runs' effects at their optimum given them). A model fitted to
    ``data`` gives ≪ 1; one fitted to other data, or edited, does not. ``covariance``: the
    fit report's (parameters in the fit's order)."""
    from scipy.optimize import minimize

    df = read_write_verify(data, min_cells_per_level=1)
    x_names, z_names, schemes, theta = _theta_of(response)
    d = _Design(df, response.g_ref_S, schemes, x_names, z_names)
    k = len(response.class_logit_p)
    with_run = d.n_runs > 1 and np.isfinite(theta[-1])
    n_free = k + len(x_names) + (k - 1) * (1 + len(z_names))
    n_theta = theta.size
    if not with_run:
        theta = theta.copy()
        theta[-1] = 0.0
        grad = _objective(theta, d, k, n_theta, n_free, prior_sd, False)[1][:n_theta - 1]
    else:
        def on_u(u: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = _objective(np.concatenate([theta, u]), d, k, n_theta, n_free, prior_sd, True)
            return f, g[n_theta:]

        u = minimize(on_u, np.zeros(d.n_runs), jac=True, method="L-BFGS-B",
                     options={"ftol": 1e-15, "gtol": 1e-10}).x
        grad = _objective(np.concatenate([theta, u]), d, k, n_theta, n_free, prior_sd, True)[1][:n_theta]
    cov = np.asarray(covariance, dtype=np.float64)[:grad.size, :grad.size]
    return float(math.sqrt(max(float(grad @ cov @ grad), 0.0)))


def _toml_safe(value: Any) -> Any:
    """Replace non-finite floats by strings so the report survives any TOML writer/reader."""
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _probabilities(r: PulseResponse, lo: np.ndarray, hi: np.ndarray, prior: np.ndarray, scheme: str,
                   step: np.ndarray, run_effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise class weights and hit probabilities (each (n, K)); ``step`` per row."""
    if np.all(step == step[0]) or np.all(np.isnan(step)):
        s0 = float(step[0])
        return r.class_probabilities(lo, hi, prior, scheme, None if math.isnan(s0) else s0, run_effect)
    w, p = np.empty((lo.size, len(r.class_logit_p))), np.empty((lo.size, len(r.class_logit_p)))
    for v in np.unique(step):
        sel = step == v
        w[sel], p[sel] = r.class_probabilities(lo[sel], hi[sel], prior[sel], scheme, float(v), run_effect)
    return w, p


def _unpack(theta: np.ndarray, k: int, px: int, pz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    a = theta[:k]
    b = theta[k:k + px]
    g = theta[k + px:k + px + k - 1]
    D = theta[k + px + k - 1:k + px + k - 1 + (k - 1) * pz].reshape(k - 1, pz)
    return a, b, g, D, float(theta[-1])


def _param_names(k: int, x_names: list[str], z_names: list[str]) -> list[str]:
    return ([f"class_logit_p[{j}]" for j in range(k)] + [f"p_effect:{n}" for n in x_names]
            + [f"class_logit_weight[{j}]" for j in range(1, k)]
            + [f"weight_effect:{n}[{j}]" for j in range(1, k) for n in z_names] + ["log_run_sd"])


def _row_loglik(theta: np.ndarray, d: _Design, k: int, shift: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct row, given its run's shift of logit p (``shift``, shape (n,)): ln P(row),
    the class posteriors (n, K), P(hit) (n, K) and ln π (n, K)."""
    a, b, g, D, _ = _unpack(theta, k, d.X.shape[1], d.Z.shape[1])
    zeta = np.concatenate([np.zeros((d.x.size, 1)), g[None, :] + d.Z @ D.T], axis=1)
    log_pi = zeta - _logsumexp(zeta, axis=1)[:, None]
    eta = (d.X @ b + shift)[:, None] + a[None, :]
    lp, lq = _log_sigmoid(eta), _log_sigmoid(-eta)
    x = d.x[:, None]
    lf = np.where(d.cens[:, None], (x + 1.0) * lq, lp + x * lq)
    t = log_pi + lf
    li = _logsumexp(t, axis=1)
    return li, np.exp(t - li[:, None]), np.exp(lp), log_pi


def _objective(params: np.ndarray, d: _Design, k: int, n_theta: int, n_free: int, prior_sd: float,
               with_run: bool) -> tuple[float, np.ndarray]:
    """Negative joint penalised log-likelihood of (θ, run effects) and its gradient.

    ``params`` = θ (``n_theta`` values, ending in ln τ) followed by the runs' shifts of
    logit p (with ``with_run``)."""
    theta = params[:n_theta]
    u = params[n_theta:] if with_run else np.zeros(d.n_runs)
    log_tau = theta[-1]
    li, q, p, log_pi = _row_loglik(theta, d, k, u[d.run])
    free = theta[k:n_free]
    ll = float(li @ d.count) - 0.5 * float(free @ free) / prior_sd ** 2
    if with_run:
        ll += float(-0.5 * np.sum(u ** 2) * math.exp(-2.0 * log_tau) - u.size * log_tau)
    x = d.x[:, None]
    dlf = np.where(d.cens[:, None], -(x + 1.0) * p, (1.0 - p) - x * p)
    G = q * dlf * d.count[:, None]  # (n, K): d ln L / d eta_k
    grad_a = G.sum(axis=0)
    g_row = G.sum(axis=1)
    grad_b = d.X.T @ g_row
    dz = q * d.count[:, None] - np.exp(log_pi) * d.count[:, None]
    grad_g = dz[:, 1:].sum(axis=0)
    grad_D = dz[:, 1:].T @ d.Z
    grad_tau = float(np.sum(u ** 2) * math.exp(-2.0 * log_tau) - u.size) if with_run else 0.0
    grad = np.concatenate([grad_a, grad_b, grad_g, grad_D.ravel(), [grad_tau]])
    grad[k:n_free] -= free / prior_sd ** 2
    if with_run:
        grad_u = np.bincount(d.run, weights=g_row, minlength=d.n_runs) - u * math.exp(-2.0 * log_tau)
        grad = np.concatenate([grad, grad_u])
    return -ll, -grad


def _final_quantiles(df: Any, probs: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Where verified cells end in their windows: the position (fraction of the window's
    ln-width) in two-sided windows, the ln-distance past the edge in one-sided ones."""
    ok = df[df.success]
    lo, hi = window_columns_S(ok)
    ln_g = np.log(1.0 / ok.read_value_ohm.to_numpy(dtype=float))
    above, below = np.isinf(hi), lo <= 0
    two = ~above & ~below
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for sel, v, lo_b, hi_b in ((two, (ln_g - np.log(lo)) / (np.log(hi) - np.log(lo)), 0.0, 1.0),
                                   (above, ln_g - np.log(lo), 0.0, np.inf), (below, np.log(hi) - ln_g, 0.0, np.inf)):
            vals = np.clip(v[sel], lo_b, hi_b)
            out.append([float(x) for x in np.quantile(vals, probs)] if vals.size else [0.0] * probs.size)
    return out[0], out[1], out[2]


def fit_pulse_response(data: Any, classes: int = 3, n_quantiles: int = 41,
                       min_cells_per_level: int = 20, prior_sd: float = 10.0, stderr: bool = True,
                       g_ref_S: float | None = None, max_iter: int = 50000,
                       start: PulseResponseFit | None = None) -> PulseResponseFit:
    """Fit the shared pulse-response model to a tidy write-verify table (all its runs, windows
    and schemes at once).

    Args:
        data: tidy table (CSV/Parquet path or DataFrame; see
            :func:`~analogmem.calibrate.write_verify.read_write_verify` for the columns).
        classes: response classes K (1..4).
        n_quantiles: knots of the verified-position quantile functions.
        min_cells_per_level: fewest rows per level index.
        prior_sd: standard deviation of the weak Gaussian penalty on the effects.
        stderr: compute standard errors (numerical Hessian; 2 gradient evaluations per
            parameter and run).
        g_ref_S: conductance where ``position`` = 0 (default: geometric mean of the window
            edges; ``start``'s when given).
        start: a fit to start from (parameters matched by name, run effects by run): a warm
            start for a fit on related data (leave-one-run-out).

    Raises:
        CalibrationError: table errors (see ``read_write_verify``), overlapping windows within
            a run (all listed, with the fix), a run of only failures, or a fit that does not
            converge.
    """
    from scipy.optimize import minimize

    if not 1 <= classes <= 4:
        raise CalibrationError(f"classes must be 1..4, got {classes}")
    df = read_write_verify(data, min_cells_per_level)
    clash = overlapping_windows(df, "experiment")
    if clash:
        raise CalibrationError(f"{len(clash)} pair(s) of overlapping verify windows within a run: " + "; ".join(clash)
                               + ". Each run must use one set of non-overlapping windows: give each window set its "
                               "own run (an 'experiment' column; scripts/cards/convert_radar.py splits such files)")
    if not df.success.any():
        raise CalibrationError("no operation succeeded: the pulse-response model needs successes")
    lo, hi = window_columns_S(df)
    finite_edges = np.concatenate([lo[lo > 0], hi[np.isfinite(hi)]])
    if g_ref_S is None:
        g_ref_S = start.g_ref_S if start is not None else float(np.exp(np.mean(np.log(finite_edges))))
    schemes = sorted(df.scheme.unique(), key=lambda s: (-int((df.scheme == s).sum()), s))
    cov = _covariates(df, g_ref_S, schemes)
    scheme_cols = [_scheme_key(s, term) for s in schemes[1:] for term in SCHEME_TERMS]
    x_names, x_dropped = _select(cov, scheme_cols + list(P_EFFECTS))
    z_names, z_dropped = _select(cov, scheme_cols + list(WEIGHT_EFFECTS)) if classes > 1 else ([], [])
    d = _Design(df, g_ref_S, schemes, x_names, z_names)
    with_run = d.n_runs > 1
    k, px, pz = classes, len(x_names), len(z_names)
    n_free = k + px + (k - 1) * (1 + pz)
    p0 = np.asarray(_INIT_P[k])
    theta = np.concatenate([np.log(p0 / (1 - p0)), np.zeros(px + (k - 1) * (1 + pz)), [math.log(0.3)]])
    u = np.zeros(d.n_runs)
    if start is not None:
        known = dict(zip(_param_names(start.classes, start.x_names, start.z_names), start.theta))
        names = _param_names(k, x_names, z_names)
        theta = np.array([known.get(nm, v) for nm, v in zip(names, theta)])
        if not np.isfinite(theta[-1]):
            theta[-1] = math.log(0.3)
        prev = dict(zip(start.runs, start.run_effects))
        u = np.array([prev.get(r, 0.0) * start.run_sd for r in d.runs])
    n_theta = theta.size
    fun = lambda v: _objective(v, d, k, n_theta, n_free, prior_sd, with_run)  # noqa: E731
    x0 = np.concatenate([theta, u]) if with_run else theta
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxfun": 2 * max_iter, "ftol": 1e-14, "gtol": 1e-8})
    if not res.success and "ABNORMAL" not in str(res.message):
        raise CalibrationError(f"the pulse-response fit did not converge: {res.message}")
    params = res.x.copy()
    n_used = params.size if with_run else n_theta - 1  # one run: no τ
    cov = np.full((n_theta, n_theta), np.nan)
    if stderr:
        cov = _covariance(lambda v: fun(v)[1], params, n_used)[:n_theta, :n_theta]
    theta = params[:n_theta].copy()
    u = params[n_theta:] if with_run else np.zeros(d.n_runs)
    u_sd = _run_effect_sd(fun, params, n_theta) if with_run else np.zeros(d.n_runs)
    se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
    if not with_run:
        theta[-1] = -math.inf
    probs = np.linspace(0.0, 1.0, n_quantiles)
    final = {s: _final_quantiles(df[df.scheme == s], probs) for s in schemes}
    budgets, steps, budget_sources = {}, {}, {}
    for s in schemes:
        g = df[df.scheme == s]
        budgets[s], budget_sources[s] = scheme_budget(g)
        steps[s] = sorted({float(v) for v in g.step_V.dropna()})
    default = _card_levels(df)
    fit = PulseResponseFit(
        classes=k, g_ref_S=g_ref_S, range_S=(float(lo.min()), float(hi.max())),
        window_lo_S=[w_[0] for w_ in default], window_hi_S=[w_[1] for w_ in default], x_names=x_names,
        z_names=z_names, schemes=schemes, theta=theta, stderr=se, loglik=_laplace_loglik(res.fun, fun, params, n_theta,
                                                                                     with_run),
        n=len(df), runs=d.runs,
        run_effects=[], scheme_budgets=budgets, scheme_steps=steps, probabilities=[float(v) for v in probs],
        final_quantiles=final,
        dropped=x_dropped + [f"weights:{n}" for n in z_dropped], prior_sd=prior_sd, covariance=cov)
    tau = fit.run_sd if with_run else 1.0
    fit.run_effects = [float(v / tau) for v in u] if with_run else [0.0] * d.n_runs
    fit.run_effect_sd = [float(v / tau) for v in u_sd] if with_run else [0.0] * d.n_runs
    fit.report = _report(fit, df)
    fit.budget_sources = budget_sources

    fit.support = window_support(df, g_ref_S)
    n_level = int(df.groupby(["experiment", "target_level"]).size().median())
    fit.intervals = predict_levels(fit.response(), n_cells=n_level, parameter_draws=fit.parameter_draws())
    return fit


def scheme_budget(g: Any) -> tuple[int, str]:
    """A scheme's pulse budget from its rows, and where it came from: the ``max_pulses``
    column when given; else the pulses of failed operations (a failed program spends the
    whole budget); else — every operation succeeded, so the budget was never reached —
    ``NO_FAILURE_BUDGET_FACTOR`` × the most pulses taken, not that maximum itself (which
    would predict failures the data do not show)."""
    given = g.max_pulses.dropna()
    if len(given):
        return int(given.max()), "max_pulses column"
    failed = g.pulses[~g.success.astype(bool)]
    if len(failed):
        return int(failed.max()), "pulses of the failed operations (a failed program spends the budget)"
    most = int(g.pulses.max())
    return NO_FAILURE_BUDGET_FACTOR * max(most, 1), (f"no operation failed: {NO_FAILURE_BUDGET_FACTOR} x the most "
                                                     f"pulses taken ({most}); give a max_pulses column to set it")


def _card_levels(df: Any) -> list[tuple[float, float]]:
    """The card's levels: the windows of the run with the most rows (its level order)."""
    main = df.experiment.value_counts().index[0]
    g = df[df.experiment == main].groupby("target_level", sort=True).first()
    lo, hi = window_columns_S(g)
    return list(zip(lo.tolist(), hi.tolist()))


def _covariance(grad: Any, params: np.ndarray, n_used: int) -> np.ndarray:
    """Inverse of the numerical Hessian (central differences of the gradient) of the first
    ``n_used`` parameters (NaN where it is not positive definite)."""
    n = n_used
    H = np.zeros((n, n))
    for i in range(n):
        h = 1e-4 * max(1.0, abs(params[i]))
        tp, tm = params.copy(), params.copy()
        tp[i] += h
        tm[i] -= h
        H[:, i] = (grad(tp)[:n] - grad(tm)[:n]) / (2 * h)
    H = 0.5 * (H + H.T)
    out = np.full((params.size, params.size), np.nan)
    try:
        out[:n, :n] = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        pass
    return out


def _run_effect_sd(fun: Any, params: np.ndarray, n_theta: int) -> np.ndarray:
    """Each run effect's standard deviation given the parameters (1/sqrt of the objective's
    curvature along it; the runs' rows are disjoint, so one joint difference gives them all)."""
    u = params[n_theta:]
    h = 1e-4
    up, um = params.copy(), params.copy()
    up[n_theta:] += h
    um[n_theta:] -= h
    curv = (fun(up)[1][n_theta:] - fun(um)[1][n_theta:]) / (2 * h)
    return np.where(curv > 0, 1.0 / np.sqrt(np.maximum(curv, 1e-300)), np.nan) * np.ones_like(u)


def _laplace_loglik(neg_joint: float, fun: Any, params: np.ndarray, n_theta: int, with_run: bool) -> float:
    """Laplace approximation of the marginal log-likelihood at the optimum: the joint
    log-likelihood plus, per run, ½ ln(2π·var(u_e | data))."""
    if not with_run:
        return -float(neg_joint)
    sd = _run_effect_sd(fun, params, n_theta)
    return -float(neg_joint) + float(np.sum(0.5 * np.log(2 * math.pi * sd ** 2)))


def _report(fit: PulseResponseFit, df: Any) -> list[dict[str, Any]]:
    """Per run and level: data vs model mean pulses and success (model with the run's own
    effect, and integrated over runs)."""
    effect = dict(zip(fit.runs, fit.run_effects))
    own_m, own_s = np.zeros(len(df)), np.zeros(len(df))
    for run in fit.runs:
        sel = (df.experiment == run).to_numpy()
        own_m[sel], own_s[sel] = fit.predict(df[sel], run_effect=effect[run])
    pop_m, pop_s = fit.predict(df)
    rows = []
    df = df.assign(_om=own_m, _os=own_s, _pm=pop_m, _ps=pop_s)
    for (run, level), g in df.groupby(["experiment", "target_level"], sort=True):
        ok = g[g.success]
        gs = 1.0 / ok.read_value_ohm.to_numpy(dtype=float)
        rows.append({"run": run, "level": int(level), "n_cells": int(len(g)),
                     "window_lo_ohm": float(g.window_lo_ohm.iloc[0]), "window_hi_ohm": float(g.window_hi_ohm.iloc[0]),
                     "scheme": str(g.scheme.iloc[0]), "pulses_mean_data": float(g.pulses.mean()),
                     "pulses_mean_model_run": float(g._om.mean()), "pulses_mean_model": float(g._pm.mean()),
                     "success_rate_data": float(g.success.mean()), "success_rate_model_run": float(g._os.mean()),
                     "success_rate_model": float(g._ps.mean()),
                     "verified_g_std_S": float(gs.std(ddof=1)) if gs.size > 1 else math.nan})
    return rows
