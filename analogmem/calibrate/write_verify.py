"""Calibrating program-and-verify and bake spread from measured write-verify traces.

Two fits, both generic over the tidy tables of ``scripts/cards/`` (nothing here knows a
particular lab's grids):

* :func:`fit_write_verify` — per verify window (level), the *pulse-response model* of a
  card's ``[write_verify]`` table (:class:`~analogmem.emulator.cells.PulseResponse`): the pulses a
  cell needs are ``T = offset + X`` with ``X`` a mixture of K geometric distributions on
  {0, 1, …} (cells of different responsiveness), fitted by EM with the failed cells as
  right-censored (``X > observed``), K ∈ {1, …, max_components} chosen by BIC; the offset is
  the fewest pulses any cell of the level took (the maximum-likelihood shift). The final
  conductance of a verified cell comes from the level's empirical quantile function of ln g.
* :func:`spread_table` — per level and time after programming, the read spread (standard
  deviation of g, S) of measured reads, for a card's ``[relaxation] model =
  "table-log-time"`` table.

Tidy write-verify table: one row per programmed cell with ``target_level``,
``window_lo_ohm``, ``window_hi_ohm`` (inf: open above), ``read_value_ohm`` (final read),
``pulses`` (every pulse applied, ≥ 0) and ``success`` (bool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._io import save_figure
from ..errors import CalibrationError
from .tidy import load_table

__all__ = ["GeometricMixture", "fit_geometric_mixture", "WriteVerifyFit", "fit_write_verify",
           "read_write_verify", "overlapping_windows", "spread_table", "WRITE_VERIFY_COLUMNS",
           "OPTIONAL_WRITE_VERIFY_COLUMNS", "window_columns_S"]

WRITE_VERIFY_COLUMNS = ("target_level", "window_lo_ohm", "window_hi_ohm", "read_value_ohm", "pulses", "success")
#: Optional columns (the shared model's run, start state and scheme); see :func:`read_write_verify`.
OPTIONAL_WRITE_VERIFY_COLUMNS = ("experiment", "prior_programs", "scheme", "step_V", "max_pulses")
_P_MAX = 1.0 - 1e-12


@dataclass(frozen=True)
class GeometricMixture:
    """Pulses ``T = offset + X``, ``X ~ Σ_k weights[k]·Geometric₀(p_hit[k])`` on {0, 1, …}
    (``P(X = x) = p(1−p)^x``). ``loglik`` of the data, ``bic`` = −2·loglik + (2K−1)·ln n,
    ``candidates``: (K, loglik, bic) of every K tried."""

    weights: tuple[float, ...]
    p_hit: tuple[float, ...]
    offset: int
    loglik: float
    bic: float
    n: int
    candidates: tuple[tuple[int, float, float], ...] = ()

    def mean(self, max_pulses: int | None = None) -> float:
        """E[T] (``max_pulses`` None) or E[min(T, max_pulses)]."""
        total = 0.0
        for w, p in zip(self.weights, self.p_hit):
            if max_pulses is None:
                total += w * (self.offset + (1 - p) / p)
            else:
                n = max(int(max_pulses) - self.offset, 0)
                total += w * (min(self.offset, int(max_pulses)) + (1 - p) * (1 - (1 - p) ** n) / p)
        return total

    def survival(self, t: np.ndarray) -> np.ndarray:
        """P(T > t) for integer pulse counts ``t``."""
        t = np.asarray(t, dtype=np.float64)
        out = np.zeros(t.shape)
        for w, p in zip(self.weights, self.p_hit):
            out += w * np.where(t < self.offset, 1.0, (1 - p) ** (t - self.offset + 1))
        return out


def _em(x: np.ndarray, censored: np.ndarray, k: int, n_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    exact = x[~censored] if np.any(~censored) else x
    p = 1.0 / (np.quantile(exact, np.linspace(0.2, 0.95, k)) + 2.0) if k > 1 else np.array([1.0 / (x.mean() + 1.0)])
    p = np.clip(p, 1e-12, _P_MAX)
    w = np.full(k, 1.0 / k)
    xc = x[:, None]
    ll_old = -math.inf
    ll = -math.inf
    for _ in range(n_iter):
        log_q = np.log1p(-p)
        lp = np.where(censored[:, None], (xc + 1.0) * log_q, np.log(p) + xc * log_q) + np.log(np.maximum(w, 1e-300))
        m = lp.max(axis=1, keepdims=True)
        r = np.exp(lp - m)
        s = r.sum(axis=1, keepdims=True)
        ll = float(np.sum(m[:, 0] + np.log(s[:, 0])))
        r /= s
        expected = np.where(censored[:, None], xc + 1.0 + (1.0 - p) / p, xc)  # E[X | data, k] (memoryless)
        w = r.mean(axis=0)
        p = np.clip(r.sum(axis=0) / np.maximum((r * (expected + 1.0)).sum(axis=0), 1e-300), 1e-12, _P_MAX)
        if ll - ll_old <= tol * abs(ll):
            break
        ll_old = ll
    return w, p, ll


def fit_geometric_mixture(pulses: Any, success: Any, max_components: int = 3, n_iter: int = 1000,
                          tol: float = 1e-10) -> GeometricMixture:
    """Fit the pulse-count model of one level.

    Args:
        pulses: pulses applied per cell (integers ≥ 0), shape (n,).
        success: whether each cell ended in its window, shape (n,); failures are treated as
            right-censored (the cell would have needed more pulses than it got).
        max_components: largest K tried (1..4); BIC picks K.

    Raises:
        CalibrationError: empty input, shapes that differ, negative or non-integer pulses,
            or no successful cell (nothing to fit a hit probability to).
    """
    t = np.asarray(pulses, dtype=np.float64).reshape(-1)
    ok = np.asarray(success).reshape(-1).astype(bool)
    if t.size == 0 or t.shape != ok.shape:
        raise CalibrationError(f"need one success flag per pulse count, got {t.size} counts and {ok.size} flags")
    bad = ~np.isfinite(t) | (t < 0) | (t != np.round(t))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise CalibrationError(f"pulses[{i}] = {t[i]!r} is not a non-negative integer")
    if not np.any(ok):
        raise CalibrationError("no cell of this level succeeded: the pulse-response model needs successes")
    if not 1 <= max_components <= 4:
        raise CalibrationError(f"max_components must be 1..4, got {max_components}")
    offset = int(t[ok].min())  # the ML shift: a failure bounds T from below only
    cens = ~ok
    x = np.where(cens, np.maximum(t - offset, -1.0), t - offset)  # P(X > -1) = 1
    best = None
    cands = []
    for k in range(1, max_components + 1):
        w, p, ll = _em(x, cens, k, n_iter, tol)
        bic = -2.0 * ll + (2 * k - 1) * math.log(t.size)
        cands.append((k, ll, bic))
        if best is None or bic < best[3]:
            best = (w, p, ll, bic)
    w, p, ll, bic = best
    keep = w > 1e-9
    w, p = w[keep] / w[keep].sum(), p[keep]
    order = np.argsort(-p)  # fast responders first
    return GeometricMixture(tuple(float(v) for v in w[order]), tuple(float(v) for v in p[order]), offset,
                            float(ll), float(bic), int(t.size), tuple(cands))


def read_write_verify(data: Any, min_cells_per_level: int = 20) -> Any:
    """Load and validate a tidy write-verify table (CSV path or DataFrame).

    Raises :class:`CalibrationError` naming the column and first offending row for a
    missing column, a non-numeric/NaN value, a non-positive resistance, a negative pulse
    count, or a level with fewer than ``min_cells_per_level`` cells. The optional columns
    (``OPTIONAL_WRITE_VERIFY_COLUMNS``) are validated and filled with their defaults:
    ``experiment`` (the run; default the ``device`` column, else one run), ``prior_programs``
    (programs of the cell into the same window directly before this one; default 0),
    ``scheme`` (default "default"), ``step_V`` (ISPP step, V; empty for none) and
    ``max_pulses`` (the row's pulse budget; empty for none seen)."""
    import pandas as pd

    df, label = load_table(data, "write-verify table")
    missing = [c for c in WRITE_VERIFY_COLUMNS if c not in df.columns]
    if missing:
        raise CalibrationError(f"{label}: missing column(s) {missing}; has {list(df.columns)}")
    for col in WRITE_VERIFY_COLUMNS:
        if col == "success":
            v = df[col].map(lambda s: {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}.get(str(s).strip().lower(), np.nan))
        else:
            v = pd.to_numeric(df[col], errors="coerce")
        arr = v.to_numpy(dtype=float)
        bad = np.isnan(arr)
        if col in ("read_value_ohm",):
            bad |= ~(arr > 0) | np.isinf(arr)
        if col in ("window_lo_ohm",):
            bad |= ~(arr >= 0) | np.isinf(arr)
        if col == "window_hi_ohm":
            bad |= ~(arr > df["window_lo_ohm"].to_numpy(dtype=float))
        if col in ("pulses", "target_level"):
            bad |= (arr < 0) | (arr != np.round(arr))
        if bad.any():
            row = int(np.argmax(bad))
            raise CalibrationError(f"{label}: column {col!r}, row {row}: {df[col].iloc[row]!r} is not valid")
        df[col] = arr.astype(bool) if col == "success" else (arr.astype(int) if col in ("pulses", "target_level")
                                                            else arr)
    _optional_columns(df, label)
    counts = df.groupby("target_level").size()
    few = counts[counts < min_cells_per_level]
    if len(few):
        raise CalibrationError(f"{label}: level {int(few.index[0])} has {int(few.iloc[0])} cells "
                               f"(at least {min_cells_per_level} needed)")
    return df


def _optional_columns(df: Any, label: str) -> None:
    """Validate (in place) and default the optional columns of the shared model: ``experiment``
    (the run; default the ``device`` column, else one run), ``prior_programs`` (integer >= 0,
    default 0), ``scheme`` (default "default"), ``step_V`` (> 0 or empty) and ``max_pulses``
    (>= 1 or empty)."""
    import pandas as pd

    if "experiment" not in df.columns:
        df["experiment"] = df["device"].astype(str) if "device" in df.columns else "run"
    df["experiment"] = df["experiment"].astype(str)
    df["scheme"] = df["scheme"].astype(str) if "scheme" in df.columns else "default"
    checks = {"prior_programs": (0.0, False, True), "step_V": (np.nan, True, False),
              "max_pulses": (np.nan, True, True)}
    for col, (default, may_be_empty, integer) in checks.items():
        if col not in df.columns:
            df[col] = default
            continue
        arr = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        empty = df[col].isna().to_numpy() | (df[col].astype(str).str.strip() == "").to_numpy()
        bad = np.isnan(arr) & ~(empty & may_be_empty)
        fin = np.isfinite(arr)
        bad |= fin & ((arr < 0) | ((arr <= 0) & (col != "prior_programs")) | (integer & (arr != np.round(arr))))
        bad |= np.isinf(arr) & (col != "max_pulses")
        if bad.any():
            row = int(np.argmax(bad))
            raise CalibrationError(f"{label}: column {col!r}, row {row}: {df[col].iloc[row]!r} is not valid")
        df[col] = arr.astype(int) if col == "prior_programs" else arr


def overlapping_windows(df: Any, by: str | None = "experiment") -> list[str]:
    """Every pair of different but overlapping verify windows (Ω) in a tidy write-verify
    table, within each value of column ``by`` (None: the whole table), as text lines."""
    groups = [(None, df)] if by is None else list(df.groupby(by, sort=True))
    out = []
    for key, g in groups:
        wins = sorted(set(zip(g.window_lo_ohm.tolist(), g.window_hi_ohm.tolist())))
        levels = {w: sorted(set(g.target_level[(g.window_lo_ohm == w[0]) & (g.window_hi_ohm == w[1])].tolist()))
                  for w in wins}
        for i, a in enumerate(wins):
            for b in wins[i + 1:]:
                if b[0] < a[1] and a[0] < b[1]:
                    where = "" if key is None else f"{by} {key!r}: "
                    out.append(f"{where}[{a[0]:g}, {a[1]:g}] Ohm (level {levels[a]}) and [{b[0]:g}, {b[1]:g}] Ohm "
                               f"(level {levels[b]})")
    return out


@dataclass
class WriteVerifyFit:
    """Result of :func:`fit_write_verify`: per level (sorted by level index) the window (S),
    the pulse model, the verified-value quantiles of ln(g/S) and a report row."""

    levels: list[int]
    window_lo_S: list[float]
    window_hi_S: list[float]
    mixtures: list[GeometricMixture]
    probabilities: list[float]
    log_g_quantiles: list[list[float]]
    max_pulses: int
    report: list[dict[str, Any]] = field(default_factory=list)

    def card_table(self) -> dict[str, Any]:
        """The ``[write_verify]`` table of a device card."""
        return {"model": "geometric-mixture", "max_pulses": self.max_pulses,
                "window_lo_S": self.window_lo_S, "window_hi_S": self.window_hi_S,
                "weights": [list(m.weights) for m in self.mixtures], "p_hit": [list(m.p_hit) for m in self.mixtures],
                "offset_pulses": [m.offset for m in self.mixtures], "probabilities": self.probabilities,
                "log_g_quantiles": self.log_g_quantiles}

    @property
    def verified_std_S(self) -> np.ndarray:
        """Standard deviation (S) of the conductance of verified cells, per level."""
        return np.array([r["verified_g_std_S"] for r in self.report])

    def card(self, name: str, source: str) -> dict[str, Any]:
        """A device card (as a dict for ``tomli_w``) that programs these levels with this
        pulse-response model: input conductance (S), ``g_max_S`` just above the largest
        verified conductance, programming noise σ_P = the median verified spread (a write
        without verify is not in such data), no time dependence, and the fit report."""
        return write_verify_card(name, source, "write-verify pulse-response model fitted by "
                                 "analogmem.calibrate.write_verify", self.log_g_quantiles,
                                 float(np.median(self.verified_std_S)), self.card_table(), self.report)

    def plot(self, path: Any) -> Any:
        """PNG: per level, mean pulses and success rate, data vs the fitted model (budget
        ``max_pulses``), and the pulse-count survival functions."""
        from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state


        fig = Figure(figsize=(11, 4))
        ax = fig.subplots(1, 2)
        lv = np.array(self.levels)
        ax[0].bar(lv - 0.2, [r["pulses_mean_data"] for r in self.report], 0.4, label="data")
        ax[0].bar(lv + 0.2, [r["pulses_mean_model"] for r in self.report], 0.4, label="model")
        ax[0].set(xlabel="level", ylabel="mean pulses per cell", title="pulses per level")
        ax[0].legend()
        t = np.arange(0, self.max_pulses + 1)
        for lvl, mix in zip(self.levels, self.mixtures):
            ax[1].loglog(t + 1, mix.survival(t), label=f"level {lvl}")
        ax[1].set(xlabel="pulses + 1", ylabel="P(pulses > t)", title="fitted pulse-count survival")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, path)

    @property
    def median_S(self) -> np.ndarray:
        """Median conductance (S) of verified cells per level."""
        q = np.asarray(self.log_g_quantiles)
        return np.exp(np.array([np.interp(0.5, self.probabilities, row) for row in q]))


def window_columns_S(df: Any) -> tuple[np.ndarray, np.ndarray]:
    """Conductance windows ``[1/hi, 1/lo]`` (S) of a tidy table's resistance windows (Ω); an
    open resistance bound becomes 0 S (``hi = inf`` Ω) or inf (``lo = 0`` Ω)."""
    lo_ohm = df.window_lo_ohm.to_numpy(dtype=float)
    hi_ohm = df.window_hi_ohm.to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(np.isinf(hi_ohm), 0.0, 1.0 / hi_ohm), np.where(lo_ohm == 0, np.inf, 1.0 / lo_ohm)


def write_verify_card(name: str, source: str, description: str, log_g_quantiles: Any, sigma_p_S: float,
                      write_verify: dict[str, Any], report: Any) -> dict[str, Any]:
    """A device card (dict for ``tomli_w``) that programs with a ``[write_verify]`` table:
    input conductance (S), ``g_max_S`` just above the largest verified conductance (the
    largest of ``log_g_quantiles``, ln S), programming noise σ_P = ``sigma_p_S`` (a write
    without verify is not in write-verify data), no time dependence, and the fit report."""
    g_max = math.ceil(float(np.exp(np.max(log_g_quantiles))) * 1e6) * 1e-6
    return {
        "card": {"name": name, "schema_version": 1, "technology": "calibrated", "input": "conductance",
                 "description": description},
        "source": {"citation": source or "measured write-verify traces (tidy table)"},
        "range": {"g_min_S": 0.0, "g_max_S": g_max, "clip_min_S": 0.0, "clip_max_S": math.inf},
        "programming": {"model": "polynomial", "g_ref_S": g_max, "coefficients_uS": [sigma_p_S * 1e6]},
        "drift": {"model": "none"}, "read_noise": {"model": "none"}, "relaxation": {"model": "none"},
        "faults": {"p_stuck_low": 0.0, "p_stuck_high": 0.0},
        "write_verify": write_verify,
        "fit_report": {"write_verify": report},
    }


def fit_write_verify(data: Any, max_components: int = 3, n_quantiles: int = 41,
                     max_pulses: int | None = None, min_cells_per_level: int = 20) -> WriteVerifyFit:
    """Fit the pulse-response model of every level of a tidy write-verify table.

    All rows of one level must share one window (a card has one window per level); the
    default pulse budget is the most pulses any cell took. Windows in Ω become
    conductance windows ``[1/hi, 1/lo]`` S (an open resistance bound becomes 0 S or inf).
    """
    df = read_write_verify(data, min_cells_per_level)
    probs = np.linspace(0.0, 1.0, n_quantiles)
    fit = WriteVerifyFit([], [], [], [], [float(v) for v in probs], [], 0)
    disagree = [f"level {lv}: " + ", ".join(f"[{a:g}, {b:g}] Ohm" for a, b in sorted(set(zip(g.window_lo_ohm,
                                                                                            g.window_hi_ohm))))
                for lv, g in df.groupby("target_level", sort=True) if len(set(zip(g.window_lo_ohm, g.window_hi_ohm))) > 1]
    if disagree:
        raise CalibrationError("the per-window model needs one window per level, but " + "; ".join(disagree)
                               + ": fit one set of windows (one experiment) at a time, or fit the shared model "
                               "(fit_pulse_response, analogmem calibrate --model write-verify), which takes any windows")
    for level, g in df.groupby("target_level", sort=True):
        lo_ohm, hi_ohm = np.unique(g.window_lo_ohm), np.unique(g.window_hi_ohm)
        mix = fit_geometric_mixture(g.pulses.to_numpy(), g.success.to_numpy(), max_components)
        ok = g[g.success]
        log_g = np.log(1.0 / ok.read_value_ohm.to_numpy())
        fit.levels.append(int(level))
        fit.window_lo_S.append(0.0 if np.isinf(hi_ohm[0]) else float(1.0 / hi_ohm[0]))
        fit.window_hi_S.append(math.inf if lo_ohm[0] == 0 else float(1.0 / lo_ohm[0]))
        fit.mixtures.append(mix)
        fit.log_g_quantiles.append([float(v) for v in np.quantile(log_g, probs)])
        fit.report.append({
            "level": int(level), "n_cells": int(len(g)), "window_lo_ohm": float(lo_ohm[0]),
            "window_hi_ohm": float(hi_ohm[0]), "pulses_mean_data": float(g.pulses.mean()),
            "pulses_median_data": float(g.pulses.median()), "pulses_max_data": int(g.pulses.max()),
            "success_rate_data": float(g.success.mean()), "components": len(mix.weights),
            "weights": list(mix.weights), "p_hit": list(mix.p_hit), "offset_pulses": mix.offset,
            "bic_by_components": {str(k): bic for k, _, bic in mix.candidates},
            "verified_g_mean_S": float(np.exp(log_g).mean()), "verified_g_std_S": float(np.exp(log_g).std(ddof=1)),
        })
    if [lvl for lvl in fit.levels] != list(range(len(fit.levels))):
        raise CalibrationError(f"levels must be numbered 0..{len(fit.levels) - 1} without gaps, got {fit.levels}")
    fit.max_pulses = int(df.pulses.max()) if max_pulses is None else int(max_pulses)
    for row, mix in zip(fit.report, fit.mixtures):
        row["pulses_mean_model"] = mix.mean(fit.max_pulses)
        row["success_rate_model"] = float(1.0 - mix.survival(np.array([fit.max_pulses]))[0])
    return fit


def spread_table(reads: Any, level_column: str = "target_level", value_column: str = "read_value_ohm") -> Any:
    """Per level: number of reads, mean and standard deviation of the conductance (S) of a
    table of resistance reads (Ω). Returns a DataFrame indexed by level."""
    import pandas as pd

    df, _ = load_table(reads, "reads table")
    for col in (level_column, value_column):
        if col not in df.columns:
            raise CalibrationError(f"reads table lacks column {col!r}; has {list(df.columns)}")
    r = pd.to_numeric(df[value_column], errors="coerce").to_numpy(dtype=float)
    bad = ~(r > 0) | ~np.isfinite(r)
    if bad.any():
        row = int(np.argmax(bad))
        raise CalibrationError(f"reads table: column {value_column!r}, row {row}: {df[value_column].iloc[row]!r} "
                               "is not a positive resistance")
    g = pd.DataFrame({"level": df[level_column].to_numpy(), "g_S": 1.0 / r})
    return g.groupby("level").g_S.agg(n="size", mean_S="mean", std_S="std")
