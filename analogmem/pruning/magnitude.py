"""Global magnitude pruning, the baseline SuRP is compared with (thesis ch.2; docs/pruning.md).

Keep the ``round((1 − sparsity)·n)`` weights of largest ``|w|`` over all layers together
(one global threshold, no per-layer normalisation) and set the rest to exactly zero. Ties
at the threshold are broken by position (earlier layers, lower flat index first), so the
kept count is exact.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._errors import PruningError
from .surp import check_layers, target_nonzero

__all__ = ["global_magnitude_masks", "global_magnitude_prune"]


def global_magnitude_masks(layers: Sequence[Any], sparsity: float,
                           names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Boolean keep-masks (shapes of ``layers``) of global magnitude pruning at ``sparsity``.

    Raises :class:`PruningError` for empty or NaN layers (naming the layer), a sparsity
    outside [0, 1), or one that would keep more weights than are non-zero.
    """
    arrays, names = check_layers(layers, names)
    flat = np.concatenate([np.abs(a).reshape(-1) for a in arrays])
    keep = target_nonzero(flat.size, sparsity)
    positive = int(np.count_nonzero(flat))
    if keep > positive:
        raise PruningError(f"sparsity={sparsity!r} keeps {keep} of {flat.size} weights, but only {positive} are "
                           f"non-zero")
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:keep]] = True
    out, start = [], 0
    for a in arrays:
        out.append(mask[start:start + a.size].reshape(a.shape))
        start += a.size
    return out


def global_magnitude_prune(layers: Sequence[Any], sparsity: float,
                           names: Sequence[str] | None = None) -> list[np.ndarray]:
    """The layers (float64) with all but the globally largest ``round((1 − sparsity)·n)``
    magnitudes set to exactly zero; kept weights are unchanged."""
    arrays, names = check_layers(layers, names)
    masks = global_magnitude_masks(arrays, sparsity, names)
    return [np.where(m, a, 0.0) for a, m in zip(arrays, masks)]
