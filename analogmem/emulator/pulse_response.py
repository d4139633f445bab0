"""Pulse-response models of program-and-verify (a card's ``[write_verify]`` table).

Both models end in a :class:`PulseTable`, the form the kernels sample (one row per verify
window): a cell of window ``L`` belongs to response class ``k`` with probability
``weights[L][k]``, needs ``T = offset_pulses[L] + X`` pulses with ``X ~ Geometric₀(p_hit[L][k])``
on {0, 1, …} (``P(X = x) = p(1 − p)^x``; 0 when the first verify read already finds it in
the window), ends verified when ``T ≤ max_pulses`` — its conductance then drawn from the
window's quantile function of ln(g/S) — and otherwise fails after ``max_pulses`` pulses.

* ``model = "geometric-mixture"`` (the first RADAR card, scripts/cards/README.md): the table itself, one fitted row per window;
  only those windows can be programmed.
* ``model = "shared-geometric-mixture"`` (scripts/cards/README.md, "rram-radar"): one set of physical parameters shared
  by every window. For a window ``[lo, hi]`` (S), the start state and the pulse scheme,

  ``logit p_k = α_k + Σ_j β_j·x_j + s_scheme(window side) + τ·r``  and
  ``weights = softmax(γ_k + Σ_j δ_kj·z_j + w_scheme,k(window side))``,

  with the covariates of :func:`pulse_covariates` (window position and relative width,
  one-sided windows, first program or re-program and how many re-programs, ISPP step),
  ``τ`` the standard deviation of the run-to-run (experiment) random effect and ``r`` the
  run's effect in units of ``τ`` (0: the median run). The verified value sits in the window
  at a position drawn from the scheme's quantile function (the fraction of the window's
  ln-width for two-sided windows, the ln-distance past the edge for one-sided ones), so
  any window inside the card's ``range_S`` can be emulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DeviceCardError, TargetRangeError

__all__ = ["PulseTable", "PulseScheme", "PulseResponse", "pulse_covariates", "P_EFFECTS", "WEIGHT_EFFECTS",
           "SCHEME_TERMS", "WindowSupportWarning", "SUPPORT_MARGIN_LN_G", "SUPPORT_MARGIN_LN_WIDTH",
           "WIDTH_REF", "STEP_REF_V", "MAX_WINDOWS"]

#: Covariates acting on the per-pulse hit probability (logit scale), in this order.
P_EFFECTS = ("position", "position_sq", "ln_width", "open_above", "open_below", "fresh", "ln_prior",
             "fresh_position", "ln_step")
#: Covariates acting on the class weights (softmax scale).
WEIGHT_EFFECTS = ("fresh", "ln_prior", "open_above", "open_below")
#: Reference relative window width (ln(hi/lo)) and ISPP step (V) of ``ln_width`` and ``ln_step``.
WIDTH_REF = 0.02
STEP_REF_V = 0.1
#: Most windows one program call may use (the kernels look each target's window up linearly).
MAX_WINDOWS = 1024
_P_FLOOR = 1e-12
#: How far past the fitted windows a window may lie before it is flagged: its position
#: (ln g) 0.05 beyond the training positions, its ln relative width ln 1.5 beyond theirs.
SUPPORT_MARGIN_LN_G = 0.05
SUPPORT_MARGIN_LN_WIDTH = math.log(1.5)


class WindowSupportWarning(UserWarning):
    """A verify window (or start state) outside what the card's fit saw: the shared model
    extrapolates there, and its prediction is not backed by data (scripts/cards/README.md, "Run-to-run variation")."""


def pulse_covariates(lo_S: Any, hi_S: Any, prior_programs: Any, step_V: Any, g_ref_S: float) -> dict[str, np.ndarray]:
    """The covariates of the shared model, one value per window/program (arrays broadcast).

    Args:
        lo_S, hi_S: verify window (S); ``lo_S = 0`` is open below (the high-resistance
            level), ``hi_S = inf`` open above (the low-resistance level).
        prior_programs: programs of the cell into this same window that directly precede
            this one (0: the first program, from another state).
        step_V: ISPP step (V), NaN for schemes without one.
        g_ref_S: conductance at which ``position`` is 0.

    Returns name → array: ``position`` = ln(g_c/g_ref) with g_c the geometric centre of a
    two-sided window or the finite edge of a one-sided one; ``position_sq``; ``ln_width`` =
    ln(ln(hi/lo)/WIDTH_REF) (0 for one-sided windows); ``open_above``, ``open_below``
    (0/1); ``fresh`` (prior_programs == 0); ``ln_prior`` = ln(1 + prior_programs);
    ``fresh_position``; ``ln_step`` = ln(step/STEP_REF_V) (0 without a step).
    """
    lo, hi, prior, step = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in
                                                 (lo_S, hi_S, prior_programs, step_V)))
    above, below = np.isinf(hi), lo <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_lo, ln_hi = np.log(np.where(below, 1.0, lo)), np.log(np.where(above, 1.0, hi))
        centre = np.where(above, ln_lo, np.where(below, ln_hi, 0.5 * (ln_lo + ln_hi)))
        position = centre - math.log(g_ref_S)
        ln_width = np.where(above | below, 0.0, np.log(np.maximum(ln_hi - ln_lo, 1e-300) / WIDTH_REF))
        ln_step = np.where(np.isfinite(step) & (step > 0), np.log(np.where(step > 0, step, 1.0) / STEP_REF_V), 0.0)
    fresh = (prior == 0).astype(np.float64)
    return {"position": position, "position_sq": position ** 2, "ln_width": ln_width,
            "open_above": above.astype(np.float64), "open_below": below.astype(np.float64), "fresh": fresh,
            "ln_prior": np.log1p(prior), "fresh_position": fresh * position, "ln_step": ln_step}


@dataclass(frozen=True)
class PulseTable:
    """Per verify window: the geometric mixture of the pulses a cell needs and the quantile
    function of its verified ln(g/S) (see the module docstring). ``window_lo_S`` /
    ``window_hi_S`` are the windows the kernels look each target up in (S)."""

    window_lo_S: tuple[float, ...]
    window_hi_S: tuple[float, ...]
    weights: tuple[tuple[float, ...], ...]
    p_hit: tuple[tuple[float, ...], ...]
    offset_pulses: tuple[int, ...]
    max_pulses: int
    probabilities: tuple[float, ...]
    log_g_quantiles: tuple[tuple[float, ...], ...]

    @property
    def n_levels(self) -> int:
        return len(self.window_lo_S)

    def level_of(self, g_target_S: np.ndarray) -> np.ndarray:
        """Index of the first window holding each target (−1 where none does), same shape."""
        g = np.asarray(g_target_S, dtype=np.float64)
        out = np.full(g.shape, -1, dtype=np.intp)
        for j in range(self.n_levels - 1, -1, -1):
            out[(g >= self.window_lo_S[j]) & (g <= self.window_hi_S[j])] = j
        return out

    def mean_pulses(self, level: int, max_pulses: int | None = None) -> float:
        """E[min(T, max_pulses)] of window ``level`` (closed form of the geometric mixture)."""
        m = self.max_pulses if max_pulses is None else int(max_pulses)
        off = self.offset_pulses[level]
        total = 0.0
        for w, p in zip(self.weights[level], self.p_hit[level]):
            # T = off + X; E[min(T, m)] = sum_{t<m} P(T > t), P(T > t) = (1-p)^(t-off+1) for t >= off
            n = max(m - off, 0)
            tail = (1 - p) * (1 - (1 - p) ** n) / p if p > 0 else float(n)
            total += w * (min(off, m) + tail)
        return total

    def success_probability(self, level: int, max_pulses: int | None = None) -> float:
        """P(T ≤ max_pulses) of window ``level``."""
        m = self.max_pulses if max_pulses is None else int(max_pulses)
        off = self.offset_pulses[level]
        if m < off:
            return 0.0
        return float(sum(w * (1 - (1 - p) ** (m - off + 1)) for w, p in zip(self.weights[level], self.p_hit[level])))


@dataclass(frozen=True)
class PulseScheme:
    """One pulse scheme of a shared model: its default budget; its shifts of the hit
    probability's logit and of the class logits (0 for the reference scheme) — for every
    window, and in addition for windows open above (reached by SET pulses alone) and open
    below (RESET alone), where the scheme's polarity-specific ramp acts; the ISPP steps (V)
    it was fitted on (empty: no step); and where its verified cells end in their windows
    (at the model's ``probabilities``): the fraction of a two-sided window's ln-width, and
    the ln-distance past the edge of a window open above / below."""

    name: str
    max_pulses: int
    p_shift: float = 0.0
    weight_shift: tuple[float, ...] = ()
    steps_V: tuple[float, ...] = ()
    position_quantiles: tuple[float, ...] = ()
    open_above_log_quantiles: tuple[float, ...] = ()
    open_below_log_quantiles: tuple[float, ...] = ()
    p_shift_open_above: float = 0.0
    p_shift_open_below: float = 0.0
    weight_shift_open_above: tuple[float, ...] = ()
    weight_shift_open_below: tuple[float, ...] = ()


#: A scheme's shift terms: covariate suffix → (PulseScheme field of the p shift, of the weight shift).
SCHEME_TERMS = {"": ("p_shift", "weight_shift"), "open_above": ("p_shift_open_above", "weight_shift_open_above"),
                "open_below": ("p_shift_open_below", "weight_shift_open_below")}


@dataclass(frozen=True)
class PulseResponse:
    """A card's ``[write_verify]`` model (see the module docstring); ``model = "none"``
    means the card has none. :meth:`table` gives the kernels' :class:`PulseTable` for the
    windows to program."""

    model: str = "none"
    #: the card's levels: its default verify windows (S)
    window_lo_S: tuple[float, ...] = ()
    window_hi_S: tuple[float, ...] = ()
    max_pulses: int = 0
    probabilities: tuple[float, ...] = ()
    #: geometric-mixture: the fitted table, one row per level
    fitted: PulseTable | None = None
    # ---- shared-geometric-mixture
    range_S: tuple[float, float] = (0.0, math.inf)
    g_ref_S: float = 1.0
    class_logit_p: tuple[float, ...] = ()
    class_logit_weight: tuple[float, ...] = ()
    p_effects: dict[str, float] = field(default_factory=dict)
    weight_effects: dict[str, tuple[float, ...]] = field(default_factory=dict)
    run_sd: float = 0.0
    schemes: tuple[PulseScheme, ...] = ()
    #: predictive run-to-run variation of logit p (``[write_verify.run_variation]``, issue
    #: #28): between-run SD σ_b, within-run level-to-level SD σ_w (0, 0: the card has none),
    #: and the bootstrap replicates of (σ_b, σ_w) (their uncertainty), shape (B, 2)
    run_sd_between: float = 0.0
    run_sd_within: float = 0.0
    run_sd_replicates: tuple[tuple[float, float], ...] = ()
    #: the card's ``[write_verify.run_variation]`` table as read (its record: method, intervals)
    run_variation_table: dict[str, Any] = field(default_factory=dict)
    #: what the fit saw (``[write_verify.support]``): per window kind ("two_sided",
    #: "open_above", "open_below") the [min, max] of ``position`` (two-sided also of
    #: ``ln_width``), and ``max_prior_programs``; empty: not recorded, nothing is checked
    support: dict[str, Any] = field(default_factory=dict)

    def support_issues(self, lo_S: Any, hi_S: Any, prior_programs: int = 0) -> list[str]:
        """Why each window outside the fit's support is (one line per such window; empty
        when all are inside or the card records no support)."""
        if not self.support:
            return []
        lo, hi = np.atleast_1d(np.asarray(lo_S, dtype=np.float64)), np.atleast_1d(np.asarray(hi_S, dtype=np.float64))
        x = pulse_covariates(lo, hi, prior_programs, math.nan, self.g_ref_S)
        out = []
        for j in range(lo.size):
            kind = "open_above" if np.isinf(hi[j]) else "open_below" if lo[j] <= 0 else "two_sided"
            sup = self.support.get(kind)
            name = f"window [{lo[j]:.6g}, {hi[j]:.6g}] S"
            if not sup:
                out.append(f"{name}: the fit saw no {kind.replace('_', '-')} window")
                continue
            pos, (a, b) = float(x["position"][j]), sup["position"]
            if not a - SUPPORT_MARGIN_LN_G <= pos <= b + SUPPORT_MARGIN_LN_G:
                out.append(f"{name}: its position ln(g/g_ref) = {pos:.3f} lies outside the fitted "
                           f"{kind.replace('_', '-')} windows' [{a:.3f}, {b:.3f}]")
            if kind == "two_sided":
                wd, (a, b) = float(x["ln_width"][j]), sup["ln_width"]
                if not a - SUPPORT_MARGIN_LN_WIDTH <= wd <= b + SUPPORT_MARGIN_LN_WIDTH:
                    rel = WIDTH_REF * math.exp(wd)
                    out.append(f"{name}: its relative width ln(hi/lo) = {rel:.4f} lies outside the fitted windows' "
                               f"[{WIDTH_REF * math.exp(a):.4f}, {WIDTH_REF * math.exp(b):.4f}]")
        most = self.support.get("max_prior_programs")
        if most is not None and prior_programs > most:
            out.append(f"prior_programs = {prior_programs} exceeds the fitted {int(most)}")
        return out

    @property
    def enabled(self) -> bool:
        return self.model != "none"

    @property
    def n_levels(self) -> int:
        return len(self.window_lo_S)

    @property
    def shared(self) -> bool:
        return self.model == "shared-geometric-mixture"

    def scheme(self, name: str | None = None) -> PulseScheme:
        """The scheme called ``name`` (None: the card's first, its default)."""
        if not self.schemes:
            raise DeviceCardError(f"the {self.model!r} write-verify model has no pulse schemes")
        if name is None:
            return self.schemes[0]
        for s in self.schemes:
            if s.name == name:
                return s
        raise TargetRangeError(f"pulse scheme {name!r} is not on the card (it has "
                               f"{', '.join(repr(s.name) for s in self.schemes)})")

    def level_of(self, g_target_S: np.ndarray) -> np.ndarray:
        """Index of the card level (default window) holding each target (−1 where none does)."""
        return self.table().level_of(g_target_S)

    # ---- the shared model's closed forms
    def class_probabilities(self, lo_S: Any, hi_S: Any, prior_programs: Any = 0, scheme: str | None = None,
                            step_V: float | None = None, run_effect: float = 0.0,
                            logit_shift: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Shared model: per window, the class weights and per-pulse hit probabilities,
        each shape (n_windows, K). ``run_effect`` is in standard deviations ``run_sd`` of
        the fitted run effect; ``logit_shift`` (scalar or one per window) is added to logit p
        (a campaign's sampled between- plus within-run effect)."""
        sc = self.scheme(scheme)
        step = self._step(sc, step_V)
        x = pulse_covariates(np.atleast_1d(lo_S), np.atleast_1d(hi_S), prior_programs, step, self.g_ref_S)
        eta = np.zeros(x["position"].shape)
        for name, coef in self.p_effects.items():
            eta = eta + coef * x[name]
        eta = eta + self.run_sd * float(run_effect) + np.asarray(logit_shift, dtype=np.float64)
        for term, (p_field, w_field) in SCHEME_TERMS.items():
            on = x[term] if term else 1.0
            eta = eta + getattr(sc, p_field) * on
        logit = np.asarray(self.class_logit_p)[None, :] + eta[:, None]
        p = np.clip(1.0 / (1.0 + np.exp(-logit)), _P_FLOOR, 1.0)
        zeta = np.tile(np.asarray(self.class_logit_weight, dtype=np.float64), (eta.size, 1))
        for name, coefs in self.weight_effects.items():
            zeta[:, 1:] += x[name][:, None] * np.asarray(coefs)[None, :]
        for term, (_, w_field) in SCHEME_TERMS.items():
            shift = getattr(sc, w_field)
            if shift:
                on = x[term][:, None] if term else 1.0
                zeta[:, 1:] += on * np.asarray(shift)[None, :]
        zeta -= zeta.max(axis=1, keepdims=True)
        w = np.exp(zeta)
        return w / w.sum(axis=1, keepdims=True), p

    def _step(self, sc: PulseScheme, step_V: float | None) -> float:
        if step_V is None:
            return sc.steps_V[0] if sc.steps_V else math.nan
        if not sc.steps_V:
            raise TargetRangeError(f"pulse scheme {sc.name!r} has no step: step_V must be None")
        if not (min(sc.steps_V) <= step_V <= max(sc.steps_V)):
            raise TargetRangeError(f"step_V = {step_V!r} V lies outside the steps {list(sc.steps_V)} V the "
                                   f"card fitted for scheme {sc.name!r}")
        return float(step_V)

    def _verified_quantiles(self, lo: np.ndarray, hi: np.ndarray, sc: PulseScheme) -> np.ndarray:
        """ln(g/S) quantiles of verified cells per window (shape (n_windows, n_probabilities))."""
        out = np.empty((lo.size, len(self.probabilities)))
        for j, (a, b) in enumerate(zip(lo, hi)):
            if np.isinf(b):
                out[j] = math.log(a) + np.asarray(sc.open_above_log_quantiles)
            elif a <= 0:
                out[j] = math.log(b) - np.asarray(sc.open_below_log_quantiles)[::-1]
            else:
                out[j] = math.log(a) + np.asarray(sc.position_quantiles) * (math.log(b) - math.log(a))
        return out

    def table(self, windows: Any = None, prior_programs: int = 0, scheme: str | None = None,
              step_V: float | None = None, run_effect: float = 0.0, max_pulses: int | None = None,
              lookup: Any = None, logit_shift: Any = None) -> PulseTable:
        """The kernels' table for verify windows ``windows`` (sequence of (lo_S, hi_S); None:
        the card's levels).

        ``lookup`` optionally replaces the windows the kernels look targets up in (same
        length; a target + tolerance program looks each distinct target up exactly).
        ``logit_shift``: per window, a shift of logit p (a campaign's sampled run effect,
        :func:`~analogmem.emulator.run_variation.campaign_shifts`). The budget is
        ``max_pulses`` or the scheme's. Raises
        :class:`~analogmem.errors.TargetRangeError` for a window outside the card's range or
        one a per-window (``geometric-mixture``) card was not fitted on."""
        if not self.enabled:
            raise DeviceCardError("the card has no [write_verify] pulse-response model")
        if not self.shared:
            if scheme is not None or step_V is not None or prior_programs or run_effect or logit_shift is not None:
                raise TargetRangeError("a geometric-mixture card has one table per fitted window: scheme, step_V, "
                                       "prior_programs and run_effect need a shared-geometric-mixture card")
            base = self.fitted
            if windows is None and lookup is None:
                return base if max_pulses is None else _with(base, max_pulses=int(max_pulses))
            rows = [self._fitted_row(lo, hi) for lo, hi in _windows(windows)]
            lo_l, hi_l = _lookup(lookup, windows)
            return PulseTable(lo_l, hi_l, tuple(base.weights[r] for r in rows), tuple(base.p_hit[r] for r in rows),
                              tuple(base.offset_pulses[r] for r in rows),
                              base.max_pulses if max_pulses is None else int(max_pulses), base.probabilities,
                              tuple(base.log_g_quantiles[r] for r in rows))
        wins = list(zip(self.window_lo_S, self.window_hi_S)) if windows is None else _windows(windows)
        lo = np.array([w[0] for w in wins])
        hi = np.array([w[1] for w in wins])
        r_lo, r_hi = self.range_S
        bad = (lo < r_lo) | (hi > r_hi) | ((lo <= 0) & (r_lo > 0)) | (np.isinf(hi) & np.isfinite(r_hi))
        if np.any(bad):
            j = int(np.argmax(bad))
            raise TargetRangeError(f"verify window [{lo[j]:g}, {hi[j]:g}] S lies outside the card's write-verify "
                                   f"range [{r_lo:g}, {r_hi:g}] S")
        if not isinstance(prior_programs, (int, np.integer)) or isinstance(prior_programs, bool) or prior_programs < 0:
            raise TargetRangeError(f"prior_programs must be a non-negative integer, got {prior_programs!r}")
        if not math.isfinite(run_effect):
            raise TargetRangeError(f"run_effect must be finite, got {run_effect!r}")
        sc = self.scheme(scheme)
        issues = self.support_issues(lo, hi, int(prior_programs))
        if issues:
            import warnings

            warnings.warn("the card's write-verify model extrapolates: " + "; ".join(issues[:5])
                          + (f"; and {len(issues) - 5} more" if len(issues) > 5 else ""), WindowSupportWarning,
                          stacklevel=3)
        shift = 0.0 if logit_shift is None else np.asarray(logit_shift, dtype=np.float64)
        if np.ndim(shift) and (np.shape(shift) != lo.shape or not np.all(np.isfinite(shift))):
            raise TargetRangeError(f"logit_shift must be finite, one per window ({lo.size}), got shape "
                                   f"{np.shape(shift)}")
        w, p = self.class_probabilities(lo, hi, prior_programs, scheme, step_V, run_effect, shift)
        lo_l, hi_l = (tuple(lo.tolist()), tuple(hi.tolist())) if lookup is None else _lookup(lookup, windows)
        return PulseTable(lo_l, hi_l, tuple(tuple(r) for r in w.tolist()), tuple(tuple(r) for r in p.tolist()),
                          (0,) * lo.size, sc.max_pulses if max_pulses is None else int(max_pulses),
                          self.probabilities, tuple(tuple(r) for r in self._verified_quantiles(lo, hi, sc).tolist()))

    def _fitted_row(self, lo: float, hi: float) -> int:
        for j, (a, b) in enumerate(zip(self.window_lo_S, self.window_hi_S)):
            if math.isclose(a, lo, rel_tol=1e-9) and math.isclose(b, hi, rel_tol=1e-9):
                return j
        raise TargetRangeError(f"verify window [{lo:g}, {hi:g}] S is not one of this geometric-mixture card's "
                               f"{self.n_levels} fitted windows (a shared-geometric-mixture card emulates any "
                               "window in its range)")

    # ---- closed forms per card level (either model)
    def mean_pulses(self, level: int, max_pulses: int | None = None) -> float:
        """E[min(T, max_pulses)] of card level ``level`` (first program, default scheme, median run)."""
        return self.table().mean_pulses(level, max_pulses)

    def success_probability(self, level: int, max_pulses: int | None = None) -> float:
        """P(T ≤ max_pulses) of card level ``level`` (first program, default scheme, median run)."""
        return self.table().success_probability(level, max_pulses)

    @property
    def log_g_quantiles(self) -> tuple[tuple[float, ...], ...]:
        """Verified ln(g/S) quantiles of the card levels (at ``probabilities``)."""
        return self.table().log_g_quantiles


def _with(t: PulseTable, **changes: Any) -> PulseTable:
    from dataclasses import replace

    return replace(t, **changes)


def _windows(windows: Any) -> list[tuple[float, float]]:
    """Validate a sequence of (lo_S, hi_S) windows: 0 ≤ lo < hi (hi may be inf), at most MAX_WINDOWS."""
    try:
        wins = [(float(a), float(b)) for a, b in windows]
    except (TypeError, ValueError):
        raise TargetRangeError(f"windows must be a sequence of (lo_S, hi_S) pairs, got {windows!r}") from None
    if not 1 <= len(wins) <= MAX_WINDOWS:
        raise TargetRangeError(f"need 1..{MAX_WINDOWS} verify windows per program call, got {len(wins)}")
    for j, (a, b) in enumerate(wins):
        if not (math.isfinite(a) and a >= 0 and b > a):
            raise TargetRangeError(f"window {j}: [{a!r}, {b!r}] S must have 0 <= lo < hi")
    return wins


def _lookup(lookup: Any, windows: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    src = windows if lookup is None else lookup
    return tuple(float(a) for a, _ in src), tuple(float(b) for _, b in src)
