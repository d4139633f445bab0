"""The privacy package's error and its input checks: the scalar checks of
:mod:`analogmem._checks` with :class:`PrivacyParameterError`, and unit vectors.

Every check raises :class:`PrivacyParameterError` (an :class:`~analogmem.errors.AnalogMemError`
and a :class:`ValueError`) with a message that names the offending value and what is allowed.
"""

from __future__ import annotations

import numpy as np

from analogmem import _checks
from analogmem.errors import AnalogMemError

__all__ = [
    "PrivacyParameterError",
    "check_bits",
    "check_dimension",
    "check_epsilon",
    "check_positive",
    "check_unit_vectors",
]

#: Allowed deviation of a "unit" vector's Euclidean norm from 1.
UNIT_NORM_TOLERANCE = 1e-6


class PrivacyParameterError(AnalogMemError, ValueError):
    """A privacy mechanism got a bad parameter or input (ε ≤ 0, b < 1, a non-unit vector,
    mismatched dimensions, ...). The message names the value and the allowed range."""


def check_epsilon(epsilon: float) -> float:
    """Return ``epsilon`` as a float; it must be finite and > 0 (nats, the usual ε of ε-LDP)."""
    return _checks.check_positive(epsilon, "epsilon", error=PrivacyParameterError)


def check_bits(bits: int, name: str = "bits") -> int:
    """Return ``bits`` as an int; it must be an integer ≥ 1 (bits per user)."""
    return _checks.check_int(bits, name, 1, error=PrivacyParameterError)


def check_dimension(d: int, minimum: int = 2, name: str = "d") -> int:
    """Return ``d`` as an int; it must be an integer ≥ ``minimum``."""
    return _checks.check_int(d, name, minimum, error=PrivacyParameterError)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or ≥ 0 with ``allow_zero``)."""
    return _checks.check_positive(value, name, allow_zero=allow_zero, error=PrivacyParameterError)


def check_unit_vectors(vectors, d: int | None = None, name: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a float64 array of shape ``(n, d)`` whose rows have unit L2 norm.

    A single vector of shape ``(d,)`` is accepted and returned as ``(1, d)``. Raises if the
    array is not 1-D/2-D, has the wrong dimension ``d``, holds NaN/inf, or a row's norm differs
    from 1 by more than ``UNIT_NORM_TOLERANCE`` (the message names the first such row).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise PrivacyParameterError(
            f"{name} must have shape (n, d) with n >= 1, got shape {np.shape(vectors)}"
        )
    if d is not None and x.shape[1] != d:
        raise PrivacyParameterError(
            f"{name} have dimension {x.shape[1]} but the mechanism was built for d={d}"
        )
    if not np.all(np.isfinite(x)):
        row = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise PrivacyParameterError(f"{name}[{row}] contains NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
    if bad.size:
        i = int(bad[0])
        raise PrivacyParameterError(
            f"{name} must be unit vectors (L2 norm 1 ± {UNIT_NORM_TOLERANCE:g}); "
            f"{name}[{i}] has norm {norms[i]:.6g} ({bad.size} of {x.shape[0]} rows are off)"
        )
    return x
