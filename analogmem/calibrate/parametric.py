"""Parametric calibration: σ(g, t) polynomials from conductance reads (README, "Device cards" and "Calibrating a card from your own cells").

For measurements with conductance targets (``target_S``) — the form of the published
cards (``rram-wan2022``, ``pcm-nandakumar2019``) — :class:`PolynomialCalibrator` fits

    σ(x, t) = Σ_k c_k(t) x^k   (µS at g_ref_S = g_max_S, x = g_T / g_max_S)

at every read time ``t`` of the table (column ``time_s``; a table without it is one time,
1 s): per target level the sample standard deviation s_L of the reads, then weighted least
squares of s_L on the polynomial with weights 2(n_L−1)/σ_L² (Var(s) ≈ σ²/(2(n−1)) for
normal reads), σ_L taken from the data first and then twice from the fit. The coefficient covariance is
(XᵀWX)⁻¹, so every coefficient comes with a standard error; the fit report also gives
per level the read bias (mean − target) and a χ² goodness of fit per time.

The card: targets limited to the measured span (``g_min_S`` = the smallest target: the
polynomials are not extrapolated below it); programming noise = σ(x, first time); with several times a
``polynomial-log-time`` relaxation table (σ interpolated in ln t between the read times,
held outside) — the same model as ``rram-wan2022``. Drift (a mean that moves with time)
is not fitted: the bias columns of the report show whether the data have any.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .._io import atomic_write_text
from ..emulator.cells import DeviceModel, parse_card
from ..errors import CalibrationError
from .tidy import ColumnMap, read_tidy, screen_outliers

__all__ = ["PolynomialCalibrator"]


def _wls(x: np.ndarray, s: np.ndarray, n: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients (low → high order), their covariance, and χ² of ``s ≈ poly(x)``."""
    X = np.vander(x, degree + 1, increasing=True)
    sigma = s.copy()
    for _ in range(3):
        w = 2.0 * (n - 1) / np.maximum(sigma, 1e-300) ** 2  # 1 / Var(s_L)
        A = X.T @ (w[:, None] * X)
        c = np.linalg.solve(A, X.T @ (w * s))
        sigma = np.maximum(X @ c, 0.05 * s.max())
    cov = np.linalg.inv(A)
    chi2 = float(np.sum(w * (s - X @ c) ** 2))
    return c, cov, chi2


class PolynomialCalibrator:
    """Fit σ(x, t) polynomials to reads with conductance targets (scikit-learn style).

    Args:
        name, source: card name and data description.
        degree: polynomial degree (the published cards use 2 for PCM, 4 for RRAM).
        g_max_S: the card's g_max (S); default: the largest target.
        min_reads_per_level: fewer reads at a (target, time) is an error naming it.
        columns: the target and read columns of a lab's own table and their units
            (:class:`~analogmem.calibrate.tidy.ColumnMap`); None: tidy names.
        drop_outliers: exclude implausible and far outlying reads (per target and time,
            :func:`~analogmem.calibrate.tidy.screen_outliers`) and list them (``dropped_``);
            False refuses a table that has any.

    After :meth:`fit`: ``coefficients_uS_`` (per time, low → high order), ``stderr_uS_``,
    ``times_s_``, ``fit_report_`` (per time and level), ``card_text_``, ``device_model_``.
    """

    def __init__(self, name: str = "calibrated", source: str = "", *, degree: int = 2,
                 g_max_S: float | None = None, min_reads_per_level: int = 20, columns: ColumnMap | None = None,
                 drop_outliers: bool = False):
        if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= 7:
            raise CalibrationError(f"degree must be an integer in 0..7 (cards hold at most 8 coefficients), got {degree!r}")
        self.name, self.source, self.degree = name, source, degree
        self.g_max_S, self.min_reads_per_level = g_max_S, min_reads_per_level
        self.columns, self.drop_outliers = columns, drop_outliers

    def fit(self, data: Any) -> "PolynomialCalibrator":
        df = read_tidy(data, **(self.columns or ColumnMap()).kwargs())
        if "target_S" not in df.columns:
            raise CalibrationError("a polynomial sigma(g) fit needs conductance targets (column target_S); "
                                   "use WriteChannelCalibrator for voltage or level targets")
        df, self.dropped_ = screen_outliers(df, ["target_S"] + (["time_s"] if "time_s" in df.columns else []),
                                            drop=self.drop_outliers)
        self.column_mapping_ = df.attrs["column_mapping"]
        if "read_value_S" in df.columns:
            g = df["read_value_S"].to_numpy(dtype=float)
        else:
            g = 1.0 / df["read_value_ohm"].to_numpy(dtype=float)
        target = df["target_S"].to_numpy(dtype=float)
        if np.any(target <= 0):
            row = int(np.argmax(target <= 0))
            raise CalibrationError(f"column 'target_S', row {row}: {target[row]!r} is not a positive conductance")
        time = df["time_s"].to_numpy(dtype=float) if "time_s" in df.columns else np.ones(len(df))
        if np.any(~(time > 0)):
            row = int(np.argmax(~(time > 0)))
            raise CalibrationError(f"column 'time_s', row {row}: {time[row]!r} is not a positive time")
        g_max = float(self.g_max_S or target.max())
        times = np.unique(time)
        levels = np.unique(target)
        if levels.size < self.degree + 2:
            raise CalibrationError(f"{levels.size} target levels cannot fit a degree-{self.degree} polynomial "
                                   f"with a goodness-of-fit test (need at least {self.degree + 2})")
        coefs, errs, report, chi2s = [], [], [], []
        for t in times:
            sel = time == t
            n_l, s_l, m_l = [], [], []
            for v in levels:
                y = g[sel & (target == v)]
                if y.size < self.min_reads_per_level:
                    raise CalibrationError(f"target_S = {v:g} at time_s = {t:g} has {y.size} reads; at least "
                                           f"{self.min_reads_per_level} are needed")
                if np.all(y == y[0]):
                    raise CalibrationError(f"target_S = {v:g} at time_s = {t:g}: all {y.size} reads are {y[0]:g} S "
                                           "(zero spread): a standard deviation cannot be fitted; are the reads "
                                           "quantised, copied or a placeholder?")
                n_l.append(y.size)
                s_l.append(y.std(ddof=1))
                m_l.append(y.mean())
            n_a, s_a, m_a = np.array(n_l, float), np.array(s_l), np.array(m_l)
            c, cov, chi2 = _wls(levels / g_max, s_a * 1e6, n_a, self.degree)
            coefs.append(c)
            errs.append(np.sqrt(np.diag(cov)))
            dof = levels.size - self.degree - 1
            chi2s.append({"time_s": float(t), "chi2": chi2, "dof": dof, "pvalue": float(stats.chi2.sf(chi2, dof))})
            fitted = np.polynomial.polynomial.polyval(levels / g_max, c)
            for v, n, s, m, f in zip(levels, n_a, s_a, m_a, fitted):
                report.append({"time_s": float(t), "target_S": float(v), "n": int(n), "mean_S": float(m),
                               "bias_S": float(m - v), "std_S": float(s), "sigma_fit_S": float(f * 1e-6)})
        x_grid = np.linspace(levels[0] / g_max, 1.0, 1001)
        if any(np.polynomial.polynomial.polyval(x_grid, c).min() < 0 for c in coefs):
            raise CalibrationError("the fitted sigma polynomial goes negative between the smallest target and "
                                   "g_max: lower the degree")
        self.g_min_S_ = float(levels[0])
        self.times_s_ = [float(t) for t in times]
        self.coefficients_uS_ = [[float(v) for v in c] for c in coefs]
        self.stderr_uS_ = [[float(v) for v in e] for e in errs]
        self.fit_report_ = report
        self.goodness_ = chi2s
        self.g_max_S_ = g_max
        self.card_text_ = self._card_text()
        self.device_model_: DeviceModel = parse_card(self.card_text_, self.name)
        return self

    def _card_text(self) -> str:
        import tomli_w

        card: dict[str, Any] = {
            "card": {"name": self.name, "schema_version": 1, "technology": "calibrated", "input": "conductance",
                     "description": f"sigma(x, t) polynomials of degree {self.degree} fitted by "
                                    "analogmem.calibrate.parametric.PolynomialCalibrator"},
            "source": {"citation": self.source or "measured reads (tidy table)"},
            "range": {"g_min_S": self.g_min_S_, "g_max_S": self.g_max_S_, "clip_min_S": 0.0, "clip_max_S": math.inf},
            "programming": {"model": "polynomial", "g_ref_S": self.g_max_S_, "coefficients_uS": self.coefficients_uS_[0]},
            "drift": {"model": "none"}, "read_noise": {"model": "none"},
            "relaxation": {"model": "none"},
            "faults": {"p_stuck_low": 0.0, "p_stuck_high": 0.0},
            "fit_report": {"coefficients_stderr_uS": self.stderr_uS_, "goodness": self.goodness_,
                           "column_mapping": self.column_mapping_, "dropped_reads": self.dropped_,
                           "levels": self.fit_report_},
        }
        if len(self.times_s_) > 1:
            card["relaxation"] = {"model": "polynomial-log-time", "g_ref_S": self.g_max_S_, "extrapolation": "hold",
                                  "times_s": self.times_s_, "coefficients_uS": self.coefficients_uS_}
        return tomli_w.dumps(card)

    def write_card(self, path: str | Path) -> Path:
        if not hasattr(self, "card_text_"):
            raise CalibrationError("this PolynomialCalibrator is not fitted yet: call fit(data) first")
        return atomic_write_text(path, self.card_text_)
