"""Joint pruning + cell allocation (analogmem.storage.allocate; thesis ch.3; Isik et al., ACM TECS 2023)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analogmem import load_device
from analogmem.storage.allocate import allocate_cells, distortion_curves, fisher_diagonal, greedy_allocation
from analogmem.storage.encoders import ReadChannel, DifferentialPair, MMSE


def _convex_curves(n, R, rng):
    """D[i, r] = h_i·(e_i + v_i/r) for r ≥ 1, h_i·w_i² at r = 0: convex and decreasing
    when w_i² − (e_i + v_i) ≥ v_i/2."""
    h = rng.uniform(0.1, 2.0, n)
    v = rng.uniform(0.1, 1.0, n)
    e = rng.uniform(0.0, 0.1, n)
    w2 = e + v + v * rng.uniform(0.5, 2.0, n)
    r = np.arange(1, R + 1)
    return h[:, None] * np.concatenate([w2[:, None], e[:, None] + v[:, None] / r], axis=1)


def _brute_force(D, budget):
    n, R1 = D.shape
    best = (np.inf, None)
    for r in itertools.product(range(R1), repeat=n):
        if sum(r) <= budget:
            cost = sum(D[i, ri] for i, ri in enumerate(r))
            best = min(best, (cost, r), key=lambda b: b[0])
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [0, 3, 7, 12])
def test_greedy_is_optimal_on_convex_cases_solved_by_brute_force(seed, budget):
    """min Σ h_i MSE_i(r_i) s.t. Σ r_i ≤ B: greedy marginal gain equals the exhaustive optimum
    (4 weights × 0..4 units)."""
    D = _convex_curves(4, 4, np.random.default_rng(seed))
    r = greedy_allocation(D, budget)
    assert r.sum() <= budget
    best_cost, _ = _brute_force(D, budget)
    assert D[np.arange(4), r].sum() == pytest.approx(best_cost, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_on_non_convex_curves_uses_the_hull_and_stays_within_budget(seed):
    rng = np.random.default_rng(seed)
    D = np.sort(rng.uniform(0, 1, (5, 4)), axis=1)[:, ::-1].copy()
    D[:, 0] = D[:, 1] + 0.01  # pruning barely worse than one unit: not convex at 0 → 1
    costs = []
    for budget in range(0, 16):
        r = greedy_allocation(D, budget)
        assert r.sum() <= budget
        costs.append(D[np.arange(5), r].sum())
    assert np.all(np.diff(costs) <= 1e-12)  # more budget never hurts
    assert costs[-1] == pytest.approx(D.min(axis=1).sum())  # enough budget: every weight at its best


def test_budget_is_respected_exactly_and_spent_when_useful():
    rng = np.random.default_rng(0)
    D = _convex_curves(1000, 8, rng)
    for budget in (0, 1, 999, 2500, 7999, 8000, 10_000):
        r = greedy_allocation(D, budget)
        assert r.sum() == min(budget, 8000)


def test_allocate_cells_in_cells_and_prunes_insensitive_weights():
    dev = load_device("rram-wan2022")
    rng = np.random.default_rng(1)
    w = {"a": rng.laplace(0, 0.05, 500), "b": rng.laplace(0, 0.05, 300)}
    h = {"a": rng.uniform(0, 1, 500), "b": np.zeros(300)}
    h["a"][:50] = 0.0
    enc = MMSE(DifferentialPair("auto"))
    for budget in (1, 801, 1600, 3333):
        counts = allocate_cells(w, h, enc, ReadChannel(dev, 86400.0), budget, max_repetitions=4)
        used = enc.cells_per_weight * sum(int(c.sum()) for c in counts.values())
        assert used <= budget and budget - used < enc.cells_per_weight
        assert np.all(counts["b"] == 0) and np.all(counts["a"][:50] == 0)  # h = 0: pruned


def test_distortion_curves_follow_the_model():
    """MSE_i(0) = w_i², MSE_i(r) = e_i² + v_i/r."""
    dev = load_device("rram-wan2022")
    w = np.random.default_rng(2).laplace(0, 0.05, 200)
    enc = DifferentialPair(99.0)
    ch = ReadChannel(dev, 3600.0)
    D = distortion_curves(w, enc, ch, 4)
    side = enc.fit(w, ch)
    v = enc.noise_variance(w, side, ch)
    np.testing.assert_allclose(D[:, 0], w**2)
    np.testing.assert_allclose(D[:, 1] - D[:, 2], v / 2)
    assert np.all(np.diff(D[:, 1:], axis=1) < 0)


def test_fisher_diagonal_is_the_mean_squared_gradient():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    xs = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]
    F = fisher_diagonal(m, xs)
    ref = torch.zeros_like(m.weight, dtype=torch.float64)
    for x, y in xs:
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        ref += m.weight.grad.double() ** 2
    np.testing.assert_allclose(F["weight"], (ref / 3).numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- issue 17: MMSE-aware allocation
def test_mmse_curves_are_the_decoders_and_exact_zeros_get_no_cells():
    """With an MMSE encoder the curves are MMSE.distortion (not e² + v/r), lower than the naive
    model's; a weight that is exactly 0 (pruned before) has a flat zero curve, so it never
    gets cells even with the budget to spare (nor do some tiny ones: for them the decoder's
    error exceeds w², so pruning is better)."""
    dev = load_device("rram-wan2022")
    ch = ReadChannel(dev, 86400.0)
    w = np.random.default_rng(3).laplace(0, 0.05, 600)
    w[:200] = 0.0
    enc = MMSE(DifferentialPair("auto"))
    D = distortion_curves(w, enc, ch, 4)
    side = enc.fit(w[w != 0], ch)
    np.testing.assert_allclose(D[200:, 1:], enc.distortion(w[200:], side, ch, 4))
    assert np.all(D[:200] == 0)
    naive = distortion_curves(w, DifferentialPair("auto"), ch, 4)
    assert np.mean(D[200:, 1]) < np.mean(naive[200:, 1])  # the prior removes part of one copy's noise
    counts = allocate_cells({"w": w}, {"w": np.ones_like(w)}, enc, ch, 10 * w.size, max_repetitions=4)
    assert np.all(counts["w"][:200] == 0)
    nz, c = np.abs(w[200:]), counts["w"][200:]
    assert np.mean(c > 0) > 0.8 and nz[c == 0].max() < np.median(nz)  # only tiny weights are better pruned


def test_allocation_curves_serve_many_budgets_like_single_allocations():
    from analogmem.storage.allocate import AllocationCurves

    dev = load_device("rram-wan2022")
    rng = np.random.default_rng(4)
    w = {"a": rng.laplace(0, 0.05, 400), "b": rng.laplace(0, 0.1, 100)}
    h = {"a": rng.uniform(0, 1, 400), "b": rng.uniform(0, 1, 100)}
    enc = MMSE(DifferentialPair("auto"))
    ch = ReadChannel(dev, 86400.0)
    curves = AllocationCurves(w, h, enc, ch, 4)
    for budget in (0, 3, 500, 1001, 2000, 5000):
        got, ref = curves.counts(budget), allocate_cells(w, h, enc, ch, budget, max_repetitions=4)
        assert all(np.array_equal(got[n], ref[n]) for n in w)
        assert 2 * sum(int(c.sum()) for c in got.values()) <= budget


def test_mmse_aware_allocation_predicts_the_measured_weighted_error():
    """Allocation with the MMSE decoder's curves, read back with MMSE decoding on the emulated
    card (rram-wan2022, 1 day, 4,000 Laplacian weights, Fisher-like h ~ Gamma(0.5)): the
    objective Σ h_i MSE_i(r_i) it minimised is within 6 % of the measured Σ h_i (ŵ_i − w_i)²
    (mean of 4 chips) at 1 and 2 cells per weight — the model of the naive decoder
    over-predicts it by more than 10 %."""
    from analogmem.storage.stores import EmulatedStore

    dev = load_device("rram-wan2022")
    ch = ReadChannel(dev, 86400.0)
    rng = np.random.default_rng(7)
    w = rng.laplace(0, 0.05, 4000)
    h = rng.gamma(0.5, 1.0, 4000)
    enc = MMSE(DifferentialPair("auto"))
    D = h[:, None] * distortion_curves(w, enc, ch, 8)
    D_naive = h[:, None] * distortion_curves(w, DifferentialPair("auto"), ch, 8)
    for per_weight in (1, 2):
        budget = per_weight * w.size
        counts = greedy_allocation(D, budget // 2)
        measured = []
        for chip in range(4):
            store = EmulatedStore(dev, budget, seed=[chip, 1])
            store.put("w", w, encoder=enc, counts=counts.astype(np.uint8), t_fit_s=86400.0)
            measured.append(np.sum(h * (store.get("w", 86400.0) - w) ** 2))
        m = np.mean(measured)
        assert D[np.arange(w.size), counts].sum() == pytest.approx(m, rel=0.06)
        assert D_naive[np.arange(w.size), counts].sum() > 1.1 * m
