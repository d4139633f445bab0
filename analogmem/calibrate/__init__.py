"""Calibration (layer 2): device cards fitted from measured cells (README, "Calibrating a card from your own cells").

* :mod:`.tidy` — the tidy table: :func:`load_table`, :func:`read_tidy` (one reader for all
  calibrators);
* :mod:`.channel` — :class:`WriteChannelCalibrator`, the empirical/Gaussian write channel;
* :mod:`.parametric` — :class:`PolynomialCalibrator`, σ(g, t) polynomials;
* :mod:`.write_verify` — write-verify trace tables, the per-window pulse-response model, bake spreads;
* :mod:`.pulse_response` — the shared pulse-response model (any window, start state, scheme, run);
* :mod:`.run_effect` — run-to-run variation as a predictive distribution: between/within-run
  SDs from held-out residuals, prediction intervals, few-cell update of a new run;
* :mod:`.retention` — the Arrhenius fit to bake bit-error rates;
* :mod:`.cli` — ``analogmem calibrate``.

Imports the base modules and the emulator layer (cards), nothing above.
"""

from importlib import import_module
from typing import Any

from .._deprecated import renamed

#: Where each public name lives. The submodules load on first use (PEP 562), so importing one
#: light module (the instrument layer reads only .tidy's column lists) does not load scipy.stats
#: and every fitter with it.
_HOME = {
    "WriteChannelCalibrator": "channel", "PolynomialCalibrator": "parametric",
    "PulseResponseFit": "pulse_response", "fit_pulse_response": "pulse_response",
    "ArrheniusFit": "retention", "fit_arrhenius": "retention",
    "OPTIONAL_COLUMNS": "tidy", "READ_COLUMNS": "tidy", "TARGET_COLUMNS": "tidy", "load_table": "tidy",
    "read_tidy": "tidy",
    "GeometricMixture": "write_verify", "WriteVerifyFit": "write_verify", "fit_geometric_mixture": "write_verify",
    "fit_write_verify": "write_verify", "overlapping_windows": "write_verify", "read_write_verify": "write_verify",
    "spread_table": "write_verify",
}


def _load(name: str) -> Any:
    if name in _HOME:
        value = getattr(import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: old public names, still importable with a DeprecationWarning
__getattr__ = renamed(__name__, {"ChannelCalibrator": "WriteChannelCalibrator"}, globals(), _load)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = ["WriteChannelCalibrator", "PolynomialCalibrator", "ArrheniusFit", "fit_arrhenius", "load_table", "read_tidy",
           "TARGET_COLUMNS", "READ_COLUMNS", "OPTIONAL_COLUMNS", "GeometricMixture", "WriteVerifyFit",
           "fit_geometric_mixture", "fit_write_verify", "read_write_verify", "overlapping_windows", "spread_table",
           "PulseResponseFit", "fit_pulse_response"]
