"""Input checks shared by the privacy mechanisms.

Every check raises :class:`PrivacyParameterError` (an :class:`~analogmem.errors.AnalogMemError`
and a :class:`ValueError`) with a message that names the offending value and what is allowed.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

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
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise PrivacyParameterError(f"epsilon must be a real number > 0, got {epsilon!r}")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps <= 0.0:
        raise PrivacyParameterError(f"epsilon must be finite and > 0, got epsilon={epsilon!r}")
    return eps


def check_bits(bits: int, name: str = "bits") -> int:
    """Return ``bits`` as an int; it must be an integer ≥ 1 (bits per user)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise PrivacyParameterError(f"{name} must be an integer >= 1, got {bits!r}")
    if bits < 1:
        raise PrivacyParameterError(f"{name} must be an integer >= 1, got {name}={bits}")
    return int(bits)


def check_dimension(d: int, minimum: int = 2, name: str = "d") -> int:
    """Return ``d`` as an int; it must be an integer ≥ ``minimum``."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < minimum:
        raise PrivacyParameterError(f"{name} must be an integer >= {minimum}, got {name}={d!r}")
    return int(d)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or ≥ 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise PrivacyParameterError(f"{name} must be a finite real number, got {name}={value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise PrivacyParameterError(f"{name} must be {bound}, got {name}={value!r}")
    return float(value)


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
