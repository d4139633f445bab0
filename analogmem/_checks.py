"""Argument checks of scalar settings, the one home of each for every layer: each returns the
value in its canonical type or raises ``error`` (the calling package's
:class:`~analogmem.errors.AnalogMemError` subclass) with a message naming the argument and the
value it got.

Where the checks live: this module holds every check that is about a plain number (an integer
in a range, a positive or non-negative real, a fraction); :mod:`analogmem.emulator.validation`
holds the bench's checks of targets, addresses, times and sizes (they need a device card); each
thesis package's ``_validation.py`` holds its error class and only the checks of its own
objects (a unit vector, a probability array, a method name), binding its error class to these.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import AnalogMemError

__all__ = ["check_int", "check_positive", "check_fraction"]


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None, *,
              error: type[Exception] = AnalogMemError) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (no bools)."""
    hi = "" if maximum is None else f" and <= {maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum \
            or (maximum is not None and value > maximum):
        raise error(f"{name} must be an integer >= {minimum}{hi}, got {name}={value!r}")
    return int(value)


def check_positive(value: Any, name: str, *, allow_zero: bool = False,
                   error: type[Exception] = AnalogMemError) -> float:
    """``value`` as a finite float > 0 (``allow_zero``: >= 0)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise error(f"{name} must be a finite number {bound}, got {name}={value!r}")
    return float(value)


def check_fraction(value: Any, name: str, *, zero: bool = False, one: bool = True,
                   error: type[Exception] = AnalogMemError) -> float:
    """``value`` as a float in (0, 1] by default; ``zero`` admits 0, ``one=False`` refuses 1
    (a sparsity, for instance, is in [0, 1): ``zero=True, one=False``)."""
    interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not ((0.0 <= float(value)) if zero else (0.0 < float(value))) \
            or not ((float(value) <= 1.0) if one else (float(value) < 1.0)):
        raise error(f"{name} must be a fraction in {interval}, got {name}={value!r}")
    return float(value)
