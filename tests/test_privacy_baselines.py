"""Baselines of the RRSC paper: PrivUnitG (Asi–Feldman–Talwar 2022) and SQKR
(Chen–Kairouz–Özgür 2020), and the claim that RRSC beats SQKR at every plotted point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from stats_helpers import unit_rows

from analogmem.privacy import (
    PrivacyParameterError,
    kashin_representation,
    paper_inputs,
    privunitg,
    privunitg_mse,
    privunitg_parameters,
    random_tight_frame,
    rrsc_mse,
    sqkr_mean,
)
from analogmem.privacy.sweeps import PAPER_PRIVUNITG_B_EQ_EPS


@pytest.mark.parametrize("eps", [0.5, 1.0, 4.0, 8.0, 20.0])
def test_privunitg_parameters_satisfy_the_privacy_constraint(eps):
    # ε-LDP of PrivUnitG: p(1 − q)/(q(1 − p)) = e^ε with q = P(N(0,1) ≥ γ); σ = 1/E[α].
    p = privunitg_parameters(100, eps)
    q = special.ndtr(-p.gamma)
    assert p.p * (1 - q) / (q * (1 - p.p)) == pytest.approx(math.exp(eps), rel=1e-8)
    phi = math.exp(-p.gamma**2 / 2) / math.sqrt(2 * math.pi)
    mean_alpha = p.p * phi / q - (1 - p.p) * phi / (1 - q)
    assert p.scale == pytest.approx(1 / mean_alpha, rel=1e-10)


def test_privunitg_closed_form_matches_paper():
    # Paper figure (b = ε = 1…8, d = 500, n = 5000): closed form within 5 % on average.
    rel = [privunitg_mse(500, eps, 5000) / v - 1 for eps, v in PAPER_PRIVUNITG_B_EQ_EPS.items()]
    assert np.mean(np.abs(rel)) < 0.05


@pytest.mark.parametrize("eps", [1.0, 6.0])
def test_privunitg_empirical_mse_matches_closed_form(eps):
    # E‖x̂ − x̄‖² = (σ²(d − 1 + E[α²]) − 1)/n at d = 500, n = 5000; 20 runs, t-test p > 0.001.
    d, n = 500, 5000
    x = paper_inputs(d, n, seed=21)
    params = privunitg_parameters(d, eps)
    errs = [np.sum((privunitg(x, eps, s, params=params).mean(axis=0) - x.mean(axis=0)) ** 2)
            for s in np.random.SeedSequence(4).spawn(20)]
    formula = params.variance_per_user / n
    assert stats.ttest_1samp(errs, formula).pvalue > 1e-3
    assert abs(np.mean(errs) / formula - 1) < 0.08


def test_privunitg_cap_probability_and_unbiasedness():
    # The fraction of outputs in the cap ⟨x̂/σ, x⟩ ≥ γ is p (binomial 5 SE); outputs are unbiased.
    d, n, eps = 10, 40_000, 2.0
    params = privunitg_parameters(d, eps)
    x = np.tile(unit_rows(1, d, 0), (n, 1))
    out = privunitg(x, eps, 3, params=params)
    alpha = np.einsum("ij,ij->i", out, x) / params.scale
    frac = np.mean(alpha >= params.gamma)
    assert abs(frac - params.p) < 5 * math.sqrt(params.p * (1 - params.p) / n)
    err = out.mean(axis=0) - x[0]
    assert np.all(np.abs(err) < 5 * out.std(axis=0) / math.sqrt(n))


def test_kashin_representation_reconstructs_and_is_mostly_bounded():
    # a @ U = x exactly; with N = 2^(⌈log₂ d⌉+1) most coefficients respect |a| ≤ K/√N.
    x = unit_rows(200, 100, 1)
    frame = random_tight_frame(100, 2)
    assert frame.shape == (256, 100)
    np.testing.assert_allclose(frame.T @ frame, np.eye(100), atol=1e-12)
    a, level = kashin_representation(x, frame)
    np.testing.assert_allclose(a @ frame, x, atol=1e-12)
    assert np.mean(np.abs(a) > level) < 0.1
    assert np.abs(a).max() < 3 * level


def test_sqkr_is_unbiased_for_the_clipped_representation():
    # SQKR estimates mean(clip(a)) @ U without bias (quantisation, sampling and 2^k-RR are all
    # unbiased); 300 runs, every coordinate of the mean error within 5 SE.
    d, n, eps, bits = 8, 100, 2.0, 2
    x = unit_rows(n, d, 5)
    frame = random_tight_frame(d, 6)
    a, level = kashin_representation(x, frame)
    target = np.clip(a, -level, level).mean(axis=0) @ frame
    est = np.array([sqkr_mean(x, eps, bits, s, frame=frame, coefficients=(a, level))
                    for s in np.random.SeedSequence(8).spawn(300)])
    se = est.std(axis=0) / math.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - target) < 5 * se)


def test_rrsc_beats_sqkr_at_paper_points():
    # Paper figure: RRSC's MSE is below SQKR's at every (b, ε); checked at the ends of both
    # sweeps at d = 500, n = 5000 with 2 runs (the gap is > 2×, run-to-run noise ~ 6 %).
    d, n = 500, 5000
    for run, s in enumerate(np.random.SeedSequence(12).spawn(2)):
        s_x, s_frame, s_q = s.spawn(3)
        x = paper_inputs(d, n, s_x)
        frame = random_tight_frame(d, s_frame)
        rep = kashin_representation(x, frame)
        for (b, eps), sq in zip([(1, 6.0), (8, 6.0), (1, 1.0), (8, 8.0)], s_q.spawn(4)):
            err = np.sum((sqkr_mean(x, eps, b, sq, frame=frame, coefficients=rep) - x.mean(axis=0)) ** 2)
            assert rrsc_mse(d, eps, b, n) < err, (b, eps, run)


def test_bad_inputs_are_named():
    with pytest.raises(PrivacyParameterError, match="epsilon=0"):
        privunitg_parameters(10, 0)
    with pytest.raises(PrivacyParameterError, match=r"vectors\[0\] has norm 3"):
        privunitg(np.full((1, 9), 1.0), 1.0, 0)
    x = unit_rows(4, 8, 0)
    with pytest.raises(PrivacyParameterError, match="k=3 .* bits=2"):
        sqkr_mean(x, 4.0, 2, 0, k=3)
    with pytest.raises(PrivacyParameterError, match="bits=0"):
        sqkr_mean(x, 4.0, 0, 0)
    with pytest.raises(PrivacyParameterError, match="d=10, epsilon=1.0"):
        privunitg(x, 1.0, 0, params=privunitg_parameters(10, 1.0))
