"""The mean of each level through bakes, emulated: the rram-radar card's ``[relaxation]
mean_uS`` rows carry the fitted law ``μ = μ_pre (t/t_pre)^m_L`` in Arrhenius-equivalent
time (analogmem.calibrate.bake_law), and a bench reproduces it."""

from __future__ import annotations

import math

import numpy as np
import pytest

import analogmem
from analogmem.emulator.bench import EmulatedBench, WriteVerify
from analogmem.emulator.cells import parse_card
from analogmem.errors import DeviceCardError


def _with_mean_rows(text: str, rows) -> str:
    """The card ``text`` with ``[relaxation] mean_uS`` replaced by ``rows`` (None: removed)."""
    import tomllib

    import tomli_w

    card = tomllib.loads(text)
    card["relaxation"].pop("mean_uS")
    if rows is not None:
        card["relaxation"]["mean_uS"] = rows
    return tomli_w.dumps(card)


def _bake_means(card, n: int, temperature_K: float, seed: int):
    """n verified cells per card level, read 3600 s after programming (the law's pre-bake
    read), baked 30 min at ``temperature_K`` and read again: per level the mean reads and
    the paired differences' SD, and the Arrhenius-equivalent age of the second read."""
    pr = card.write_verify
    lo, hi = np.array(pr.window_lo_S), np.array(pr.window_hi_S)
    target = np.where(np.isinf(hi), 1.02 * lo, np.where(lo <= 0, 0.5 * hi, np.sqrt(lo * np.where(np.isinf(hi), 1, hi))))
    b = EmulatedBench(card, n * target.size, seed=seed)
    b.program(np.repeat(target, n), verify=WriteVerify.card())
    b.wait(3600.0)
    pre = b.read().reshape(target.size, n)
    age = 3600.0 + b.bake(1800.0, temperature_K)
    post = b.read().reshape(target.size, n)
    return pre.mean(axis=1), post.mean(axis=1), (post - pre).std(axis=1, ddof=1), age


def test_emulated_mean_shift_follows_the_fitted_law(card_text):
    """30 min at 157 °C (an equivalent age past every tabulated bake): per level,
    ln(μ_post/μ_pre) of 4000 emulated cells is within the law's standard error of
    m_L·ln(t/t_pre) — for the two-sided levels and the open-above one within 4 standard
    errors of the emulation's own sampling (the law itself, not just its error bar); the
    open-below level (its cells spread towards the next knot, 80 µS away) within half the
    law's error. Without the mean rows, the levels with the largest fitted drifts are
    several of the law's errors off."""
    card = analogmem.load_device("rram-radar")
    law = card.fit_report["bake_law"]
    assert law["prebake_age_s"] == 3600.0
    n = 4000
    mu_pre, mu_post, sd_diff, age = _bake_means(card, n, 430.15, seed=1)
    h = math.log(age / 3600.0)
    assert age > max(card.relaxation.times_s[:4])  # past the last measured bake: the law's rows
    emulated = np.log(mu_post / mu_pre)
    want = np.array([law["mean_exponent"][str(L)] for L in range(mu_pre.size)]) * h
    se = np.array([law["mean_exponent_se"][str(L)] for L in range(mu_pre.size)]) * h
    sampling = sd_diff / math.sqrt(n) / mu_pre
    assert np.all(np.abs(emulated - want) < se), (emulated, want, se)
    bottom = int(np.argmin(mu_pre))  # the open-below level
    for L in range(mu_pre.size):
        if L != bottom:
            assert abs(emulated[L] - want[L]) < 4 * sampling[L], (L, emulated[L], want[L], sampling[L])
    assert abs(emulated[bottom] - want[bottom]) < 0.5 * se[bottom]
    # the same bench without the mean rows: no mean shift, far from the law where it drifts most
    flat = parse_card(_with_mean_rows(card_text("rram-radar"), None), "rram-radar")
    assert not flat.relaxation.mean_uS
    mu0_pre, mu0_post, _, _ = _bake_means(flat, n, 430.15, seed=1)
    off = np.abs(np.log(mu0_post / mu0_pre) - want) / se
    assert off[bottom] > 5 and np.all(np.abs(np.log(mu0_post / mu0_pre)) < 4 * sampling + 1e-12)


def test_mean_rows_are_the_law_at_the_knots():
    """Each row is the law's shift of the level's knot conductance, 0 up to the pre-bake read."""
    card = analogmem.load_device("rram-radar")
    rel, law = card.relaxation, card.fit_report["bake_law"]
    g_knot = np.array(rel.x_knots) * card.range.g_max_S
    order = np.argsort(-g_knot)  # knot j ↔ level: level 0 is the highest conductance
    levels = np.empty(len(g_knot), dtype=int)
    levels[order] = np.arange(len(g_knot))
    for t, row in zip(rel.times_s, rel.mean_uS):
        m = np.array([law["mean_exponent"][str(L)] for L in levels])
        want = g_knot * ((max(t, 3600.0) / 3600.0) ** m - 1) * 1e6 * rel.g_ref_S / card.range.g_max_S
        np.testing.assert_allclose(row, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(card.relaxation_mean_S(g_knot, t), want * 1e-6, rtol=1e-9, atol=1e-18)


def test_bad_mean_rows_are_refused_naming_the_field(card_text):
    text = card_text("rram-radar")
    for bad in ([[0.0, 1.0]], 3, [[0.0] * 8] * 7, [[0.0] * 7] * 8, [["x"] * 8] * 8):
        with pytest.raises(DeviceCardError, match="mean_uS"):
            parse_card(_with_mean_rows(text, bad), "rram-radar")
