"""Spread growth through bakes as a law in Arrhenius-equivalent age (scripts/cards/README.md, "Retention past the tabulated ages").

``analogmem.calibrate.bake_law``: σ_post = σ_pre (t/t_pre)^c_L per level, with a
bake-to-bake and a level-to-level component; the shipped rram-radar card's rows past its
last bake come from that law, so a bake hotter than any measured one keeps growing the
spread instead of holding it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analogmem import CalibrationError, EmulatedBench, WriteVerify, load_device
from analogmem.calibrate.bake_law import BakePoint, fit_bake_law, misread_fraction

T_PRE = 3600.0


def synthetic_points(exponents, ages, sd_level, n=400, seed=0):
    """Bake points drawn from the law: per (bake, level) a measured spread from N reads."""
    rng = np.random.default_rng(seed)
    pts = []
    for e, age in enumerate(ages):
        for lv, c in enumerate(exponents):
            pre = 1e-6 * (1 + lv)
            post_true = pre * (age / T_PRE) ** c * math.exp(sd_level * rng.standard_normal())
            gp = rng.normal(1e-4, pre, n)
            gq = rng.normal(1e-4, post_true, n)
            pts.append(BakePoint(f"bake{e}", lv, age, T_PRE, n, n, float(gp.mean()), float(gq.mean()),
                                 float(gp.std(ddof=1)), float(gq.std(ddof=1))))
    return pts


def test_known_exponents_and_level_spread_recovered():
    """Points drawn from the law with known c_L (six bakes from 1e8 to 1e12 s, 400 reads
    each) give back every exponent within 4 of its standard errors and the level-to-level
    SD within a factor 2 (a SD from 48 residuals: relative SE ~0.1)."""
    c = [0.0, 0.02, 0.05, 0.08]
    law = fit_bake_law(synthetic_points(c, [1e8, 1e9, 1e10, 1e11, 1e12, 3e12], 0.05))
    for lv, want in enumerate(c):
        got, se = law.spread.exponent[lv], math.sqrt(law.spread.exponent_var[lv])
        assert abs(got - want) < 4 * se, (lv, got, want, se)
    assert 0.025 < law.spread.sd_level < 0.1


def test_prediction_intervals_cover_held_out_synthetic_bakes():
    """Fitted on 5 bakes, the 80 % interval of a new bake's spread covers 70–90 % of 40 new
    (bake, level) spreads drawn from the same law (binomial SD of the share 6 %)."""
    c = [0.0, 0.02, 0.05, 0.08]
    law = fit_bake_law(synthetic_points(c, [1e8, 1e9, 1e10, 1e11, 1e12], 0.05, seed=1))
    new = synthetic_points(c, [3e12] * 10, 0.05, seed=2)
    hits = [law.predict(p.level, p.age_s, p.prebake_age_s, p.mean_pre_S, p.std_pre_S, p.n_post)["std_post_S"]
            for p in new]
    share = np.mean([h["interval80"][0] <= p.std_post_S <= h["interval80"][1] for h, p in zip(hits, new)])
    assert 0.65 <= share <= 0.95, share


def test_misread_counts_only_the_finite_edge_of_an_open_level():
    """A level open above misreads only below its edge; a two-sided one on both sides."""
    assert misread_fraction(1.0, 0.5, (0.0, 1.0)) == pytest.approx(0.5)
    assert misread_fraction(2.0, 0.5, (1.0, math.inf)) == pytest.approx(0.02275, rel=1e-3)
    assert misread_fraction(1.0, 0.5, (0.5, 1.5)) == pytest.approx(2 * 0.15866, rel=1e-3)
    with pytest.raises(CalibrationError, match="at least 2 experiments"):
        fit_bake_law(synthetic_points([0.01], [1e9], 0.0))


def test_shipped_card_keeps_growing_the_spread_past_its_last_bake():
    """The shipped rram-radar card baked 30 min at 157 °C, past every measured bake (120 °C):
    every level whose fitted exponent is >= 0.04 reads with a larger spread than after 30 min
    at 120 °C, by more than 4 relative standard errors 1/sqrt(2(n−1)) of a SD of n cells
    (a card that held its last bake's spread would give the same); the card's rows past the
    last bake grow with t for those levels."""
    radar = load_device("rram-radar")
    law = radar.fit_report["bake_law"]
    pr = radar.write_verify
    n = 4000
    levels = range(pr.n_levels)
    targets = np.repeat([math.exp(np.interp(0.5, pr.probabilities, pr.log_g_quantiles[lv])) for lv in levels], n)
    spreads, ages = {}, {}
    for temp in (393.15, 430.15):
        bench = EmulatedBench(radar, targets.size, seed=5)
        bench.program(targets, verify=WriteVerify.card())
        bench.wait(law["prebake_age_s"])
        bench.bake(1800.0, temp)
        spreads[temp] = bench.read().reshape(pr.n_levels, n).std(axis=1, ddof=1)
        ages[temp] = bench.time_s
    rl = radar.relaxation
    last_bake = max(t for t in rl.times_s if t < law["law_times_s"][0])
    assert ages[393.15] <= last_bake * 1.001 < ages[430.15]
    rel = 4 / math.sqrt(2 * (n - 1))
    growing = [lv for lv in levels if law["spread_exponent"][str(lv)] >= 0.04]
    assert len(growing) >= 3
    x = np.array([math.exp(np.interp(0.5, pr.probabilities, pr.log_g_quantiles[lv])) for lv in levels]) / rl.g_ref_S
    rows = np.array(rl.sigma_rows(x))  # (times, levels)
    past = np.asarray(rl.times_s) >= last_bake
    for lv in growing:
        assert spreads[430.15][lv] > spreads[393.15][lv] * (1 + rel), (lv, spreads[430.15][lv], spreads[393.15][lv])
        assert np.all(np.diff(rows[past, lv]) > 0), (lv, rows[past, lv])
