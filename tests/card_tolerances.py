"""Compare a regenerated device card with a shipped one, field by field, each with a
tolerance that says why (importable as ``card_tolerances``).

A card holds three kinds of numbers, and a test that regenerates it must not hold them to
one standard:

* settings and counts (strings, integers, booleans, the shape of every table): equal;
* arithmetic on the data (quantiles, medians, standard deviations, reciprocals): the same
  IEEE operations on every machine, up to a few ulp where numpy dispatches SIMD loops
  (log/exp, pairwise sums) by CPU — compared at ``ARITHMETIC`` (rtol 1e-12);
* results of an iterative fit or optimiser (least squares, EM): they stop at a convergence
  criterion, so another CPU or BLAS build lands a little elsewhere (issue 13: the Arrhenius
  times moved by 5.4e-8 relative). Those are compared at a tolerance derived from the
  quantity — a small fraction of its own standard error, or a stated relative tolerance
  with the reason — never at 1e-9.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from analogmem.emulator.cells import BOLTZMANN_eV_per_K

__all__ = ["FieldTolerance", "ARITHMETIC", "RRAM_RADAR", "compare_cards"]


@dataclass(frozen=True)
class FieldTolerance:
    """How closely a card field must agree: ``rtol``/``atol`` (numbers, or functions of the
    shipped card returning one) and the reason, shown when the comparison fails."""

    reason: str
    rtol: float | Callable[[dict[str, Any]], float] = 0.0
    atol: float | Callable[[dict[str, Any]], float] = 0.0

    def resolve(self, shipped: dict[str, Any]) -> tuple[float, float]:
        r = self.rtol(shipped) if callable(self.rtol) else self.rtol
        a = self.atol(shipped) if callable(self.atol) else self.atol
        return float(r), float(a)


ARITHMETIC = FieldTolerance("closed-form arithmetic on the data (quantiles, medians, std, reciprocals): "
                            "machine-independent up to a few ulp of SIMD-dispatched log/exp/sums", rtol=1e-12)


def _structure(v: Any) -> Any:
    """The shape and the non-float leaves of a value (compared exactly)."""
    if isinstance(v, list):
        return [_structure(x) for x in v]
    if isinstance(v, dict):
        return {k: _structure(x) for k, x in v.items()}
    return "<float>" if isinstance(v, float) else v


def _floats(v: Any) -> list[float]:
    if isinstance(v, list):
        return [x for item in v for x in _floats(item)]
    if isinstance(v, dict):
        return [x for item in v.values() for x in _floats(item)]
    return [v] if isinstance(v, float) else []


def compare_cards(new: dict[str, Any], shipped: dict[str, Any], tables: tuple[str, ...],
                  tolerances: dict[str, FieldTolerance], default: FieldTolerance = ARITHMETIC) -> list[str]:
    """Assert that the ``tables`` of two parsed cards agree: the same keys, the same
    strings/integers/booleans and table shapes, and floats within the tolerance of the
    first pattern of ``tolerances`` (``fnmatch`` on ``"table.key"``, in order) that
    matches, else ``default``. Returns the fields compared, each with its tolerance."""
    compared = []
    for table in tables:
        assert set(new[table]) == set(shipped[table]), (
            f"[{table}] keys differ: {sorted(set(new[table]) ^ set(shipped[table]))}")
        for key, value in shipped[table].items():
            field = f"{table}.{key}"
            got = new[table][key]
            assert _structure(got) == _structure(value), f"[{table}].{key}: shape or exact entries differ"
            tol = next((t for pattern, t in tolerances.items() if fnmatch.fnmatchcase(field, pattern)), default)
            rtol, atol = tol.resolve(shipped)
            a, b = _floats(got), _floats(value)
            if a:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                           err_msg=f"[{table}].{key} (tolerance: {tol.reason})")
            compared.append(f"{field}: " + (f"rtol={rtol:.3g} atol={atol:.3g}" if a else "exact"))
    return compared


# --------------------------------------------------------------------------- rram-radar
def _arrhenius_times_rtol(card: dict[str, Any]) -> float:
    """Relative tolerance of the Arrhenius-equivalent times: 1/1000 of the relative standard
    error that σ(E_a) gives them. t_eq = t_bake·exp(E_a/k·(1/T_ref − 1/T)), so
    σ(ln t_eq) = σ(E_a)/k·(1/T_ref − 1/T), largest at the hottest bake."""
    r = card["retention"]
    hottest = max(b["bake_temperature_K"] for b in card["fit_report"]["bakes"])
    return 1e-3 * r["activation_energy_stderr_eV"] / BOLTZMANN_eV_per_K * (1 / r["reference_temperature_K"] - 1 / hottest)


#: The rram-radar card (scripts/cards/fit_radar_card.py): which fields come from which fit.
RRAM_RADAR = {
    "retention.activation_energy_eV": FieldTolerance(
        "least-squares Arrhenius fit (scipy least_squares, xtol 1e-8): 1/1000 of its own standard error",
        atol=lambda c: 1e-3 * c["retention"]["activation_energy_stderr_eV"]),
    "retention.activation_energy_stderr_eV": FieldTolerance(
        "standard error from the Jacobian at the least-squares optimum; itself uncertain by ~1/sqrt(2(n-p)) "
        "= 12 % for 35 points, so 1e-4 relative is no change", rtol=1e-4),
    "relaxation.times_s": FieldTolerance(
        "Arrhenius-equivalent bake times: 1/1000 of the relative standard error sigma(E_a) gives them "
        "(the 1 s and pre-bake times are settings and agree to rounding)", rtol=_arrhenius_times_rtol),
    "write_verify.window_*": ARITHMETIC,
    "write_verify.probabilities": ARITHMETIC,
    "write_verify.log_g_quantiles": ARITHMETIC,
    "write_verify.*": FieldTolerance(
        "pulse-response parameters fitted by EM (stops at a log-likelihood change <= 1e-10 relative): "
        "1e-5 relative is 1/1000 of the smallest statistical standard error of a level fitted on <= 1e4 "
        "cells (>= 1e-2 relative)", rtol=1e-5, atol=1e-12),
}
