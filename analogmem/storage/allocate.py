"""Joint compression (pruning) + cell allocation under a budget (thesis ch.3; Isik et al.,
ACM TECS 2023; docs/storage.md "Allocation").

Each weight ``i`` gets ``r_i ∈ {0, 1, …, R}`` repetitions of an encoder's cells
(``c`` cells each, so ``c·r_i`` cells); ``r_i = 0`` prunes it (decoded as 0, no cells).
With a sensitivity ``h_i`` (diagonal Fisher: mean squared gradient of the loss on
calibration data) and a distortion model ``MSE_i(r)`` the allocation solves

    minimise Σ_i h_i·MSE_i(r_i)   subject to   c·Σ_i r_i ≤ budget   (cells)

by greedy marginal gain: repeatedly spend cells where ``h_i·(MSE_i(r) − MSE_i(r'))/(r' − r)``
is largest. Each curve is first replaced by its lower convex hull (``r → r'`` may jump
several repetitions where the curve is not convex, e.g. from pruning to one cell); on
convex, decreasing curves this greedy is the exact optimum of the integer problem.

The distortion model is that of the decoder actually used, through the card's channel at
the read time the allocation optimises for; ``MSE_i(0) = w_i²`` (pruned) for every encoder:

* a plain cell map (:class:`~analogmem.storage.encoders.CellMap`, naive decoding):
  ``MSE_i(r) = e_i² + v_i/r`` with ``e_i`` the noise-free clipping error and ``v_i`` the
  variance of the naive decode with one copy (:meth:`CellMap.noise_variance`); averaging
  ``r`` copies divides the variance by ``r``;
* MMSE decoding (:class:`~analogmem.storage.encoders.MMSE`): ``MSE_i(r)`` of the posterior
  mean given ``r`` copies' reads, by quasi-Monte Carlo on the channel model
  (:meth:`MMSE.distortion`) — lower than the naive curve, and not ``∝ 1/r``: the prior
  already removes much of the noise of one copy, so further copies are worth less.

Side information (range, MMSE prior) is fitted on the non-zero weights; exact zeros (weights
pruned before, e.g. by :mod:`analogmem.pruning`) cost nothing pruned and are never given
cells. A store given counts fits its side information the same way, so the decoder reads
with exactly the prior the curves assumed (fitting the prior on the kept weights only,
whose histogram then has a hole at 0, measured 11 % *more* error than predicted on
rram-wan2022; with the same prior, prediction and measurement agree within 2 %).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from ..errors import SettingError, StorageError
from .encoders import MMSE, CellMap, ReadChannel

__all__ = ["fisher_diagonal", "distortion_curves", "greedy_allocation", "allocate_cells", "AllocationCurves"]


def fisher_diagonal(module: Any, batches: Iterable[tuple[Any, Any]],
                    loss_fn: Callable[[Any, Any], Any] | None = None) -> dict[str, np.ndarray]:
    """Diagonal empirical Fisher ``h = mean over batches of (∂L/∂θ)²`` for every parameter
    of ``module`` (each array shaped like the parameter, float64).

    ``batches`` yields ``(inputs, targets)`` tensors (small batches give a closer
    approximation of the per-example Fisher); ``loss_fn`` defaults to cross-entropy.
    """
    import torch
    import torch.nn.functional as F

    loss_fn = loss_fn or F.cross_entropy
    was_training = module.training
    module.eval()
    acc = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in module.named_parameters()}
    k = 0
    for x, y in batches:
        module.zero_grad(set_to_none=True)
        loss_fn(module(x), y).backward()
        for n, p in module.named_parameters():
            if p.grad is not None:
                acc[n] += p.grad.detach().double() ** 2
        k += 1
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    if k == 0:
        raise SettingError("fisher_diagonal needs at least one calibration batch")
    return {n: (a / k).cpu().numpy() for n, a in acc.items()}


def distortion_curves(w: np.ndarray, encoder: CellMap, channel: ReadChannel, max_repetitions: int,
                      side: dict[str, Any] | None = None, seed: Any = 0) -> np.ndarray:
    """``MSE_i(r)`` for ``r = 0..max_repetitions``, shape ``(n, R + 1)`` (weights²): pruned
    at ``r = 0``, the decoder's error with ``r`` copies above (see module docstring).
    ``side`` defaults to ``encoder.fit`` on the non-zero weights; ``seed`` drives the
    quasi-Monte Carlo of MMSE curves (fixed: the same weights give the same curves)."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if side is None:
        nz = w[w != 0]
        side = encoder.fit(nz if nz.size else w, channel)
    if isinstance(encoder, MMSE):
        mse = encoder.distortion(w, side, channel, max_repetitions, seed=seed)
    else:
        v = encoder.noise_variance(w, side, channel)
        e2 = encoder.clip_error(w, side) ** 2
        r = np.arange(1, max_repetitions + 1, dtype=np.float64)
        mse = e2[:, None] + v[:, None] / r[None, :]
    out = np.concatenate([(w * w)[:, None], mse], axis=1)
    out[w == 0] = 0.0  # an exact zero is reproduced by pruning: no cells
    return out


def _hull_segments(D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item's lower-convex-hull segments ``(item, from, to)``, steepest first (an
    item's own segments in hull order): the order in which greedy marginal gain buys them."""
    n, R1 = D.shape
    seg_item, seg_from, seg_to, seg_ratio = [], [], [], []
    cur = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    rs = np.arange(R1)
    for _ in range(R1 - 1):  # vectorised over items: from the current point, jump to the r' of steepest descent
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        c = cur[idx]
        step = rs[None, :] - c[:, None]  # (m, R1)
        gain = D[idx, c][:, None] - D[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(step > 0, gain / np.where(step > 0, step, 1), -np.inf)
        best = np.argmax(ratio, axis=1)
        best_ratio = ratio[np.arange(idx.size), best]
        ok = best_ratio > 0
        seg_item.append(idx[ok]), seg_from.append(c[ok]), seg_to.append(best[ok]), seg_ratio.append(best_ratio[ok])
        cur[idx[ok]] = best[ok]
        active[idx[~ok]] = False
        active[cur >= R1 - 1] = False
    if not seg_item:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    item, frm, to, ratio = (np.concatenate(a) for a in (seg_item, seg_from, seg_to, seg_ratio))
    order = np.lexsort((frm, -ratio))
    return item[order], frm[order], to[order]


def _fill(n: int, segments: tuple[np.ndarray, np.ndarray, np.ndarray], budget: int) -> np.ndarray:
    """Buy hull segments in order until ``budget`` units are spent (skipping, at the end,
    segments that no longer fit)."""
    item, frm, to = segments
    counts = np.zeros(n, dtype=np.int64)
    if item.size == 0:
        return counts
    cost = to - frm
    spent = np.cumsum(cost)
    fits = int(np.searchsorted(spent, budget, side="right"))
    counts[item[:fits]] = to[:fits]
    left = budget - (int(spent[fits - 1]) if fits else 0)
    blocked = np.zeros(n, dtype=bool)
    for j in range(fits, item.size):  # the tail: skip segments that no longer fit
        if left <= 0:
            break
        i = item[j]
        if blocked[i] or counts[i] != frm[j]:
            continue
        if cost[j] <= left:
            counts[i] = to[j]
            left -= int(cost[j])
        else:
            blocked[i] = True
    return counts


def _check_distortion(distortion: np.ndarray) -> np.ndarray:
    D = np.asarray(distortion, dtype=np.float64)
    if D.ndim != 2 or D.shape[1] < 1:
        raise SettingError(f"distortion must have shape (n, R + 1), got {D.shape}")
    if not np.all(np.isfinite(D)):
        raise SettingError("distortion must be finite")
    return D


def _check_budget(budget_units: Any) -> int:
    budget = int(budget_units)
    if budget < 0:
        raise SettingError(f"budget must be >= 0, got {budget_units!r}")
    return budget


def greedy_allocation(distortion: np.ndarray, budget_units: int) -> np.ndarray:
    """Minimise ``Σ_i D[i, r_i]`` subject to ``Σ_i r_i ≤ budget_units`` by greedy marginal
    gain on each row's lower convex hull.

    Args:
        distortion: ``D[i, r]`` = weighted distortion of item ``i`` with ``r`` units, shape
            ``(n, R + 1)``.
        budget_units: the total number of units (≥ 0).

    Returns:
        ``r`` per item, int64 shape ``(n,)``, with ``Σ r ≤ budget_units`` (equal whenever
        a further unit still lowers the distortion).
    """
    D = _check_distortion(distortion)
    budget = _check_budget(budget_units)
    return _fill(D.shape[0], _hull_segments(D), budget)


class AllocationCurves:
    """The weighted distortion curves ``h_i·MSE_i(r)`` of every weight of a model, built once
    (the costly part: one per model, encoder and read time) and allotted at any number of
    budgets with :meth:`counts` (the hull is computed once too).

    Args:
        weights: name → flat weights.
        sensitivity: name → ``h`` (same size, e.g. from :func:`fisher_diagonal`).
        encoder: the cell map whose copies are allotted (its ``fit`` gives each tensor's range,
            and its decoder the distortion model: MMSE or naive).
        channel: the card's channel at the read time the allocation optimises for.
        max_repetitions: ``R``, the most copies one weight may get.
        seed: the quasi-Monte Carlo seed of MMSE curves.
    """

    def __init__(self, weights: dict[str, np.ndarray], sensitivity: dict[str, np.ndarray], encoder: CellMap,
                 channel: ReadChannel, max_repetitions: int = 8, seed: Any = 0):
        if not isinstance(encoder, CellMap):
            raise StorageError(f"allocation needs a cell-map encoder, got {encoder!r}")
        if int(max_repetitions) < 1:
            raise StorageError(f"max_repetitions must be >= 1, got {max_repetitions!r}")
        self.encoder, self.names, self.sizes = encoder, list(weights), []
        curves = []
        for n in self.names:
            w = np.asarray(weights[n], dtype=np.float64).reshape(-1)
            if n not in sensitivity:
                raise StorageError(f"no sensitivity for tensor {n!r}")
            h = np.asarray(sensitivity[n], dtype=np.float64).reshape(-1)
            if h.shape != w.shape or np.any(~np.isfinite(h)) or np.any(h < 0):
                raise StorageError(f"sensitivity of {n!r} must be finite, >= 0 and of shape {w.shape}")
            curves.append(h[:, None] * distortion_curves(w, encoder, channel, int(max_repetitions), seed=seed))
            self.sizes.append(w.size)
        self.distortion = _check_distortion(np.concatenate(curves, axis=0))
        self._segments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def counts(self, budget_cells: int) -> dict[str, np.ndarray]:
        """name → uint8 repetition counts (0 = pruned), shape ``(size,)``, with
        ``encoder.cells_per_weight·Σ counts ≤ budget_cells``."""
        budget = _check_budget(budget_cells)
        if self._segments is None:
            self._segments = _hull_segments(self.distortion)
        counts = _fill(self.distortion.shape[0], self._segments, budget // self.encoder.cells_per_weight)
        out, a = {}, 0
        for n, size in zip(self.names, self.sizes):
            out[n] = counts[a:a + size].astype(np.uint8)
            a += size
        return out


def allocate_cells(weights: dict[str, np.ndarray], sensitivity: dict[str, np.ndarray], encoder: CellMap,
                   channel: ReadChannel, budget_cells: int, max_repetitions: int = 8) -> dict[str, np.ndarray]:
    """Per-weight repetition counts for every tensor (0 = pruned) minimising
    ``Σ h_i·MSE_i(r_i)`` under ``Σ encoder.cells_per_weight·r_i ≤ budget_cells``
    (:class:`AllocationCurves` at one budget; arguments as there).

    Returns:
        name → uint8 counts, shape ``(size,)``; ``encoder.cells_per_weight·Σ counts ≤ budget_cells``.
    """
    return AllocationCurves(weights, sensitivity, encoder, channel, max_repetitions).counts(budget_cells)
