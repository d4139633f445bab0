"""Joint pruning + cell allocation (analogmem.storage.allocate; thesis ch.3, DESIGN §5)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analogmem import load_device
from analogmem.storage.allocate import allocate_cells, distortion_curves, fisher_diagonal, greedy_allocation
from analogmem.storage.encoders import Channel, DifferentialPair, MMSE


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
        counts = allocate_cells(w, h, enc, Channel(dev, 86400.0), budget, max_repetitions=4)
        used = enc.cells_per_weight * sum(int(c.sum()) for c in counts.values())
        assert used <= budget and budget - used < enc.cells_per_weight
        assert np.all(counts["b"] == 0) and np.all(counts["a"][:50] == 0)  # h = 0: pruned


def test_distortion_curves_follow_the_model():
    """MSE_i(0) = w_i², MSE_i(r) = e_i² + v_i/r."""
    dev = load_device("rram-wan2022")
    w = np.random.default_rng(2).laplace(0, 0.05, 200)
    enc = DifferentialPair(99.0)
    ch = Channel(dev, 3600.0)
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
