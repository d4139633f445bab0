"""Statistical conformance of the emulated cells with the published models (Nandakumar et al., ICECS 2019; Wan et al., Nature 2022).

Each check draws >= 1e5 cells at one relative conductance x = g_T/g_max through the
compiled kernels (EmulatedBench) and compares sample moments with the formulas, written
out here independently of analogmem.emulator.cells, within 5-standard-error confidence bounds,
plus a KS test of the standardised residuals. Seeds are fixed, so the tests are
deterministic. Every check runs on float64 benches (which also equal the numpy reference
to 1e-12, tests/test_kernels.py) and on float32 benches, which compute in float32 with
32-bit draws: for them these distribution tests are the check against the model. Power:
with N = 2·10⁵ a mean check detects a bias of 5·σ/√N ≈ 0.011 σ, a std check a 1.6 %
error of σ, and the KS test (α = 1e-3) any CDF error ≥ 0.0054 with probability > 0.99.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from analogmem import EmulatedBench

from stats_helpers import assert_ks, assert_mean, assert_std

N = 200_000
PCM_GMAX = 25e-6
XS = [0.05, 0.25, 0.5, 0.75, 0.9]


def sigma_p_uS(x):  # Nandakumar 2019: programming noise at g_max = 25 µS
    return 0.26348 + 1.9650 * x - 1.1731 * x**2


def nu_params(x):
    mu = min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)
    sd = min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)
    return mu, sd


def folded_normal(mu, sd):
    """|N(mu, sd²)|: mean, std and cdf."""
    mean = sd * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * sd**2)) + mu * (1 - 2 * stats.norm.cdf(-mu / sd))
    var = mu**2 + sd**2 - mean**2
    return mean, math.sqrt(var), lambda y: stats.norm.cdf((y - mu) / sd) - stats.norm.cdf((-y - mu) / sd)


DTYPES = ["float64", "float32"]


def pcm_bench(x, seed, dtype="float64"):
    bench = EmulatedBench("pcm-nandakumar2019", N, seed=seed, dtype=dtype)
    bench.program(np.full(N, x * PCM_GMAX))
    return bench


def state64(bench):
    return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in bench.cell_state().items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x", XS)
def test_pcm_programming_noise(x, dtype):
    bench = pcm_bench(x, seed=11, dtype=dtype)
    g_p = state64(bench)["g_prog"]
    sd = 1e-6 * sigma_p_uS(x)
    assert_mean(g_p, x * PCM_GMAX, sd, "programmed mean")
    assert_std(g_p, sd, "programming noise σ_P")
    assert_ks((g_p - x * PCM_GMAX) / sd, "norm", "programming noise shape")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x", XS + [0.005])
def test_pcm_drift_exponent(x, dtype):
    bench = pcm_bench(x, seed=12, dtype=dtype)
    nu = state64(bench)["nu"]
    mean, sd, cdf = folded_normal(*nu_params(x))
    assert_mean(nu, mean, sd, "ν mean")
    assert_std(nu, sd, "ν std", kurtosis_excess=float(stats.kurtosis(nu)))
    assert_ks(nu, cdf, "ν ~ |N(μ_ν, σ_ν)|")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x", [0.05, 0.5, 0.9])
@pytest.mark.parametrize("t", [3600.0, 86400.0, 365 * 86400.0])
def test_pcm_drift_and_read_noise(x, t, dtype):
    """Mean read / g_P equals E[((t+t0)/t0)^-ν] (read noise is zero-mean), and the read
    noise around the drifted value has σ_R = g(t)·Q_s·sqrt(ln((t+t0+t_read)/(2 t_read)))."""
    bench = pcm_bench(x, seed=13, dtype=dtype)
    state = state64(bench)
    g = bench.read(t).astype(np.float64)
    # cells whose programmed value clipped at 0 S stay at 0 (no drift, no read noise)
    ok = state["g_prog"] > 0
    assert np.all(g[~ok] == 0.0)
    g, state = g[ok], {k: v[ok] for k, v in state.items()}
    mu, sd = nu_params(x)
    L = math.log((t + 20.0) / 20.0)
    # E[exp(-ν L)] for ν ~ |N(μ, sd)|, by quadrature
    pdf = lambda v: (stats.norm.pdf(v, mu, sd) + stats.norm.pdf(-v, mu, sd))  # noqa: E731
    e_factor = integrate.quad(lambda v: math.exp(-v * L) * pdf(v), 0, mu + 12 * sd)[0]
    ratio = g / state["g_prog"]
    assert_mean(ratio, e_factor, what=f"drift factor at t={t:g}s")
    q = min(0.0088 / x**0.65, 0.2)
    s_read = q * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    g_drift = state["g_prog"] * np.exp(-state["nu"] * L)
    z = (g - g_drift) / (np.abs(g_drift) * s_read)
    assert_mean(z, 0.0, 1.0, "read-noise residual mean")
    assert_std(z, 1.0, "read-noise σ_R")
    assert_ks(z, "norm", "read-noise shape")


@pytest.mark.parametrize("dtype", DTYPES)
def test_pcm_sanity_drift_factors_in_emulation(dtype):
    """Cells with ν ≈ 0.049 (x = 0.5 has μ_ν = 0.049, σ_ν = 0.008) drift by the DESIGN
    sanity factors: the median of read/g_P at 1 h, 1 day, 1 year is the factor at the
    median ν = 0.049 (read noise is symmetric)."""
    bench = pcm_bench(0.5, seed=14, dtype=dtype)
    g_p = state64(bench)["g_prog"]
    for t, factor in ((3600.0, 0.775), (86400.0, 0.664), (365 * 86400.0, 0.497)):
        med = float(np.median(bench.read(t).astype(np.float64) / g_p))
        assert med == pytest.approx(factor, abs=4e-3), (t, med)


WAN = {
    1.0: [0.348, 16.030, -43.853, 45.393, -16.815],
    86400.0: [0.701, 22.086, -50.773, 47.095, -16.458],
    172800.0: [0.782, 20.274, -43.507, 37.062, -11.934],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x", [0.4, 0.6, 0.8, 1.0])
def test_rram_spread_matches_wan2022_at_published_times(x, dtype):
    """The spread of RRAM reads around the target equals Wan 2022's σ(x, t) at t = 1 s,
    1 day and 2 days (and the geometric midpoint of 1 s and 1 day is halfway in ln t)."""
    bench = EmulatedBench("rram-wan2022", N, seed=21, dtype=dtype)
    g_t = x * 40e-6
    bench.program(np.full(N, g_t))
    sig = {t: 1e-6 * sum(c * x**k for k, c in enumerate(cs)) for t, cs in WAN.items()}
    sig[math.sqrt(86400.0)] = 0.5 * (sig[1.0] + sig[86400.0])
    for t in sorted(sig):
        g = bench.read(t).astype(np.float64)
        assert_mean(g, g_t, sig[t], f"read mean at t={t:g}s")
        assert_std(g, sig[t], f"σ at t={t:g}s")
        assert_ks((g - g_t) / sig[t], "norm", f"spread shape at t={t:g}s")


@pytest.mark.parametrize("kind", ["", "_f32"])
def test_stream_normals_are_standard_normal(kind):
    """The kernels' normals (Philox4x32-10 words → Box–Muller pairs; float64 benches: 53-bit
    uniforms, float32 benches: 31/24-bit uniforms and float32 arithmetic): 2·10⁶
    program-stream normals and 10⁶ read-stream normals have mean 0, sd 1, normal kurtosis
    and tails, and the two members of a pair are uncorrelated. Power: at n = 10⁶ the KS
    test (α = 1e-3) rejects any distribution whose CDF is ≥ 0.0025 from Φ anywhere with
    probability > 0.99; the tail counts detect a 15 % error in P(|z| > 4) (6.3e-5) at 5
    standard errors."""
    from analogmem.emulator import _testing

    z = _testing.draws((2024, 7, 1), 1_000_000, 2, "normal" + kind)
    r = _testing.draws((2024, 7, 2), 1_000_000, 1, "read_normal" + kind)[:, 0]
    for sample, what in ((z[:, 0], "even draws"), (z[:, 1], "odd draws"), (r, "read stream")):
        assert_mean(sample, 0.0, 1.0, f"{what} mean")
        assert_std(sample, 1.0, f"{what} sd")
        assert_ks(sample, "norm", f"{what} ~ N(0, 1)")
    both = z.ravel()
    n = both.size
    assert abs(float(stats.kurtosis(both))) < 5 * math.sqrt(24 / n), "excess kurtosis"
    for k in (3.0, 4.0):
        p = 2 * stats.norm.sf(k)
        count = int(np.count_nonzero(np.abs(both) > k))
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), f"P(|z| > {k}): {count} vs {n * p:.1f}"
    rho = float(np.corrcoef(z[:, 0], z[:, 1])[0, 1])
    assert abs(rho) < 5 / math.sqrt(z.shape[0]), f"pair correlation {rho:.2e}"


@pytest.mark.parametrize("device, latent, verify", [
    ("rram-radar", "z_relax", True),    # card write-verify (three uniforms), then the relaxation normal
    ("rram-wan2022", "z_relax", False),  # a normal write, then the relaxation normal (its pair mate)
])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_latent_normals_are_independent_of_the_written_value(device, latent, verify, backend):
    """A cell's drift exponent and relaxation latent are drawn independently of its written
    conductance (the published models' noise terms are independent). A uniform that shares a word
    with a later Box–Muller pair breaks this without changing any marginal (the Box–Muller
    radius then depends on the write; rram-radar's verified value did, before the kernels
    gave every uniform a pair of its own — empirical cards have no drift or relaxation, so
    their uniform writes cannot show it): here Spearman correlations of the written value with
    the latent and with its magnitude stay within 5 standard errors (1/sqrt(n)) of zero."""
    import analogmem

    dev = analogmem.load_device(device)
    n = 20_000 if backend == "cython" else 4_000
    if verify:
        pr = dev.write_verify
        g_t = np.full(n, (pr.window_lo_S[1] + pr.window_hi_S[1]) / 2)
    else:
        lo, hi = dev.input_range
        g_t = np.full(n, lo + 0.5 * (hi - lo))
    bench = EmulatedBench(dev, n, seed=17, backend=backend)
    bench.program(g_t, verify=analogmem.WriteVerify.card() if verify else None)
    st = bench.cell_state()
    z = st[latent] - np.median(st[latent])
    bound = 5 / math.sqrt(n)
    for v in (z, np.abs(z)):
        rho = stats.spearmanr(st["g_prog"], v).statistic
        assert abs(rho) < bound, (device, latent, rho, bound)
