"""The noise floor of the leave-one-experiment-out check (``scripts/cards/loeo_write_verify.py``,
scripts/cards/README.md, "Leave one experiment out"): the probability that a (run, level) pair's TRUE mean lies within the tolerance of
its empirical mean (cluster bootstrap over cells), and the Poisson-binomial tail that says how
likely a perfect model reaches the issue's 80 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loeo():
    from scripts.cards import loeo_write_verify

    return loeo_write_verify


@pytest.mark.parametrize("z", [stats.norm.ppf(0.75), stats.norm.ppf(0.975)])
@pytest.mark.parametrize("relative", [False, True])
def test_hit_probability_is_the_normal_coverage_of_the_tolerance_in_standard_errors(loeo, z, relative):
    """Independent cells (one program each): the bootstrap mean has variance s₀²/n exactly
    (s₀ the ddof=0 spread) and is normal to O(1/n) for symmetric data, so a tolerance of z
    standard errors is met with probability 2Φ(z) − 1: 0.5 at z = 0.674, 0.95 at z = 1.96.
    A relative tolerance r on a mean of 1000 with SE 0.5 is the absolute one r·mean up to
    O(r) = 1e-3 of the interval. Bound: 4 Monte Carlo SDs of 4000 resamples (≤ 0.032)."""
    rng = np.random.default_rng(7)
    x = rng.normal(1000.0, 10.0, 400)
    se = x.std() / np.sqrt(x.size)
    tol = z * se / x.mean() if relative else z * se
    p = loeo.hit_probability(x, np.arange(x.size), tol, relative, n_boot=4000, seed=1)
    expect = 2 * stats.norm.cdf(z) - 1
    assert abs(p - expect) <= 4 * np.sqrt(expect * (1 - expect) / 4000) + 0.005


def test_hit_probability_resamples_whole_cells(loeo):
    """Cells of equal size whose programs are identical carry no more information than one
    program per cell: with the same seed the clustered data give exactly the probability of
    the cell values alone, which is far below what rows taken as independent would claim."""
    rng = np.random.default_rng(3)
    cell_values = rng.geometric(0.02, 40).astype(float)
    rows = np.repeat(cell_values, 25)
    cells = np.repeat(np.arange(40), 25)
    p_cells = loeo.hit_probability(cell_values, np.arange(40), 0.2, True, seed=5)
    assert loeo.hit_probability(rows, cells, 0.2, True, seed=5) == p_cells
    assert loeo.hit_probability(rows, np.arange(rows.size), 0.2, True, seed=5) > p_cells + 0.1


def test_at_least_probability_is_the_binomial_tail_for_equal_probabilities(loeo):
    """Equal probabilities: the Poisson-binomial tail is the binomial survival function
    (exact arithmetic up to rounding); unequal ones: a direct enumeration of 2^6 outcomes."""
    for k in (0, 5, 58, 72):
        assert loeo.at_least_probability(np.full(72, 0.9), k) == pytest.approx(stats.binom.sf(k - 1, 72, 0.9),
                                                                                rel=1e-10, abs=1e-14)
    p = np.array([0.1, 0.5, 0.9, 0.3, 0.99, 0.0])
    outcomes = np.array(np.meshgrid(*[[0, 1]] * 6)).reshape(6, -1).T
    prob = np.prod(np.where(outcomes == 1, p, 1 - p), axis=1)
    for k in range(7):
        assert loeo.at_least_probability(p, k) == pytest.approx(prob[outcomes.sum(axis=1) >= k].sum(), abs=1e-12)


def test_program_history_counts_earlier_runs_in_the_assumed_order():
    """``loeo_covariate_checks.with_history``: the in-run repetition index of an address and
    its programs in all earlier runs (writetest1 before writetest2, whatever the row order)."""
    import pandas as pd

    from scripts.cards import loeo_covariate_checks as mod

    df = pd.DataFrame({"experiment": ["writetest2", "writetest1", "writetest1", "writetest2", "writetest1"],
                       "cell": [7, 7, 8, 7, 7]})
    out = mod.with_history(df)
    assert out.repetition.tolist() == [0, 0, 0, 1, 1]
    assert out.programs_before.tolist() == [2, 0, 0, 3, 1]
