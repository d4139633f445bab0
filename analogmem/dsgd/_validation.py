"""The sparsified-DSGD package's errors and its input checks (the scalar ones are
:mod:`analogmem._checks`' with :class:`DSGDError`).

Every check raises :class:`DSGDError` (an :class:`~analogmem.errors.AnalogMemError` and a
:class:`ValueError`) with a message that names the offending value and what is allowed.
"""

from __future__ import annotations

from analogmem import _checks
from analogmem.errors import AnalogMemError

__all__ = [
    "DSGDError",
    "DSGDLaunchError",
    "METHODS",
    "SPARSE_METHODS",
    "check_density",
    "check_int",
    "check_method",
    "check_positive",
]

#: Sparsifiers (all used with error feedback).
SPARSE_METHODS = ("topk", "randk", "rtopk")
#: Every way a bucket can be exchanged: uncompressed all-reduce plus the sparsifiers.
METHODS = ("dense",) + SPARSE_METHODS


class DSGDError(AnalogMemError, ValueError):
    """A sparsified-DSGD parameter or input is invalid (k > r, density outside (0, 1], an
    unknown method, a bucket too large for int32 indices, ...). The message names the value."""


class DSGDLaunchError(AnalogMemError, RuntimeError):
    """A distributed run failed: a rank raised, exited abnormally, or the run passed its
    deadline. The message names the rank and carries its traceback where there is one."""


def check_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int; it must be an integer ≥ ``minimum``."""
    return _checks.check_int(value, name, minimum, error=DSGDError)


def check_positive(value, name: str) -> float:
    """Return ``value`` as a finite float > 0."""
    return _checks.check_positive(value, name, error=DSGDError)


def check_density(density) -> float:
    """Return ``density`` (fraction of a bucket's coordinates sent, k/n) as a float in (0, 1]."""
    return _checks.check_fraction(density, "density", error=DSGDError)


def check_method(method: str, allowed: tuple[str, ...] = METHODS) -> str:
    """Return ``method`` if it is one of ``allowed``."""
    if method not in allowed:
        raise DSGDError(f"unknown method {method!r}; choose from {', '.join(allowed)}")
    return method
