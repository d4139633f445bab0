"""RRSC (thesis ch.9; Isik et al., NeurIPS 2023): geometry, the unbiasing constant C,
the exact MSE (C² − 1)/n, ε-LDP, the paper's figure values, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from analogmem.errors import AnalogMemError
from stats_helpers import unit_rows

from analogmem.privacy import (
    RRSC,
    PrivacyParameterError,
    RRSCAggregator,
    expected_top_k_sums,
    paper_inputs,
    rrsc_mse,
    rrsc_parameters,
    simplex_codebook,
)
from analogmem.privacy.sweeps import PAPER_RRSC_B_EQ_EPS, PAPER_RRSC_EPS6


@pytest.mark.parametrize("m", [2, 3, 8, 256])
def test_simplex_codebook_is_a_regular_simplex(m):
    # Codewords: unit norm, pairwise inner product −1/(M−1), summing to zero.
    c = simplex_codebook(m)
    assert c.shape == (m, m - 1)
    gram = c @ c.T
    np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-12)
    off = gram[~np.eye(m, dtype=bool)]
    np.testing.assert_allclose(off, -1.0 / (m - 1), atol=1e-12)
    np.testing.assert_allclose(c.sum(axis=0), 0.0, atol=1e-12)


def test_top_k_sums_match_exact_order_statistics():
    # E[max of 2 iid N(0,1)] = 1/√π, E[max of 3] = 3/(2√π); for M = 2 the top-1 inner product
    # is |U_1| with E|U_1| = Γ(d/2)/(√π Γ((d+1)/2)) on the sphere of R^d.
    d = 500
    e_abs_u1 = math.exp(special.gammaln(d / 2) - special.gammaln((d + 1) / 2)) / math.sqrt(math.pi)
    assert expected_top_k_sums(d, 2)[1] == pytest.approx(e_abs_u1, rel=1e-10)
    sphere = expected_top_k_sums(d, 3) * math.sqrt(2 / 3) * math.exp(
        special.gammaln((d + 1) / 2) - special.gammaln(d / 2)) * math.sqrt(2)
    assert sphere[1] == pytest.approx(1.5 / math.sqrt(math.pi), rel=1e-10)
    sums = expected_top_k_sums(40, 32)
    assert sums[0] == 0.0 and sums[-1] == 0.0
    assert np.all(np.diff(sums[: 17]) > 0)  # adding positive order statistics first


def test_top_k_sums_match_monte_carlo():
    # E[sum of k largest ⟨U, c_j⟩], U uniform on S^{d−1}: integral vs 2·10^5 samples (5 SE).
    d, m, n = 20, 8, 200_000
    rng = np.random.default_rng(11)
    g = rng.standard_normal((n, d))
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    top = -np.sort(-(u[:, : m - 1] @ simplex_codebook(m).T), axis=1)
    partial = np.cumsum(top, axis=1)[:, :-1]  # k = 1..M−1
    se = partial.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(partial.mean(axis=0) - expected_top_k_sums(d, m)[1:m]) < 5 * se)


def test_closed_form_reproduces_paper_figure():
    # The RRSC paper's figure (NeurIPS 2023; docs/privacy.md), d = 500, n = 5000: (C² − 1)/n within 5 % on average over the
    # 16 plotted points (ε = 6, b = 1…8 and b = ε = 1…8), and within 6 % at every point.
    rel = [rrsc_mse(500, 6, b, 5000) / v - 1 for b, v in PAPER_RRSC_EPS6.items()]
    rel += [rrsc_mse(500, b, b, 5000) / v - 1 for b, v in PAPER_RRSC_B_EQ_EPS.items()]
    assert np.mean(np.abs(rel)) < 0.05
    assert np.max(np.abs(rel)) < 0.06


def test_optimal_k_minimises_the_constant():
    # C(k) = (k e^ε + M − k) / ((e^ε − 1) E[top-k sum]); the default k is its argmin.
    d, eps, b = 500, 6.0, 8
    m = 2**b
    top = expected_top_k_sums(d, m)
    c = [(k * math.exp(eps) + m - k) / ((math.exp(eps) - 1) * top[k]) for k in range(1, m)]
    p = rrsc_parameters(d, eps, b)
    assert p.k == int(np.argmin(c)) + 1
    assert p.unbiasing_constant == pytest.approx(min(c), rel=1e-12)
    assert p.variance_per_user == pytest.approx(min(c) ** 2 - 1, rel=1e-12)
    assert rrsc_parameters(d, eps, b, k=1).unbiasing_constant == pytest.approx(c[0], rel=1e-12)


@pytest.mark.parametrize("d,eps,bits", [(8, 1.0, 3), (50, 0.5, 5), (500, 6.0, 8), (16, 30.0, 4)])
def test_output_probabilities_are_eps_ldp(d, eps, bits):
    # ε-LDP: for a fixed shared frame, P(j | x) / P(j | x') ≤ e^ε for every codeword j and every
    # pair of inputs (x, x'); the bound is attained (the mechanism spends all of ε).
    mech = RRSC(d, eps, bits)
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(5):
        frame = mech.frame(rng)
        p = mech.output_probabilities(unit_rows(40, d, rng), frame)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        ratio = (p[:, None, :] / p[None, :, :]).max()
        worst = max(worst, ratio)
        assert ratio <= math.exp(eps) * (1 + 1e-12)
    assert worst == pytest.approx(math.exp(eps), rel=1e-9)


@pytest.mark.parametrize("bits,eps", [(1, 6.0), (8, 6.0), (4, 4.0)])
def test_empirical_mse_matches_exact_formula_at_paper_scale(bits, eps):
    # E‖x̂ − x̄‖² = (C² − 1)/n at d = 500, n = 5000 (paper inputs); 24 runs: two-sided t-test
    # p > 0.001 and the mean within 6 % of the formula (run-to-run sd ≈ 6 %/√24).
    d, n, runs = 500, 5000, 24
    x = paper_inputs(d, n, seed=5)
    mech = RRSC(d, eps, bits)
    errs = [np.sum((mech.simulate_mean(x, s) - x.mean(axis=0)) ** 2) for s in np.random.SeedSequence(7).spawn(runs)]
    formula = mech.mse(n)
    assert stats.ttest_1samp(errs, formula).pvalue > 1e-3
    assert abs(np.mean(errs) / formula - 1) < 0.06


def test_literal_mechanism_matches_formula_and_fast_simulation():
    # The literal mechanism (Haar frames, encode, decode) is unbiased with per-user variance
    # C² − 1, and the fast simulation draws the same distribution of ⟨x_i, x̂_i⟩ = C·s_j (KS).
    d, eps, bits, n = 16, 2.0, 3, 3000
    x = unit_rows(n, d, 1)
    agg = RRSCAggregator(d, eps, bits, seed=2)
    est = agg.decode_each(agg.encode(x, seed=3))
    sq = np.sum((est - x) ** 2, axis=1)  # i.i.d. across users, mean C² − 1
    c = agg.mechanism.unbiasing_constant
    assert abs(sq.mean() - (c * c - 1)) < 4 * sq.std() / math.sqrt(n)
    # unbiased: every coordinate of the mean error within 4 SE
    err = (est - x).mean(axis=0)
    assert np.all(np.abs(err) < 4 * (est - x).std(axis=0) / math.sqrt(n))
    proj_literal = np.einsum("ij,ij->i", est, x)
    proj_fast = np.einsum("ij,ij->i", agg.mechanism.simulate_each(x, 4), x)
    assert stats.ks_2samp(proj_literal, proj_fast).pvalue > 1e-3
    np.testing.assert_allclose(np.linalg.norm(est, axis=1), c, rtol=1e-10)  # C·(unit codeword)


def test_aggregator_shared_randomness_is_order_independent():
    d, n = 12, 30
    x = unit_rows(n, d, 8)
    agg = RRSCAggregator(d, 3.0, 2, seed=9)
    idx = agg.encode(x, seed=1)
    assert idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < 4
    np.testing.assert_array_equal(idx, RRSCAggregator(d, 3.0, 2, seed=9).encode(x, seed=1))
    perm = np.random.default_rng(0).permutation(n)
    shuffled = agg.decode_each(idx[perm], client_ids=perm)
    np.testing.assert_allclose(shuffled, agg.decode_each(idx)[perm], rtol=1e-12)
    assert not np.allclose(agg.frame(0, round=0), agg.frame(0, round=1))
    assert agg.mse(n) == pytest.approx(agg.mechanism.variance_per_user / n)


def test_same_seed_same_result():
    x = unit_rows(100, 50, 2)
    mech = RRSC(50, 2.0, 4)
    np.testing.assert_array_equal(mech.simulate_mean(x, 5), mech.simulate_mean(x, 5))
    assert not np.array_equal(mech.simulate_mean(x, 5), mech.simulate_mean(x, 6))


@pytest.mark.parametrize("kwargs,needle", [
    ({"d": 500, "epsilon": 0.0, "bits": 2}, "epsilon=0.0"),
    ({"d": 500, "epsilon": -1.0, "bits": 2}, "epsilon=-1.0"),
    ({"d": 500, "epsilon": float("nan"), "bits": 2}, "epsilon=nan"),
    ({"d": 500, "epsilon": 1.0, "bits": 0}, "bits=0"),
    ({"d": 500, "epsilon": 1.0, "bits": 2.5}, "2.5"),
    ({"d": 100, "epsilon": 1.0, "bits": 7}, "bits=7, d=100"),
    ({"d": 1, "epsilon": 1.0, "bits": 1}, "d=1"),
    ({"d": 500, "epsilon": 1.0, "bits": 3, "k": 8}, "k=8"),
])
def test_bad_parameters_are_named(kwargs, needle):
    with pytest.raises(PrivacyParameterError, match=needle) as info:
        RRSC(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AnalogMemError)


def test_bad_vectors_and_indices_are_named():
    mech = RRSC(10, 1.0, 2)
    x = unit_rows(5, 10, 0)
    bad = x.copy()
    bad[3] *= 2.0
    with pytest.raises(PrivacyParameterError, match=r"vectors\[3\] has norm 2"):
        mech.simulate_mean(bad, 0)
    with pytest.raises(PrivacyParameterError, match="dimension 9 but .* d=10"):
        mech.simulate_mean(unit_rows(5, 9, 0), 0)
    with pytest.raises(PrivacyParameterError, match="NaN"):
        mech.simulate_mean(np.full((2, 10), np.nan), 0)
    agg = RRSCAggregator(10, 1.0, 2, seed=0)
    with pytest.raises(PrivacyParameterError, match="indices must be in \\[0, 3\\], got 4"):
        agg.decode(np.array([0, 4]))
    with pytest.raises(PrivacyParameterError, match="client_ids"):
        agg.encode(x, client_ids=[0, 1])
