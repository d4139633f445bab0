"""The federated-learning package's error and its input checks (the scalar ones are
:mod:`analogmem._checks`' with :class:`FederatedError`; probability arrays are its own).

Every check raises :class:`FederatedError` (an :class:`~analogmem.errors.AnalogMemError` and a
:class:`ValueError`) with a message that names the offending value and what is allowed.
"""

from __future__ import annotations

import numpy as np

from analogmem import _checks
from analogmem.errors import AnalogMemError

__all__ = ["FederatedError", "check_int", "check_fraction", "check_positive", "check_probabilities"]


class FederatedError(AnalogMemError, ValueError):
    """A federated-learning routine got a bad parameter or input (a probability outside
    [0, 1], a block size < 1, a corrupted message, mismatched shapes, ...). The message
    names the value and the allowed range."""


def check_int(value: int, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``."""
    return _checks.check_int(value, name, minimum, maximum, error=FederatedError)


def check_fraction(value: float, name: str) -> float:
    """Return ``value`` as a float in (0, 1]."""
    return _checks.check_fraction(value, name, error=FederatedError)


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a finite float > 0."""
    return _checks.check_positive(value, name, error=FederatedError)


def check_probabilities(p, name: str, open_interval: bool = False) -> np.ndarray:
    """Return ``p`` as a 1-D float64 array of probabilities in [0, 1] (or (0, 1) with
    ``open_interval``); NaN, inf and out-of-range entries are refused, naming the first."""
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(a) | (a <= 0.0 if open_interval else a < 0.0) | (a >= 1.0 if open_interval else a > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rng = "(0, 1)" if open_interval else "[0, 1]"
        raise FederatedError(f"{name} must hold probabilities in {rng}; {name}[{i}] = {a[i]!r}")
    return a
