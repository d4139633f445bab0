"""Retention: Arrhenius time–temperature equivalence fitted to bake measurements.

A bake of ``t`` seconds at ``T`` kelvin ages cells like ``t · AF(T)`` seconds at the
reference temperature ``T_ref``, with the acceleration factor

    AF(T) = exp(E_a / k_B · (1/T_ref − 1/T)).

:func:`fit_arrhenius` fits E_a to a table of bit-error rates measured after bakes at
several temperatures and times (``bits_per_cell``, ``temperature_K``, ``time_s``, ``ber``):
per bits-per-cell group, log10 BER is a polynomial in log10 of the equivalent time, and
one activation energy shifts all temperatures onto that master curve (nonlinear least
squares; the standard error of E_a from the Jacobian). A device card can carry the result
(``[retention] model = "arrhenius"``) so that :meth:`analogmem.EmulatedBench.bake` emulates
"t seconds at T kelvin".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from .._io import save_figure
from ..emulator.cells import BOLTZMANN_eV_per_K, acceleration_factor
from ..errors import CalibrationError

__all__ = ["ArrheniusFit", "fit_arrhenius"]


@dataclass(frozen=True)
class ArrheniusFit:
    """Result of :func:`fit_arrhenius`.

    Attributes:
        activation_energy_eV, activation_energy_stderr_eV: E_a and its standard error.
        reference_temperature_K: T_ref of the equivalent times.
        curves: per bits-per-cell value, polynomial coefficients (high → low order) of
            log10 BER against log10(equivalent time at T_ref / s).
        rms_log10: RMS residual of log10 BER; ``n``: points fitted.
    """

    activation_energy_eV: float
    activation_energy_stderr_eV: float
    reference_temperature_K: float
    curves: dict[int, list[float]]
    rms_log10: float
    n: int
    data: Any = field(default=None, repr=False, compare=False)

    def equivalent_time_s(self, time_s: np.ndarray | float, temperature_K: np.ndarray | float) -> np.ndarray:
        """Seconds at ``T_ref`` equivalent to ``time_s`` at ``temperature_K``."""
        return np.asarray(time_s, dtype=np.float64) * acceleration_factor(
            temperature_K, self.activation_energy_eV, self.reference_temperature_K)

    def predict_ber(self, bits_per_cell: int, time_s: np.ndarray | float,
                    temperature_K: np.ndarray | float) -> np.ndarray:
        """Bit-error rate predicted after ``time_s`` at ``temperature_K``."""
        if bits_per_cell not in self.curves:
            raise CalibrationError(f"no retention curve for {bits_per_cell} bits per cell "
                                   f"(fitted: {sorted(self.curves)})")
        x = np.log10(self.equivalent_time_s(time_s, temperature_K))
        return 10.0 ** np.polyval(self.curves[bits_per_cell], x)

    def card_table(self) -> dict[str, Any]:
        """The ``[retention]`` table of a device card."""
        return {"model": "arrhenius", "activation_energy_eV": self.activation_energy_eV,
                "activation_energy_stderr_eV": self.activation_energy_stderr_eV,
                "reference_temperature_K": self.reference_temperature_K}

    def plot(self, path: str | Path) -> Path:
        """PNG: measured BER against bake time per temperature (left) and on the master
        curve of equivalent time at T_ref (right)."""
        from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

        d = self.data
        fig = Figure(figsize=(12, 4.5))
        axes = fig.subplots(1, 2)
        for (bpc, temp), grp in d.groupby(["bits_per_cell", "temperature_K"]):
            label = f"{bpc} b/cell, {temp:g} K"
            axes[0].loglog(grp["time_s"], grp["ber"], "o-", label=label)
            axes[1].loglog(self.equivalent_time_s(grp["time_s"], temp), grp["ber"], "o", label=label)
        for bpc, coef in self.curves.items():
            x = np.log10(self.equivalent_time_s(d["time_s"], d["temperature_K"]))
            xs = np.linspace(x.min(), x.max(), 100)
            axes[1].loglog(10 ** xs, 10 ** np.polyval(coef, xs), "k-", lw=1)
        axes[0].set(title="bit-error rate after bakes", xlabel="bake time (s)", ylabel="BER")
        axes[1].set(title=f"Arrhenius master curve: E_a = {self.activation_energy_eV:.3f} ± "
                          f"{self.activation_energy_stderr_eV:.3f} eV",
                    xlabel=f"equivalent time at {self.reference_temperature_K:g} K (s)", ylabel="BER")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        out = save_figure(fig, path, dpi=90)
        return out


def fit_arrhenius(table: Any, reference_temperature_K: float = 300.0, degree: int = 2,
                  initial_activation_energy_eV: float = 1.0) -> ArrheniusFit:
    """Fit one activation energy to bake measurements.

    Args:
        table: DataFrame or CSV path with columns ``bits_per_cell``, ``temperature_K``,
            ``time_s`` (s), ``ber`` (in (0, 1)).
        reference_temperature_K: T_ref of the equivalent times (K).
        degree: degree of the per-group polynomial of log10 BER in log10 equivalent time.

    Raises:
        CalibrationError: missing columns, non-positive values, fewer than two
            temperatures, or too few points for the model.
    """
    import pandas as pd

    d = table if isinstance(table, pd.DataFrame) else pd.read_csv(table)
    need = ["bits_per_cell", "temperature_K", "time_s", "ber"]
    missing = [c for c in need if c not in d.columns]
    if missing:
        raise CalibrationError(f"retention table lacks column(s) {missing}; has {list(d.columns)}")
    d = d[need].copy()
    for col in ("temperature_K", "time_s", "ber"):
        v = pd.to_numeric(d[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v <= 0) | ((v >= 1) if col == "ber" else False)
        if bad.any():
            row = int(np.argmax(bad))
            raise CalibrationError(f"retention table: column {col!r}, row {row}: {float(v[row])!r} "
                                   f"is not {'in (0, 1)' if col == 'ber' else 'a positive number'}")
        d[col] = v
    if d["temperature_K"].nunique() < 2:
        raise CalibrationError("an activation energy needs bakes at two or more temperatures")
    groups = sorted(int(b) for b in d["bits_per_cell"].unique())
    n_params = 1 + len(groups) * (degree + 1)
    if len(d) <= n_params:
        raise CalibrationError(f"{len(d)} points cannot fit {n_params} parameters")
    y = np.log10(d["ber"].to_numpy())
    log_t = np.log10(d["time_s"].to_numpy())
    inv_t = 1.0 / d["temperature_K"].to_numpy()
    gidx = np.searchsorted(groups, d["bits_per_cell"].to_numpy())

    def residuals(p: np.ndarray) -> np.ndarray:
        x = log_t + p[0] / BOLTZMANN_eV_per_K * (1.0 / reference_temperature_K - inv_t) / math.log(10)
        coef = p[1:].reshape(len(groups), degree + 1)
        pred = np.array([np.polyval(coef[g], xi) for g, xi in zip(gidx, x)])
        return pred - y

    p0 = np.zeros(n_params)
    p0[0] = initial_activation_energy_eV
    res = optimize.least_squares(residuals, p0, method="lm")
    if not res.success:
        raise CalibrationError(f"Arrhenius fit did not converge: {res.message}")
    dof = len(y) - n_params
    s2 = float(res.fun @ res.fun) / dof
    cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
    coef = res.x[1:].reshape(len(groups), degree + 1)
    return ArrheniusFit(
        activation_energy_eV=float(res.x[0]), activation_energy_stderr_eV=float(math.sqrt(cov[0, 0])),
        reference_temperature_K=float(reference_temperature_K),
        curves={g: [float(c) for c in coef[k]] for k, g in enumerate(groups)},
        rms_log10=float(np.sqrt(np.mean(res.fun ** 2))), n=len(y), data=d)
