"""The Hermes PCM and CMO/HfOx ReRAM cards against their published models (issue 30).

For each new card, at >= 9 (target, time) points plus the programmed state, the sample
mean and standard deviation of what analogmem reads are compared with an independent
numpy Monte Carlo of the published formulas, written out below from the source models
(Le Gallo et al. 2023 as aihwkit's ``HermesNoiseModel`` states it; Falcone et al. / Lombardo
et al. 2024 as aihwkit's ``ReRamCMONoiseModel`` states it) — not from
:mod:`analogmem.emulator.cells`. Bounds: mean within 1 % and std within 3 % (the issue's);
with ``N`` = 100 000 cells per point on each side, the relative standard error of a std
ratio is about sqrt(1/N) ≈ 0.32 % and of a mean ratio below 0.1 % at these points, so the
bounds sit > 9 standard errors out and a failure is a model error, not chance; the
comparison's power is checked by requiring each card to *fail* its sister card's formula.
Backends: the compiled kernels (float64 and float32), the numpy reference and torch (CPU).

Run as a script (``python tests/test_cards_published.py``) for the table of ours against
the formulas (the issue's closing-note table).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import analogmem
from analogmem import EmulatedBench
from analogmem.emulator.cells import parse_card
from analogmem.errors import DeviceCardError

N = 100_000
YEAR = 365 * 86400.0
MEAN_RTOL, STD_RTOL = 0.01, 0.03

# --------------------------------------------------------------------------- published models
# HERMES (aihwkit HermesNoiseModel): conductances in µS, x = g/g_max.
HERMES = {
    2: dict(g_max=20.7, t0=300.0, prog=[0.16603222, 4.71806468, -8.48101252, 4.68961419],
            sig_low=(-0.0117, -0.0057, 0.0091, 0.04), sig_break=0.3055, sig_high=(0.0073, 0.0093, -0.0118),
            q_low=(-0.0117, -0.0069, 0.015, 0.04), q_break=0.16, q_high=(0.0123, 0.0211, -0.0280, 0.0069)),
    1: dict(g_max=10.35, t0=200.0, prog=[0.15781817, 2.32443916, -2.16310839, 0.68841818],
            sig_low=(-0.0120, -0.0023, 0.0124, 0.04), sig_break=0.3039, sig_high=(0.0104, 0.0116, -0.0165),
            q_low=(-0.0078, 0.0038, 0.0179, 0.04), q_break=0.1591, q_high=(0.0088, 0.0768, -0.1352, 0.0664)),
}
HERMES_T_READ = 512e-9


def _branch(x, low, x_break, high):
    """clip(a ln x + b, lo, hi) below x_break, Σ c_k x^k from it on."""
    a, b, lo, hi = low
    lower = np.clip(a * np.log(np.maximum(x, 1e-7)) + b, lo, hi)
    upper = sum(c * x**k for k, c in enumerate(high))
    return np.where(x < x_break, lower, upper)


def hermes_formula(n_devices, g_t_uS, t_s, rng, n=N):
    """Programmed (t = None) or read conductances (µS) of the published HERMES model."""
    m = HERMES[n_devices]
    x = g_t_uS / m["g_max"]
    sig_p = sum(c * x**k for k, c in enumerate(m["prog"]))
    g_p = np.maximum(g_t_uS + sig_p * rng.standard_normal(n), 0.0)
    if t_s is None:
        return g_p
    mu = _branch(np.full(n, x), (-0.0387, -0.0182, 0.0720, 0.13), 0.0945, (0.0736, -0.0126, -0.0436))
    sd = _branch(np.full(n, x), m["sig_low"], m["sig_break"], m["sig_high"])
    nu = np.abs(mu + sd * rng.standard_normal(n))
    t = t_s + m["t0"]
    g_d = g_p * (t / m["t0"]) ** (-nu)
    q = _branch(np.abs(g_p) / m["g_max"], m["q_low"], m["q_break"], m["q_high"])  # at g_P, as aihwkit
    s = q * math.sqrt(math.log((t + HERMES_T_READ) / (2 * HERMES_T_READ)))
    return np.maximum(g_d + np.abs(g_d) * s * rng.standard_normal(n), 0.0)


# CMO/HfOx (aihwkit ReRamCMONoiseModel): conductances in µS.
CMO_PROG = {2.0: (0.0112185391, 0.01129027418), 0.2: (0.00081107, 0.00106879)}
CMO_G_MIN, CMO_G_MAX = 9.0, 88.19


def cmo_formula(acceptance_pct, g_t_uS, t_s, rng, n=N):
    """Programmed (t = None) or read conductances (µS) of the published CMO/HfOx model (t >= 1 s)."""
    c0, c1 = CMO_PROG[acceptance_pct]
    g_p = g_t_uS + (c0 + c1 * g_t_uS) * rng.standard_normal(n)
    if t_s is None:
        return g_p
    g_mean = g_p - 0.08900206 * math.log(t_s)
    g_d = g_mean + (0.04201137 * math.log(t_s) + 0.41183342) * rng.standard_normal(n)
    s_read = 0.0277316483 * np.log10(g_d) * math.sqrt(math.log((t_s + 1e-6) / (2e-6)))
    return np.clip(g_d + s_read * rng.standard_normal(n), CMO_G_MIN, CMO_G_MAX)


CARDS = {
    "pcm-hermes2023": (lambda g, t, rng: hermes_formula(2, g, t, rng), [0.05, 0.2, 0.6],
                       [0.0, 3600.0, 86400.0, YEAR]),
    "pcm-hermes2023-1dev": (lambda g, t, rng: hermes_formula(1, g, t, rng), [0.05, 0.2, 0.6],
                            [0.0, 3600.0, 86400.0, YEAR]),
    "rram-cmo-hfox": (lambda g, t, rng: cmo_formula(2.0, g, t, rng), [0.25, 0.55, 0.9],
                      [1.0, 3600.0, 86400.0, 1e7]),
    "rram-cmo-hfox-0.2pct": (lambda g, t, rng: cmo_formula(0.2, g, t, rng), [0.25, 0.55, 0.9],
                             [1.0, 3600.0, 86400.0, 1e7]),
}
SISTER = {"pcm-hermes2023": "pcm-hermes2023-1dev", "pcm-hermes2023-1dev": "pcm-hermes2023",
          "rram-cmo-hfox": "rram-cmo-hfox-0.2pct", "rram-cmo-hfox-0.2pct": "rram-cmo-hfox"}
BACKENDS = [("cython", "float64"), ("cython", "float32"), ("numpy", "float64"), ("torch", "float64")]


def _ours(card, xs, times, backend="cython", dtype="float64", seed=5):
    """Our programmed state and reads (µS), one block of N cells per relative target."""
    dev = analogmem.load_device(card)
    g_t = np.repeat(np.asarray(xs) * dev.g_max_S, N)
    bench = EmulatedBench(dev, g_t.size, seed=seed, backend=backend, dtype=dtype)
    bench.program(g_t)
    to_np = lambda a: np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.float64) * 1e6  # noqa: E731
    out = {None: to_np(bench.cell_state()["g_prog"])}
    for t in times:
        out[t] = to_np(bench.read(t))
    return dev, {t: [v[b * N:(b + 1) * N] for b in range(len(xs))] for t, v in out.items()}


def comparison_rows(card, backend="cython", dtype="float64", formula_card=None):
    """Per (target, time): ours vs the formula's mean and std (µS) and their relative errors."""
    formula, xs, times = CARDS[formula_card or card]
    dev, ours = _ours(card, xs, times, backend, dtype)
    rng = np.random.default_rng(20261207)
    rows = []
    for t in [None, *times]:
        for b, x in enumerate(xs):
            g_t = x * dev.g_max_S * 1e6
            ref = formula(g_t, t, rng)
            mine = ours[t][b]
            rows.append(dict(card=card, g_t_uS=g_t, t_s=t, mean=mine.mean(), mean_ref=ref.mean(),
                             std=mine.std(ddof=1), std_ref=ref.std(ddof=1),
                             mean_err=mine.mean() / ref.mean() - 1, std_err=mine.std(ddof=1) / ref.std(ddof=1) - 1))
    return rows


@pytest.mark.parametrize("backend, dtype", BACKENDS)
@pytest.mark.parametrize("card", list(CARDS))
def test_moments_match_the_published_formulas(card, backend, dtype):
    rows = comparison_rows(card, backend, dtype)
    assert len([r for r in rows if r["t_s"] is not None]) >= 9
    bad = [r for r in rows if abs(r["mean_err"]) > MEAN_RTOL or abs(r["std_err"]) > STD_RTOL]
    assert not bad, "\n".join(f"g_T={r['g_t_uS']:.3g} µS t={r['t_s']}: mean {r['mean']:.5g} vs {r['mean_ref']:.5g}, "
                              f"std {r['std']:.5g} vs {r['std_ref']:.5g}" for r in bad)


@pytest.mark.parametrize("card", list(CARDS))
def test_the_comparison_tells_sister_cards_apart(card):
    """Power: each card's reads fail its sister card's formula (the other device count or
    acceptance range) at some point, so the bounds above can reject a wrong model."""
    rows = comparison_rows(card, formula_card=SISTER[card])
    assert any(abs(r["mean_err"]) > MEAN_RTOL or abs(r["std_err"]) > STD_RTOL for r in rows)


def test_cmo_holds_the_published_laws_outside_1s_to_10_years():
    """Before 1 s the card reads as at 1 s, after 10 years as at 10 years (the span of the
    card's log-linear laws; the source publishes no limit and its laws go negative below 55 µs)."""
    formula = CARDS["rram-cmo-hfox"][0]
    _, ours = _ours("rram-cmo-hfox", [0.5], [0.25, 20 * YEAR], seed=8)
    rng = np.random.default_rng(3)
    for t, t_held in ((0.25, 1.0), (20 * YEAR, 10 * YEAR)):
        ref = formula(0.5 * CMO_G_MAX, t_held, rng)
        mine = ours[t][0]
        assert abs(mine.mean() / ref.mean() - 1) < MEAN_RTOL and abs(mine.std() / ref.std() - 1) < STD_RTOL, t
    # and it does not follow the unclamped law there: at 20 years the mean would be lower still
    far = formula(0.5 * CMO_G_MAX, 20 * YEAR, rng)
    assert ours[20 * YEAR][0].mean() - far.mean() > 0.5 * 0.08900206 * math.log(2)


def test_hermes_extrapolates_its_power_law_beyond_published_times():
    """No time limit is published; the card applies the power law at 10 years as the formula does."""
    formula = CARDS["pcm-hermes2023"][0]
    _, ours = _ours("pcm-hermes2023", [0.4], [10 * YEAR], seed=9)
    ref = formula(0.4 * 20.7, 10 * YEAR, np.random.default_rng(4))
    mine = ours[10 * YEAR][0]
    assert abs(mine.mean() / ref.mean() - 1) < MEAN_RTOL and abs(mine.std() / ref.std() - 1) < STD_RTOL


# --------------------------------------------------------------------------- custom drift ν(g)
CUSTOM = """
[card]
name = "pcm-custom-drift"
schema_version = 1
technology = "PCM"
input = "conductance"
[source]
citation = "a user's measured drift exponents"
[range]
g_min_S = 0.0
g_max_S = 25e-6
[programming]
model = "polynomial"
g_ref_S = 25e-6
coefficients_uS = [0.2]
[drift]
model = "table"
t0_s = 20.0
g_knots_S = [0.0, 5e-6, 15e-6, 25e-6]
mu = [0.12, 0.08, 0.05, 0.03]
sigma = [0.03, 0.02, 0.01, 0.0]
[read_noise]
model = "none"
[relaxation]
model = "none"
[faults]
"""


def test_custom_drift_table_nu_of_g():
    """ν ~ |N(μ(g), σ(g))| with μ, σ linear in g between the card's knots, on the kernels,
    the numpy reference and torch; reads g_P ((t + t0)/t0)^-ν."""
    dev = parse_card(CUSTOM, "custom")
    g = np.array([2.5e-6, 10e-6, 20e-6])
    mu_ref = np.interp(g, [0, 5e-6, 15e-6, 25e-6], [0.12, 0.08, 0.05, 0.03])
    sd_ref = np.interp(g, [0, 5e-6, 15e-6, 25e-6], [0.03, 0.02, 0.01, 0.0])
    rng = np.random.default_rng(1)
    for backend, dtype in BACKENDS:
        bench = EmulatedBench(dev, 3 * N, seed=2, backend=backend, dtype=dtype)
        bench.program(np.repeat(g, N))
        st = {k: np.asarray(v.cpu() if hasattr(v, "cpu") else v, dtype=np.float64) for k, v in bench.cell_state().items()}
        read = bench.read(86400.0)
        read = np.asarray(read.cpu() if hasattr(read, "cpu") else read, dtype=np.float64)
        for b in range(3):
            sl = slice(b * N, (b + 1) * N)
            nu_ref = np.abs(mu_ref[b] + sd_ref[b] * rng.standard_normal(N))
            g_ref = np.maximum(g[b] + 0.2e-6 * rng.standard_normal(N), 0) * ((86400.0 + 20) / 20) ** -nu_ref
            assert st["nu"][sl].mean() == pytest.approx(nu_ref.mean(), rel=MEAN_RTOL), (backend, dtype, b)
            if sd_ref[b] > 0:
                assert st["nu"][sl].std() == pytest.approx(nu_ref.std(), rel=STD_RTOL), (backend, dtype, b)
            assert read[sl].mean() == pytest.approx(g_ref.mean(), rel=MEAN_RTOL), (backend, dtype, b)
            assert read[sl].std() == pytest.approx(g_ref.std(), rel=STD_RTOL), (backend, dtype, b)


@pytest.mark.parametrize("old, new, field", [
    ("g_knots_S = [0.0, 5e-6, 15e-6, 25e-6]", "g_knots_S = [0.0, 5e-6, 15e-6, 20e-6]", "g_knots_S"),
    ("g_knots_S = [0.0, 5e-6, 15e-6, 25e-6]", "g_knots_S = [0.0, 15e-6, 5e-6, 25e-6]", "g_knots_S"),
    ("mu = [0.12, 0.08, 0.05, 0.03]", "mu = [0.12, 0.08, 0.05]", "mu"),
    ("sigma = [0.03, 0.02, 0.01, 0.0]", "sigma = [0.03, -0.02, 0.01, 0.0]", "sigma"),
])
def test_custom_drift_table_is_validated(old, new, field):
    with pytest.raises(DeviceCardError, match=rf"\[drift\]\.{field}"):
        parse_card(CUSTOM.replace(old, new), "custom")


def test_piecewise_laws_are_validated():
    """An upper branch needs its break, and may not go negative."""
    card = analogmem.load_device("pcm-hermes2023").card_text
    with pytest.raises(DeviceCardError, match=r"\[drift.mu\]\.above"):
        parse_card(card.replace("x_break = 0.0945, ", ""), "no-break")
    with pytest.raises(DeviceCardError, match=r"\[drift.mu\]\.above"):
        parse_card(card.replace("above = [0.0736, -0.0126, -0.0436]", "above = [-0.0736]"), "negative")


def _markdown_table() -> str:
    lines = ["| card | g_T (µS) | t (s) | mean ours (µS) | mean formula (µS) | Δmean | std ours (µS) | "
             "std formula (µS) | Δstd |", "|---|---|---|---|---|---|---|---|---|"]
    for card in CARDS:
        for r in comparison_rows(card):
            t = "programmed" if r["t_s"] is None else f"{r['t_s']:g}"
            lines.append(f"| {card} | {r['g_t_uS']:.3g} | {t} | {r['mean']:.4f} | {r['mean_ref']:.4f} | "
                         f"{100 * r['mean_err']:+.2f} % | {r['std']:.4f} | {r['std_ref']:.4f} | {100 * r['std_err']:+.2f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_markdown_table())


@pytest.mark.parametrize("card", list(CARDS))
def test_read_channel_model_follows_the_card(card):
    """The decoders' Gaussian read channel (storage.encoders.ReadChannel) has the mean and std
    of the emulated reads on the new cards (the CMO mean shift and additive log10 read
    noise included): mean within 1 % of the range, std within 5 % (the Gaussian moments are
    exact up to the clip and, for the log10 read noise, evaluating K·log10(g) at the mean)."""
    from analogmem.storage.encoders import ReadChannel

    _, xs, times = CARDS[card]
    dev, ours = _ours(card, xs, times[1:], seed=12)
    span_uS = (dev.g_max_S - dev.g_min_S) * 1e6
    for t in times[1:]:
        ch = ReadChannel(dev, t)
        for b, x in enumerate(xs):
            g_t = x * dev.g_max_S
            m, s = ch.mean_std(np.array([ch.to_relative(g_t)]))
            mine = ours[t][b]
            assert abs(ch.to_S(m[0]) * 1e6 - mine.mean()) < 0.01 * span_uS, (t, x)
            assert s[0] * span_uS == pytest.approx(mine.std(), rel=0.05), (t, x)


def test_cmo_read_right_after_programming_has_no_read_noise_term():
    """With t0 = 0 the 1/f factor sqrt(ln((t + t_read)/(2 t_read))) is negative under the
    root for t < t_read; the card takes it as 0 there (no NaN), and reads at t = 0 as at the
    held 1 s decay, identically on the kernels and the numpy reference."""
    dev = analogmem.load_device("rram-cmo-hfox")
    assert float(dev.read_noise_time_factor(0.0)) == 0.0
    assert float(dev.read_noise_time_factor(0.5e-6)) == 0.0
    assert float(dev.read_noise_time_factor(1.0)) == pytest.approx(math.sqrt(math.log((1 + 1e-6) / 2e-6)))
    g_t = np.linspace(dev.g_min_S, dev.g_max_S, 10_001)
    reads = []
    for backend in ("cython", "numpy", "torch"):
        b = EmulatedBench(dev, g_t.size, seed=4, backend=backend)
        b.program(g_t)
        r = b.read(0.0)
        reads.append(np.asarray(r.cpu() if hasattr(r, "cpu") else r))
        assert np.all(np.isfinite(reads[-1]))
    np.testing.assert_allclose(reads[0], reads[1], rtol=1e-12, atol=1e-12 * dev.g_max_S)


@pytest.mark.parametrize("card", ["rram-cmo-hfox", "rram-cmo-hfox-0.2pct"])
def test_cmo_decay_shift_is_the_published_slope(card):
    """The 1 %-of-mean bound above is loose for the CMO decay (−0.089 ln t µS is 1–7 % of
    the read): the shift of the mean read from the mean programmed value must match the
    formula's to 2 % at 1 h, 1 day and 1e7 s (its standard error here is < 0.5 %)."""
    formula, xs, times = CARDS[card]
    _, ours = _ours(card, xs, times, seed=13)
    rng = np.random.default_rng(6)
    for t in times[1:]:
        for b, x in enumerate(xs):
            g_t = x * CMO_G_MAX
            want = formula(g_t, t, rng).mean() - formula(g_t, None, rng).mean()
            got = ours[t][b].mean() - ours[None][b].mean()
            assert got == pytest.approx(want, rel=0.02), (t, x, got, want)
