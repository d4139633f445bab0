"""The delta-compression package's error and its input checks (the scalar ones are
:mod:`analogmem._checks`' with :class:`DeltaZipError`).

Every check raises :class:`DeltaZipError` (an :class:`~analogmem.errors.AnalogMemError` and a
:class:`ValueError`) with a message that names the offending layer, tensor or value and what is
allowed.
"""

from __future__ import annotations

from typing import Any

from analogmem import _checks
from analogmem.errors import AnalogMemError

__all__ = ["DeltaZipError", "check_bits", "check_sparsity", "check_positive_int", "check_finite_tensor"]


class DeltaZipError(AnalogMemError, ValueError):
    """Bad input to delta compression: base and finetuned models that do not match (a missing
    layer, a different shape), NaN/inf weights or Hessians, a sparsity outside [0, 1), a bit
    width outside 1–8, a corrupted packed file. The message names the layer or value."""


def check_sparsity(sparsity: Any) -> float:
    """Return ``sparsity`` (fraction of weights set to zero) as a float in [0, 1)."""
    return _checks.check_fraction(sparsity, "sparsity", zero=True, one=False, error=DeltaZipError)


def check_bits(bits: Any, *, allow_none: bool = False) -> int | None:
    """Return ``bits`` (bits per kept weight) as an int in 1–8 (or None if ``allow_none``)."""
    if bits is None and allow_none:
        return None
    return _checks.check_int(bits, "bits", 1, 8, error=DeltaZipError)


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int >= 1."""
    return _checks.check_int(value, name, 1, error=DeltaZipError)


def check_finite_tensor(name: str, tensor: Any) -> None:
    """Raise :class:`DeltaZipError` naming ``name`` and the first bad flat index if the torch
    tensor holds NaN or ±inf."""
    import torch

    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        flat = tensor.detach().reshape(-1)
        bad = ~torch.isfinite(flat)
        i = int(torch.nonzero(bad)[0, 0])
        raise DeltaZipError(f"{name} has a non-finite value {float(flat[i])} at flat index {i} "
                            f"({int(bad.sum())} non-finite of {flat.numel()})")
