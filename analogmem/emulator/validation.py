"""Input checks shared by every bench (:class:`~analogmem.emulator.bench.EmulatedBench`,
:class:`~analogmem.instrument.InstrumentBench`): each returns the value in its canonical
type or raises a specific :class:`~analogmem.errors.AnalogMemError` subclass naming what
was wrong, before anything changes.

* targets: real numeric arrays only (integer or floating dtypes) — no booleans, complex
  numbers, strings, objects or dates; finite; inside the card's input range;
* addresses: a 1-D array of distinct integers in ``[0, n_cells)``;
* times: real numbers of seconds (no booleans or strings), finite, ``>= 0`` and at most
  :data:`MAX_TIME_S`; a read is never earlier than the bench clock (a real bench cannot
  read in the past, and the emulator behaves the same);
* ``n_cells``: a positive integer whose per-cell state fits in the memory available.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from ..errors import AddressError, BenchSizeError, ReadTimeError, TargetRangeError
from .cells import DeviceModel

__all__ = ["MAX_TIME_S", "as_target_array", "check_targets", "check_addresses", "check_seconds",
           "check_clock", "check_read_time", "check_temperature_K", "check_n_cells", "available_memory_bytes"]

#: The largest time (s) a bench clock or a read time may take: 1e15 s, about 31.7 million
#: years. Far beyond any retention question (10 years is 3.2e8 s; the rram-radar card's
#: hottest bake is 1.6e12 s at 300 K), and float64 still resolves 0.125 s there, so a
#: ``wait(1.0)`` on such a clock is not lost to rounding.
MAX_TIME_S = 1e15

#: numpy dtype kinds accepted as real numbers: signed and unsigned integers, floats.
_REAL_KINDS = "iuf"


def _as_array(value: Any, must: str, error: type[Exception]) -> np.ndarray:
    """``np.asarray(value)``, refusing text and what numpy cannot make an array of
    (ragged lists) with ``error(must + ", got ...")``."""
    if isinstance(value, (str, bytes)):
        raise error(f"{must}, got a {type(value).__name__}")
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{must}, got {type(value).__name__}") from None


def as_target_array(targets: Any, n_expected: int, unit: str = "S") -> np.ndarray:
    """``targets`` as a contiguous float64 array of shape (n_expected,).

    Only real numeric arrays are accepted (integer or floating dtypes; lists of Python
    ints/floats); booleans, complex numbers, strings, objects and dates raise
    :class:`~analogmem.errors.TargetRangeError`, as does a wrong shape. Range and
    finiteness checks are each bench's own (:func:`check_targets`).
    """
    a = _as_array(targets, f"targets must be an array of real numbers ({unit})", TargetRangeError)
    if a.dtype.kind not in _REAL_KINDS:
        raise TargetRangeError(f"targets must be real numbers ({unit}), got an array of dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != n_expected:
        raise TargetRangeError(f"targets must be a 1-D array of {n_expected} values ({unit}), got shape {a.shape}")
    with np.errstate(over="ignore"):  # a float128 beyond float64's range becomes inf: refused by the range check
        return np.ascontiguousarray(a, dtype=np.float64)


def check_targets(targets: Any, n_expected: int, device: DeviceModel) -> np.ndarray:
    """``targets`` (see :func:`as_target_array`) checked to be finite and inside
    ``device.input_range``; raises :class:`~analogmem.errors.TargetRangeError` naming the
    first offending entry and how many are out of range."""
    g = as_target_array(targets, n_expected, device.input_unit or "level")
    if g.size == 0:
        return g
    lo_ok, hi_ok = device.input_range
    lo, hi = g.min(), g.max()  # one pass each; NaN propagates into both
    if not (np.isfinite(lo) and np.isfinite(hi)):
        i = int(np.argmin(np.isfinite(g)))
        raise TargetRangeError(f"targets[{i}] = {g[i]} is not finite; nothing was programmed")
    if lo < lo_ok or hi > hi_ok:
        bad = (g < lo_ok) | (g > hi_ok)
        i = int(np.argmax(bad))
        unit = device.input_unit
        if unit == "S":
            shown = (f"{g[i]:.6g} S ({g[i] * 1e6:.6g} µS) is outside the input range "
                     f"[{lo_ok * 1e6:g}, {hi_ok * 1e6:g}] µS")
        else:
            shown = f"{g[i]:.6g} {unit} is outside the input range [{lo_ok:g}, {hi_ok:g}] {unit}".replace(" ]", "]")
        raise TargetRangeError(f"targets[{i}] = {shown} of device {device.name!r}; "
                               f"{int(bad.sum())} target(s) out of range, nothing was programmed")
    return g


def check_addresses(addresses: Any, n_cells: int) -> np.ndarray | None:
    """Validate cell addresses for a bench of ``n_cells`` cells: None (every cell) or a 1-D
    array of distinct integers in ``[0, n_cells)``, returned as ``intp``. Raises
    :class:`~analogmem.errors.AddressError` naming the first offending entry."""
    if addresses is None:
        return None
    a = _as_array(addresses, "addresses must be a 1-D array of integers", AddressError)
    if a.ndim != 1 or (a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f")):  # [] is float
        raise AddressError(f"addresses must be a 1-D array of integers, got shape {a.shape} dtype {a.dtype}")
    if a.size == 0:
        return a.astype(np.intp)
    bad = (a < 0) | (a >= n_cells)  # compared in the input's own dtype: uint64 values do not wrap
    if np.any(bad):
        i = int(np.argmax(bad))
        raise AddressError(f"addresses[{i}] = {a[i]} is outside [0, {n_cells - 1}]")
    a = a.astype(np.intp)
    if a.size > 1 and not np.all(a[1:] > a[:-1]):  # increasing addresses cannot repeat
        # a mask over the array, not np.unique: numpy's hash-based unique takes ~20 s on 2e7
        seen = np.zeros(n_cells, dtype=bool)
        seen[a] = True
        if np.count_nonzero(seen) != a.size:
            raise AddressError("addresses contain duplicates; program each cell once per call")
    return a


def _real(name: str, value: Any, what: str) -> float:
    """``value`` as a float if it is a real number (no bool, no string, no array)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TargetRangeError(f"{name} must be a real number of {what}, got {value!r} ({type(value).__name__})")
    return float(value)


def check_seconds(name: str, value: Any, maximum: float = MAX_TIME_S) -> float:
    """``value`` (s) as a float: a real number, finite, in ``[0, maximum]``; else
    :class:`~analogmem.errors.TargetRangeError` naming ``name``."""
    v = _real(name, value, "seconds")
    if not math.isfinite(v) or v < 0 or v > maximum:
        raise TargetRangeError(f"{name} must be finite, >= 0 s and <= {maximum:g} s, got {value!r}")
    return v


def check_clock(time_s: float, what: str) -> float:
    """A bench clock value after ``what`` (e.g. a wait or a bake); raises
    :class:`~analogmem.errors.TargetRangeError` if it would pass :data:`MAX_TIME_S`."""
    if not time_s <= MAX_TIME_S:
        raise TargetRangeError(f"{what} would move the bench clock to {time_s:g} s, past the maximum "
                               f"{MAX_TIME_S:g} s; the clock is unchanged")
    return float(time_s)


def check_read_time(t_s: Any, last_program_s: float, now_s: float, tolerance_s: float = 0.0) -> float:
    """The bench time (s) of a read ``t_s`` seconds after the most recent program (None:
    now). Raises :class:`~analogmem.errors.TargetRangeError` for a bad ``t_s`` and
    :class:`~analogmem.errors.ReadTimeError` for a moment more than ``tolerance_s`` before
    ``now_s``: no bench reads in the past."""
    if t_s is None:
        return float(now_s)
    t = check_seconds("t_s", t_s)
    when = check_clock(last_program_s + t, f"read(t_s={t:g})")
    late = now_s - when
    if late > tolerance_s:
        raise ReadTimeError(f"read at t_s = {t:g} s after programming was asked {late:.6g} s too late (the bench "
                            f"clock is at {now_s:g} s, programmed at {last_program_s:g} s): a bench cannot read "
                            "in the past; call read() to read now, or program again")
    return when


def check_temperature_K(value: Any) -> float:
    """A temperature (K): a real number, finite and > 0; else
    :class:`~analogmem.errors.TargetRangeError`."""
    v = _real("temperature_K", value, "kelvin")
    if not math.isfinite(v) or v <= 0:
        raise TargetRangeError(f"temperature_K must be a positive temperature in kelvin, got {value!r}")
    return v


def available_memory_bytes() -> int | None:
    """Memory this process may still allocate (bytes): Linux ``MemAvailable``, lowered to
    the cgroup (v2) limit minus its usage where one is set; None where neither is known."""
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
                left = int(limit) - int(fh.read().strip())
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def check_n_cells(n_cells: Any, bytes_per_cell: int, what: str = "n_cells") -> int:
    """``n_cells`` as an int: a positive integer (no bool, float or string) whose state of
    ``bytes_per_cell`` bytes per cell fits in :func:`available_memory_bytes`. Raises
    :class:`~analogmem.errors.BenchSizeError` before anything is allocated."""
    if isinstance(n_cells, (bool, np.bool_)) or not isinstance(n_cells, numbers.Integral) or n_cells < 1:
        raise BenchSizeError(f"{what} must be a positive integer, got {n_cells!r} ({type(n_cells).__name__})")
    n = int(n_cells)
    need = n * int(bytes_per_cell)
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise BenchSizeError(f"{what} = {n} needs {need / 2**30:.3g} GiB for the per-cell state "
                             f"({bytes_per_cell} bytes per cell) but only {avail / 2**30:.3g} GiB of memory are "
                             "available; use fewer cells")
    return n
