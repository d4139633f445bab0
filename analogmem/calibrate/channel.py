"""The write channel (target → distribution of the value read after writing) calibrated
from a tidy table (see analogmem.calibrate.tidy).

:class:`WriteChannelCalibrator` fits the write channel — target → distribution of the value read
after writing — with several candidate models, validates each on reads held out from the
fit (a random fraction per level), keeps the best, and writes a device card (TOML) with the
fitted tables, units, source and a per-level fit report (n, mean, std, KS statistic and
p-value of every candidate), plus PNG plots of data against model.

Candidates (all in ln g, g the read conductance in S):

* ``gaussian``: per level a normal distribution (mean, std) — the usual log-normal model;
* ``empirical-w{W}``: per level a location (median) and scale (IQR/1.349), and the shape of
  the standardised residuals pooled over the ``2W+1`` neighbouring levels, stored as a
  quantile function (W = 0 is each level's own empirical distribution). Pooling trades a
  little bias for much less variance where neighbouring levels share a shape; W is chosen
  on held-out data, never fixed to a particular file's grid.

Validation: for each level, the KS distance D between the held-out reads (n_test) and the
model fitted on the other reads (n_fit). Two p-values are reported: ``pvalue_exact_model``
treats the fitted model as the true distribution (the plain one-sample KS test), and
``pvalue`` accounts for the model itself being estimated from n_fit reads, using the
two-sample null distribution of D with effective size n_test·n_fit/(n_test + n_fit) — for
an empirical model that is the exact null of "held-out and fitting reads come from one
distribution". The card keeps the candidate that the most levels accept at ``alpha`` by
``pvalue``, ties broken by the mean D, refitted on all reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .._io import atomic_write_text, save_figure
from .._seeding import SeedLike, as_generator
from .._version import __version__
from ..emulator.cells import INPUT_UNITS, DeviceModel, parse_card
from ..errors import CalibrationError
from .tidy import TARGET_COLUMNS, ColumnMap, log_conductance, read_tidy, screen_outliers

__all__ = ["WriteChannelCalibrator"]

# --------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class _Fit:
    """A fitted candidate: a quantile table of ln g per level, and each level's exact CDF."""

    name: str
    probabilities: np.ndarray          # (m,), 0 .. 1
    quantiles: np.ndarray              # (levels, m), ln g
    params: list[dict[str, float]]     # per level

    def cdf(self, k: int):
        if self.name == "gaussian":
            mu, sd = self.params[k]["mean"], self.params[k]["std"]
            return lambda y: stats.norm.cdf(y, mu, sd)
        return lambda y: np.interp(y, self.quantiles[k], self.probabilities, left=0.0, right=1.0)


def _fit_gaussian(samples: list[np.ndarray], n_quantiles: int) -> _Fit:
    z = np.linspace(-5.0, 5.0, n_quantiles - 2)
    probs = np.concatenate([[0.0], stats.norm.cdf(z), [1.0]])
    params, rows = [], []
    for y in samples:
        mu, sd = float(np.mean(y)), float(np.std(y, ddof=1))
        params.append({"mean": mu, "std": sd})
        rows.append(np.concatenate([[mu - 6 * sd], mu + sd * z, [mu + 6 * sd]]))
    return _Fit("gaussian", probs, np.array(rows), params)


def _robust_scale(y: np.ndarray) -> float:
    q75, q25 = np.percentile(y, [75, 25])
    s = (q75 - q25) / 1.349
    if s <= 0:
        s = float(np.std(y))
    return s if s > 0 else 1e-12


def _fit_pooled(samples: list[np.ndarray], window: int, n_quantiles: int) -> _Fit:
    probs = np.linspace(0.0, 1.0, n_quantiles)
    loc = [float(np.median(y)) for y in samples]
    scale = [_robust_scale(y) for y in samples]
    resid = [(y - m) / s for y, m, s in zip(samples, loc, scale)]
    rows, params = [], []
    for k in range(len(samples)):
        pooled = np.concatenate(resid[max(0, k - window): k + window + 1])
        row = loc[k] + scale[k] * np.quantile(pooled, probs)
        rows.append(np.maximum.accumulate(row))
        params.append({"median": loc[k], "scale": scale[k], "pooled_reads": int(pooled.size)})
    return _Fit(f"empirical-w{window}", probs, np.array(rows), params)


# --------------------------------------------------------------------------- calibrator
class WriteChannelCalibrator:
    """Fit a write channel (target → read distribution) from a tidy table.

    scikit-learn style: the constructor stores settings; :meth:`fit` validates the data and
    sets ``levels_``, ``fit_report_``, ``chosen_``, ``card_text_`` and ``device_model_``.

    Args:
        name: card name to write (default: ``"calibrated"``).
        source: citation/description of the data, stored in the card's ``[source]``.
        min_reads_per_level: fewer reads at any level is an error naming the level.
        holdout: fraction of each level's reads held out to validate the candidates.
        windows: pooling half-widths W tried for the empirical candidates.
        n_quantiles: knots of the stored quantile functions.
        alpha: level of the per-level KS tests that choose the model.
        seed: randomness of the hold-out split.
        columns: which columns of a lab's own table are the target and the read, and their
            units (:class:`~analogmem.calibrate.tidy.ColumnMap`); None: tidy names.
        drop_outliers: exclude implausible and far outlying reads
            (:func:`~analogmem.calibrate.tidy.screen_outliers`) and list them in the fit
            report (``dropped_``); False refuses a table that has any.
    """

    def __init__(self, name: str = "calibrated", source: str = "", *, min_reads_per_level: int = 20,
                 holdout: float = 0.5, windows: tuple[int, ...] = (0, 1, 2, 3), n_quantiles: int = 101,
                 alpha: float = 0.05, seed: SeedLike = 0, columns: ColumnMap | None = None,
                 drop_outliers: bool = False):
        self.name = name
        self.source = source
        self.min_reads_per_level = min_reads_per_level
        self.holdout = holdout
        self.windows = windows
        self.n_quantiles = n_quantiles
        self.alpha = alpha
        self.seed = seed
        self.columns = columns
        self.drop_outliers = drop_outliers

    # ------------------------------------------------------------------ fitting
    def _candidates(self, samples: list[np.ndarray]) -> list[_Fit]:
        return [_fit_gaussian(samples, self.n_quantiles)] + [
            _fit_pooled(samples, w, self.n_quantiles) for w in self.windows]

    def fit(self, data: Any) -> "WriteChannelCalibrator":
        """Fit the channel. ``data``: a tidy table (path or DataFrame, see :func:`read_tidy`)."""
        if not 0.0 < self.holdout < 1.0:
            raise CalibrationError(f"holdout must be in (0, 1), got {self.holdout}")
        df = read_tidy(data, **(self.columns or ColumnMap()).kwargs())
        target_col = next(c for c in TARGET_COLUMNS if c in df.columns)
        df, self.dropped_ = screen_outliers(df, [target_col], drop=self.drop_outliers)
        self.column_mapping_ = df.attrs["column_mapping"]
        self.input_ = TARGET_COLUMNS[target_col]
        y_all = log_conductance(df)
        targets = df[target_col].to_numpy(dtype=float)
        levels = np.unique(targets)
        samples = [y_all[targets == v] for v in levels]
        for v, y in zip(levels, samples):
            if y.size < self.min_reads_per_level:
                raise CalibrationError(f"level {target_col} = {v:g} has {y.size} reads; at least "
                                       f"{self.min_reads_per_level} are needed to fit it")
        rng = as_generator(self.seed)
        fit_part, test_part = [], []
        for y in samples:
            perm = rng.permutation(y.size)
            n_test = max(1, int(round(self.holdout * y.size)))
            test_part.append(y[perm[:n_test]])
            fit_part.append(y[perm[n_test:]])
        candidates = self._candidates(fit_part)
        report: list[dict[str, Any]] = []
        accepted = {c.name: 0 for c in candidates}
        accepted_exact = {c.name: 0 for c in candidates}
        mean_ks = {c.name: 0.0 for c in candidates}
        for k, v in enumerate(levels):
            row: dict[str, Any] = {"target": float(v), "n": int(samples[k].size), "n_fit": int(fit_part[k].size),
                                   "n_heldout": int(test_part[k].size),
                                   "mean_ln_g": float(np.mean(samples[k])), "std_ln_g": float(np.std(samples[k], ddof=1)),
                                   "ks": {}}
            n_t, n_f = test_part[k].size, fit_part[k].size
            n_eff = max(1, int(round(n_t * n_f / (n_t + n_f))))
            for c in candidates:
                res = stats.kstest(test_part[k], c.cdf(k))
                p = float(stats.kstwo.sf(res.statistic, n_eff))
                row["ks"][c.name] = {"statistic": float(res.statistic), "pvalue": p,
                                     "pvalue_exact_model": float(res.pvalue)}
                accepted[c.name] += int(p > self.alpha)
                accepted_exact[c.name] += int(res.pvalue > self.alpha)
                mean_ks[c.name] += float(res.statistic) / len(levels)
            report.append(row)
        chosen = max(candidates, key=lambda c: (accepted[c.name], -mean_ks[c.name])).name
        final = next(c for c in self._candidates(samples) if c.name == chosen)
        self.levels_ = levels
        self.samples_ = samples
        self.heldout_ = test_part
        self.fit_report_ = report
        self.summary_ = {name: {"levels_accepted": accepted[name], "levels": len(levels),
                                "fraction_accepted": accepted[name] / len(levels),
                                "levels_accepted_exact_model": accepted_exact[name],
                                "fraction_accepted_exact_model": accepted_exact[name] / len(levels),
                                "mean_ks": mean_ks[name]}
                         for name in accepted}
        self.chosen_ = chosen
        self.fit_ = final
        self.card_text_ = self._card_text(final, target_col)
        self.device_model_: DeviceModel = parse_card(self.card_text_, self.name)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "card_text_"):
            raise CalibrationError("this WriteChannelCalibrator is not fitted yet: call fit(data) first")

    # ------------------------------------------------------------------ output
    def _card_text(self, fit: _Fit, target_col: str) -> str:
        import tomli_w

        unit = INPUT_UNITS[self.input_]
        card = {
            "card": {"name": self.name, "schema_version": 1, "technology": "measured", "input": self.input_,
                     "description": f"Empirically calibrated write channel ({fit.name}); inputs in "
                                    f"{unit or 'level index'}, reads as ln(g / 1 S)."},
            "source": {"citation": self.source or "measured data", "calibrated_with": f"analogmem {__version__}",
                       "target_column": target_col,
                       "model_selection": f"held-out KS (alpha = {self.alpha}, holdout = {self.holdout})"},
            "range": {"clip_min_S": 0.0},
            "programming": {"model": "empirical", "fit": fit.name,
                            "inputs": [float(v) for v in self.levels_],
                            "probabilities": [float(p) for p in fit.probabilities],
                            "log_conductance_quantiles": [[float(q) for q in row] for row in fit.quantiles]},
            "drift": {"model": "none"}, "read_noise": {"model": "none"}, "relaxation": {"model": "none"},
            "faults": {"p_stuck_low": 0.0, "p_stuck_high": 0.0},
            "fit_report": {
                "chosen": fit.name,
                "column_mapping": self.column_mapping_,
                "dropped_reads": self.dropped_,
                "summary": self.summary_,
                "target": [r["target"] for r in self.fit_report_],
                "n": [r["n"] for r in self.fit_report_],
                "mean_ln_g": [r["mean_ln_g"] for r in self.fit_report_],
                "std_ln_g": [r["std_ln_g"] for r in self.fit_report_],
                "ks_statistic": {name: [r["ks"][name]["statistic"] for r in self.fit_report_] for name in self.summary_},
                "ks_pvalue": {name: [r["ks"][name]["pvalue"] for r in self.fit_report_] for name in self.summary_},
                "ks_pvalue_exact_model": {name: [r["ks"][name]["pvalue_exact_model"] for r in self.fit_report_]
                                          for name in self.summary_},
            },
        }
        return tomli_w.dumps(card)

    def write_card(self, path: str | Path) -> Path:
        """Write the fitted card (TOML) atomically; returns the path."""
        self._check_fitted()
        return atomic_write_text(path, f"# Written by `analogmem calibrate` (analogmem {__version__}).\n"
                                       + self.card_text_)

    def plot(self, path: str | Path) -> Path:
        """PNG: per-level quantile plot (held-out reads vs model), mean/std of ln g per
        level, and the KS p-value of each candidate per level."""
        self._check_fitted()
        from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

        fig = Figure(figsize=(17, 5))
        axes = fig.subplots(1, 3)
        ax = axes[0]
        n_levels = len(self.levels_)
        shown = np.unique(np.linspace(0, n_levels - 1, min(n_levels, 8)).round().astype(int))
        for k in shown:
            y = np.sort(self.heldout_[k])
            p = (np.arange(y.size) + 0.5) / y.size
            model = np.interp(p, self.fit_.probabilities, self.fit_.quantiles[k])
            m, sc = np.median(model), _robust_scale(model)
            ax.plot((model - m) / sc, (y - m) / sc, ".", ms=3, label=f"{self.levels_[k]:g}")
        lims = ax.get_xlim()
        ax.plot(lims, lims, "k:", lw=1)
        ax.set(title=f"Q-Q per level: held-out reads vs model ({self.chosen_})",
               xlabel="model quantile (standardised per level)", ylabel="held-out quantile (same scale)")
        ax.legend(title="target", fontsize=7)
        ax = axes[1]
        mean = [r["mean_ln_g"] for r in self.fit_report_]
        std = [r["std_ln_g"] for r in self.fit_report_]
        ax.errorbar(self.levels_, mean, yerr=std, fmt="o-", ms=3)
        ax.set(title="measured ln(g/S) per level (mean ± std)",
               xlabel=f"target ({INPUT_UNITS[self.input_] or 'level'})", ylabel="ln(g / S)")
        ax = axes[2]
        for name in self.summary_:
            pv = [r["ks"][name]["pvalue"] for r in self.fit_report_]
            ax.semilogy(self.levels_, np.maximum(pv, 1e-12), "o-" if name == self.chosen_ else ".:",
                        label=f"{name} ({self.summary_[name]['levels_accepted']}/{n_levels})", ms=4)
        ax.axhline(self.alpha, color="k", lw=1)
        ax.set(title="held-out KS p-value per level", xlabel=f"target ({INPUT_UNITS[self.input_] or 'level'})",
               ylabel="p-value")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = save_figure(fig, path, dpi=90)
        return out

    def summary_table(self) -> str:
        """A human-readable table of the candidates' held-out results."""
        self._check_fitted()
        lines = [f"held-out KS tests per level at alpha = {self.alpha}: levels accepted",
                 f"{'candidate':<14} {'model estimated':>16} {'model as exact':>15} {'mean D':>8}"]
        for name, s in self.summary_.items():
            mark = "  <- kept" if name == self.chosen_ else ""
            lines.append(f"{name:<14} {s['levels_accepted']:>12}/{s['levels']:<3} "
                         f"{s['levels_accepted_exact_model']:>11}/{s['levels']:<3} {s['mean_ks']:>8.4f}{mark}")
        return "\n".join(lines)


from .._deprecated import renamed as _renamed  # noqa: E402  (old public name, deprecated)

__getattr__ = _renamed(__name__, {"ChannelCalibrator": "WriteChannelCalibrator"}, globals())
