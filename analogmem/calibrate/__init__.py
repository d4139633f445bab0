"""Calibration (layer 2): device cards fitted from measured cells (README, "Calibrating a card from your own cells").

* :mod:`.tidy` — the tidy table: :func:`load_table`, :func:`read_tidy` (one reader for all
  calibrators);
* :mod:`.channel` — :class:`ChannelCalibrator`, the empirical/Gaussian write channel;
* :mod:`.parametric` — :class:`PolynomialCalibrator`, σ(g, t) polynomials;
* :mod:`.write_verify` — write-verify trace tables, the per-window pulse-response model, bake spreads;
* :mod:`.pulse_response` — the shared pulse-response model (any window, start state, scheme, run);
* :mod:`.run_effect` — run-to-run variation as a predictive distribution: between/within-run
  SDs from held-out residuals, prediction intervals, few-cell update of a new run;
* :mod:`.retention` — the Arrhenius fit to bake bit-error rates;
* :mod:`.cli` — ``analogmem calibrate``.

Imports the base modules and the emulator layer (cards), nothing above.
"""

from .channel import ChannelCalibrator
from .parametric import PolynomialCalibrator
from .pulse_response import PulseResponseFit, fit_pulse_response
from .retention import ArrheniusFit, fit_arrhenius
from .tidy import OPTIONAL_COLUMNS, READ_COLUMNS, TARGET_COLUMNS, load_table, read_tidy
from .write_verify import (
    GeometricMixture,
    WriteVerifyFit,
    fit_geometric_mixture,
    fit_write_verify,
    overlapping_windows,
    read_write_verify,
    spread_table,
)

__all__ = ["ChannelCalibrator", "PolynomialCalibrator", "ArrheniusFit", "fit_arrhenius", "load_table", "read_tidy",
           "TARGET_COLUMNS", "READ_COLUMNS", "OPTIONAL_COLUMNS", "GeometricMixture", "WriteVerifyFit",
           "fit_geometric_mixture", "fit_write_verify", "read_write_verify", "overlapping_windows", "spread_table",
           "PulseResponseFit", "fit_pulse_response"]
