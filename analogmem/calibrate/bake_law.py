"""Spread growth and mean shift through bakes as a law in Arrhenius-equivalent time (scripts/cards/README.md, "Retention past the tabulated ages").

A device card tabulates the read spread per level at a few ages; past the last one it holds
it. Measured bakes say the spread keeps growing: here each level's spread and mean after a
bake follow power laws of the Arrhenius-equivalent age ``t`` (s at the card's reference
temperature, :class:`~analogmem.calibrate.retention.ArrheniusFit`), from the pre-bake read
at ``t_pre``:

    ``ln(σ_post / σ_pre) = c_L · ln(t / t_pre) + η_e + ν_{e,L}``,
    ``ln(μ_post / μ_pre) = m_L · ln(t / t_pre) + η'_e + ν'_{e,L}``,

one growth exponent ``c_L`` (and drift exponent ``m_L``) per level, an effect ``η_e`` per
bake experiment shared by its levels (experiments at one temperature differ: calibration
data) and a level-to-level residual ``ν``. The exponents are least-squares estimates (closed
form, no intercept: nothing changes at ``t = t_pre``); the two variance components come
from the residuals by the method of moments, less the sampling variance of a measured
ln σ (``1/(2(n−1))``) or ln μ. A prediction for a new bake is normal in ln σ with the
exponent's variance, both components and the new read's sampling variance; the share of
cells read outside their level window ("misread") follows from the predicted mean and
spread with a normal law — for a level open above or below (one window edge), only the
finite edge counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import CalibrationError

__all__ = ["BakePoint", "BakeLaw", "bake_points", "fit_bake_law", "misread_fraction"]


@dataclass(frozen=True)
class BakePoint:
    """One (bake experiment, level): reads before and after, in conductance (S)."""

    experiment: str
    level: int
    age_s: float             #: Arrhenius-equivalent age at the post-bake read (s at T_ref)
    prebake_age_s: float
    n_pre: int
    n_post: int
    mean_pre_S: float
    mean_post_S: float
    std_pre_S: float
    std_post_S: float
    window_S: tuple[float, float] | None = None   #: level window [lo, hi] (S); lo 0 / hi inf: open
    misread_pre: float | None = None
    misread_post: float | None = None
    pre_reads_S: tuple[float, ...] = field(default=(), repr=False, compare=False)  #: the pre-bake reads (S)


def bake_points(reads: Any, experiments: Sequence[str], equivalent_time_s: Any, prebake_age_s: float,
                windows_ohm: Sequence[tuple[float, float]] | None = None) -> list[BakePoint]:
    """Per experiment and level of a tidy reads table (``device``, ``target_level``,
    ``read_value_ohm``, ``time_s``: 0 before the bake, the bake's duration after it,
    ``temperature_K``): the pre- and post-bake statistics; ``equivalent_time_s(t, T)`` maps
    a bake to seconds at the reference temperature. ``windows_ohm``: the levels' read
    windows [lo, hi] (Ω; hi inf = open) for the misread fractions."""
    out = []
    for e in experiments:
        d = reads[reads.device == e]
        pre, post = d[d.time_s == 0], d[d.time_s > 0]
        if pre.empty or post.empty or post.temperature_K.isna().any():
            raise CalibrationError(f"{e}: needs pre-bake reads and post-bake reads with a stated temperature")
        age = prebake_age_s + float(equivalent_time_s(float(post.time_s.iloc[0]), float(post.temperature_K.iloc[0])))
        for level in sorted(set(pre.target_level) & set(post.target_level)):
            gp = 1.0 / pre.read_value_ohm[pre.target_level == level].to_numpy(dtype=float)
            gq = 1.0 / post.read_value_ohm[post.target_level == level].to_numpy(dtype=float)
            win, mis = None, (None, None)
            if windows_ohm is not None:
                lo_ohm, hi_ohm = windows_ohm[int(level)]
                win = (0.0 if math.isinf(hi_ohm) else 1.0 / hi_ohm, math.inf if lo_ohm == 0 else 1.0 / lo_ohm)
                mis = tuple(float(np.mean((g < win[0]) | (g > win[1]))) for g in (gp, gq))
            out.append(BakePoint(e, int(level), age, prebake_age_s, gp.size, gq.size, float(gp.mean()),
                                 float(gq.mean()), float(gp.std(ddof=1)), float(gq.std(ddof=1)), win, *mis,
                                 pre_reads_S=tuple(gp.tolist())))
    return out


def misread_fraction(mean_S: Any, std_S: Any, window_S: tuple[float, float]) -> np.ndarray:
    """P(read outside [lo, hi]) for a normal read with this mean and spread (S); an open
    edge (lo 0, hi inf) never misreads."""
    from scipy.stats import norm

    lo, hi = window_S
    m, s = np.asarray(mean_S, dtype=np.float64), np.asarray(std_S, dtype=np.float64)
    below = norm.cdf((lo - m) / s) if lo > 0 else 0.0
    above = norm.sf((hi - m) / s) if math.isfinite(hi) else 0.0
    return below + above


@dataclass
class _Component:
    """One law (spread or mean): per-level exponent, its variance, and the two components."""

    exponent: dict[int, float]
    exponent_var: dict[int, float]
    sd_experiment: float
    sd_level: float


@dataclass
class BakeLaw:
    """Result of :func:`fit_bake_law` (see the module docstring)."""

    spread: _Component
    mean: _Component
    experiments: list[str]
    points: list[BakePoint] = field(default_factory=list, repr=False)

    def predict(self, level: int, age_s: float, prebake_age_s: float, mean_pre_S: float, std_pre_S: float,
                n_post: int, levels: Sequence[float] = (0.5, 0.8, 0.95),
                window_S: tuple[float, float] | None = None, pre_reads_S: Sequence[float] = ()) -> dict[str, Any]:
        """A new bake's post-bake spread and mean of ``level`` at Arrhenius-equivalent age
        ``age_s`` from its pre-bake statistics: medians, central intervals at ``levels``
        (normal in ln σ and ln μ: exponent, experiment and level components, the ``n_post``
        reads' sampling) and, with ``window_S``, the misread fraction at the median
        prediction — with ``pre_reads_S`` from the pre-bake reads' own shape (each read
        moved to the predicted mean and scaled to the predicted spread: a level open above
        or below keeps its one-sided, skewed distribution), else from a normal law."""
        from scipy.stats import norm

        if level not in self.spread.exponent:
            raise CalibrationError(f"level {level} is not in the bake law (it has {sorted(self.spread.exponent)})")
        h = math.log(age_s / prebake_age_s)
        out: dict[str, Any] = {"level": level, "age_s": age_s}
        for name, comp, base, sampling in (("std_post_S", self.spread, std_pre_S, 1.0 / (2 * max(n_post - 1, 1))),
                                           ("mean_post_S", self.mean, mean_pre_S, 0.0)):
            centre = math.log(base) + comp.exponent[level] * h
            var = comp.exponent_var[level] * h * h + comp.sd_experiment ** 2 + comp.sd_level ** 2 + sampling
            d = {"median": math.exp(centre), "sd_log": math.sqrt(var)}
            for lv in levels:
                z = float(norm.ppf(0.5 + lv / 2)) * math.sqrt(var)
                d[f"interval{round(100 * lv)}"] = [math.exp(centre - z), math.exp(centre + z)]
            out[name] = d
        if window_S is not None:
            m, sd = out["mean_post_S"]["median"], out["std_post_S"]["median"]
            if len(pre_reads_S) > 1:
                g = np.asarray(pre_reads_S, dtype=np.float64)
                moved = m + (g - g.mean()) * sd / g.std(ddof=1)
                out["misread_post"] = float(np.mean((moved < window_S[0]) | (moved > window_S[1])))
            else:
                out["misread_post"] = float(misread_fraction(m, sd, window_S))
        return out

    def std_at(self, level: int, age_s: float, prebake_age_s: float, std_pre_S: float) -> float:
        """The law's median spread (S) of ``level`` at age ``age_s``."""
        return float(std_pre_S * (age_s / prebake_age_s) ** self.spread.exponent[level])

    def mean_at(self, level: int, age_s: float, prebake_age_s: float, mean_pre_S: float) -> float:
        """The law's median mean (S) of ``level`` at age ``age_s`` (``mean_pre_S`` before the
        bake's read; held at it before ``prebake_age_s``)."""
        return float(mean_pre_S * (max(age_s, prebake_age_s) / prebake_age_s) ** self.mean.exponent[level])

    def mean_shift_rows_uS(self, times_s: Sequence[float], prebake_age_s: float, levels: Sequence[int],
                           mean_pre_S: Sequence[float], g_scale: float = 1.0) -> list[list[float]]:
        """A card's ``[relaxation] mean_uS`` rows: per time, per level (in the card's knot
        order) the law's mean shift ``mean_at − mean_pre`` in µS, divided by ``g_scale``
        (g_max/g_ref: rows are in µS at the card's g_ref)."""
        return [[(self.mean_at(int(lv), float(t), prebake_age_s, float(m)) - float(m)) * 1e6 / g_scale
                 for lv, m in zip(levels, mean_pre_S)] for t in times_s]

    def summary(self) -> dict[str, Any]:
        return {"experiments": self.experiments,
                "spread_exponent": {str(k): v for k, v in self.spread.exponent.items()},
                "spread_exponent_se": {str(k): math.sqrt(v) for k, v in self.spread.exponent_var.items()},
                "spread_sd_experiment": self.spread.sd_experiment, "spread_sd_level": self.spread.sd_level,
                "mean_exponent": {str(k): v for k, v in self.mean.exponent.items()},
                "mean_exponent_se": {str(k): math.sqrt(v) for k, v in self.mean.exponent_var.items()},
                "mean_sd_experiment": self.mean.sd_experiment, "mean_sd_level": self.mean.sd_level}


def _fit_component(points: list[BakePoint], y: np.ndarray, sampling: np.ndarray) -> _Component:
    h = np.array([math.log(p.age_s / p.prebake_age_s) for p in points])
    levels = np.array([p.level for p in points])
    exps = np.array([p.experiment for p in points])
    slope = {}
    for L in sorted(set(levels.tolist())):
        sel = levels == L
        slope[L] = float(h[sel] @ y[sel] / (h[sel] @ h[sel]))
    r = y - np.array([slope[L] for L in levels]) * h
    names = sorted(set(exps.tolist()))
    eta = {e: float(r[exps == e].mean()) for e in names}
    within = r - np.array([eta[e] for e in exps])
    n_l = len(set(levels.tolist()))
    dof = max(len(r) - len(names) - len(slope), 1)
    s_level2 = max(float(within @ within) / dof - float(np.mean(sampling)), 0.0)
    s_exp2 = max(float(np.var(list(eta.values()), ddof=1)) - (s_level2 + float(np.mean(sampling))) / n_l, 0.0) \
        if len(names) > 1 else 0.0
    resid_var = s_exp2 + s_level2 + float(np.mean(sampling))
    var = {L: resid_var / float(h[levels == L] @ h[levels == L]) for L in slope}  # OLS without intercept
    return _Component(slope, var, math.sqrt(s_exp2), math.sqrt(s_level2))


def fit_bake_law(points: list[BakePoint]) -> BakeLaw:
    """Fit the spread and mean laws to bake points of at least two experiments.

    Raises :class:`~analogmem.errors.CalibrationError` with fewer than two experiments, or
    a point whose post-bake age is not after its pre-bake read."""
    exps = sorted({p.experiment for p in points})
    if len(exps) < 2:
        raise CalibrationError(f"the bake law needs bakes of at least 2 experiments, got {exps}")
    bad = [p for p in points if not p.age_s > p.prebake_age_s or min(p.n_pre, p.n_post) < 2]
    if bad:
        raise CalibrationError(f"bake point {bad[0].experiment} level {bad[0].level}: needs age_s > prebake_age_s "
                               "and at least 2 reads before and after")
    ys = np.array([math.log(p.std_post_S / p.std_pre_S) for p in points])
    ss = np.array([1 / (2 * (p.n_pre - 1)) + 1 / (2 * (p.n_post - 1)) for p in points])
    ym = np.array([math.log(p.mean_post_S / p.mean_pre_S) for p in points])
    sm = np.array([(p.std_pre_S / p.mean_pre_S) ** 2 / p.n_pre + (p.std_post_S / p.mean_post_S) ** 2 / p.n_post
                   for p in points])
    return BakeLaw(_fit_component(points, ys, ss), _fit_component(points, ym, sm), exps, points)
