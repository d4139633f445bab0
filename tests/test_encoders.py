"""Encoders/decoders of analogmem.storage.encoders (thesis ch.3; Isik et al., ACM TECS 2023)."""

from __future__ import annotations

import numpy as np
import pytest

from analogmem import EmulatedBench, load_device
from analogmem.storage.encoders import (
    MMSE, ReadChannel, DifferentialPair, DigitalECC, LinearMap, Repetition, SignMagnitude, Sliced,
    encoder_from_spec, global_drift_scale, make_encoder,
)
from analogmem.errors import StorageError

RRAM = load_device("rram-wan2022")
PCM = load_device("pcm-nandakumar2019")


def _weights(n=4000, seed=0):
    return np.random.default_rng(seed).laplace(0.0, 0.05, n)


CELL_MAPS = [LinearMap(100.0), DifferentialPair(100.0), SignMagnitude(100.0), Repetition(DifferentialPair(100.0), 3),
             MMSE(DifferentialPair(100.0))]


@pytest.mark.parametrize("enc", CELL_MAPS, ids=lambda e: e.name)
def test_cell_maps_round_trip_exactly_without_noise(enc):
    """Noise-free reads decode to the weights (x = (w/s+1)/2, (x+, x−), ±|w|/s are invertible
    inside the range [−s, s] with s = max|w|)."""
    w = _weights()
    side = enc.fit(w)
    x = enc.encode(w, side)
    assert x.shape == (enc.n_cells(w.size),) and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(enc.decode(x, side, w.size), w, atol=1e-12)


def test_sliced_round_trip_and_digit_layout():
    """u = (d + r)/B: the MSB cell holds level d/(B−1), the LSB the analog remainder."""
    enc = Sliced(100.0, n_slices=3, base=4)
    w = _weights()
    side = enc.fit(w)
    x = enc.encode(w, side).reshape(-1, 3)
    assert set(np.unique(np.rint(x[:, 0] * 3))) <= {0, 1, 2, 3}
    np.testing.assert_allclose(enc.decode(x.reshape(-1), side, w.size), w, atol=1e-12)


def test_adaptive_range_clips_to_a_percentile():
    w = _weights()
    side = LinearMap(99.0).fit(w)
    assert side["scale"] == pytest.approx(np.percentile(np.abs(w), 99.0))
    enc = LinearMap("auto")
    s_auto = enc.fit(w, ReadChannel(RRAM, 86400.0))["scale"]
    assert s_auto < np.abs(w).max()  # clipping the tails beats spending the range on outliers


@pytest.mark.parametrize("bits,bpc,t", [(8, 1, 0), (8, 2, 8), (4, 3, 16), (6, 2, 4)])
def test_digital_ecc_round_trip_is_the_k_bit_quantisation(bits, bpc, t):
    enc = DigitalECC(bits=bits, bits_per_cell=bpc, t=t, block_bytes=32)
    w = _weights(1000)
    side = enc.fit(w)
    x = enc.encode(w, side)
    assert x.shape == (enc.n_cells(w.size),)
    q = enc.quantise(w, side)
    np.testing.assert_array_equal(enc.decode(x, side, w.size), q)
    assert np.max(np.abs(q - w)) <= side["step"] / 2 + 1e-12


def test_bch_corrects_up_to_t_bit_errors_per_block():
    enc = DigitalECC(bits=8, bits_per_cell=1, t=4, block_bytes=32)
    w = _weights(256, seed=3)
    side = enc.fit(w)
    x = enc.encode(w, side)
    width = (enc.block_bytes + enc.ecc_bytes) * 8
    rng = np.random.default_rng(1)
    y = x.copy()
    for b in range(x.size // width):  # 4 flipped bits in every codeword: all corrected
        flip = b * width + rng.choice(enc.block_bytes * 8, 4, replace=False)
        y[flip] = 1 - y[flip]
    np.testing.assert_array_equal(enc.decode(y, side, w.size), enc.quantise(w, side))


def _through_device(enc, w, device, t_s, seed):
    ch = ReadChannel(device, t_s)
    side = enc.fit(w, ch)
    x = enc.encode(w, side)
    bench = EmulatedBench(device, x.size, seed=seed)
    bench.program(ch.to_S(x))
    return ch.to_relative(bench.read(t_s)), side, ch


def test_mmse_beats_naive_decoding_on_the_card_channel():
    """Posterior mean E[w|y] minimises the MSE: on the same reads it must beat the naive
    inverse map (paired comparison, fixed seeds, 20k weights on rram-wan2022 at 1 day)."""
    w = _weights(20000)
    enc = MMSE(DifferentialPair("auto"))
    y, side, ch = _through_device(enc, w, RRAM, 86400.0, seed=5)
    d = (enc.decode(y, side, w.size) - w) ** 2 - (enc.decode(y, side, w.size, ch) - w) ** 2
    assert d.mean() > 4 * d.std() / np.sqrt(d.size)  # paired: improvement beyond 4 standard errors
    assert d.mean() > 0.05 * np.mean((enc.decode(y, side, w.size) - w) ** 2)


def test_mmse_is_optimal_on_a_known_gaussian_channel():
    """Known channel, Gaussian prior w ~ N(0, τ²), linear map: the posterior mean is the
    Wiener estimate; the MMSE decoder's error must match the Wiener error within 5 %."""
    rng = np.random.default_rng(2)
    tau = 0.05
    w = rng.normal(0.0, tau, 30000)
    enc = MMSE(LinearMap(100.0), grid=256)
    ch = ReadChannel(RRAM, 1.0)
    side = enc.fit(w, ch)
    x = enc.encode(w, side).reshape(-1)
    m, s = ch.mean_std(x)
    y = m + s * rng.standard_normal(x.size)  # the channel model itself, no clipping near the middle
    w_hat = enc.decode(y, side, w.size, ch)
    noise_var_w = np.mean((2 * side["scale"] * s) ** 2)  # ŵ_naive = s(2y − 1)
    wiener = tau**2 * noise_var_w / (tau**2 + noise_var_w)
    assert np.mean((w_hat - w) ** 2) == pytest.approx(wiener, rel=0.05)


def test_repetition_averaging_cuts_noise_variance_by_r():
    """Averaging r independent reads divides the read-noise variance by r (r = 4: the
    error variance ratio is 4 within 10 %)."""
    w = _weights(20000)
    errs = []
    for enc in (DifferentialPair(100.0), Repetition(DifferentialPair(100.0), 4)):
        y, side, _ = _through_device(enc, w, RRAM, 1.0, seed=7)
        errs.append(np.var(enc.decode(y, side, w.size) - w))
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.1)


def test_global_drift_compensation_restores_the_pcm_scale():
    """PCM drifts g → g·((t+t0)/t0)^(−ν): one global scale from the read (mean target /
    mean read) brings the decoded weights back to the right magnitude."""
    w = _weights(20000)
    enc = DifferentialPair(100.0)
    y, side, ch = _through_device(enc, w, PCM, 365 * 86400.0, seed=9)
    g = ch.to_S(y)
    alpha = global_drift_scale(g, float(ch.to_S(enc.encode(w, side)).mean()))
    assert alpha > 1.5  # ~ 1/0.5 after a year
    w_raw = enc.decode(y, side, w.size)
    w_comp = enc.decode(ch.to_relative(g * alpha), side, w.size)
    assert np.mean((w_comp - w) ** 2) < 0.5 * np.mean((w_raw - w) ** 2)


@pytest.mark.parametrize("name", ["naive", "adaptive", "differential", "sign-magnitude", "sliced",
                                  "differential-mmse", "linear-mmse"])
def test_named_encoders_use_equal_cells_and_rebuild_from_spec(name):
    enc = make_encoder(name, 4)
    assert enc.n_cells(10) == 40
    again = encoder_from_spec(enc.spec())
    assert again.spec() == enc.spec()
    w = _weights(100)
    side = enc.fit(w)
    np.testing.assert_allclose(again.decode(enc.encode(w, side), side, 100), enc.decode(enc.encode(w, side), side, 100))


def test_bad_specs_and_arguments_are_refused():
    with pytest.raises(StorageError, match="encoder spec"):
        encoder_from_spec({"kind": "Nope"})
    with pytest.raises(ValueError, match="clip_percentile"):
        LinearMap(120)
    with pytest.raises(ValueError, match="does not fit|do not fit"):
        DigitalECC(bits=8, t=60, block_bytes=64, m=10)
    with pytest.raises(ValueError, match="multiple"):
        make_encoder("differential", 3)


# --------------------------------------------------------------------------- issue 17: the channel and MMSE
@pytest.mark.parametrize("mu,sigma,s", [(0.05, 0.02, -14.0), (0.1, 0.045, -28.0), (0.01, 0.03, -5.0),
                                        (0.05, 0.0, -3.0)])
def test_folded_normal_mgf_matches_quadrature(mu, sigma, s):
    """E[exp(s|X|)], X ~ N(μ, σ²), in closed form against numerical integration (rel 1e-8)."""
    from scipy import integrate, stats

    from analogmem.storage.encoders import _folded_normal_mgf

    got = float(_folded_normal_mgf(np.array([mu]), np.array([sigma]), s)[0])
    if sigma == 0:
        assert got == pytest.approx(np.exp(s * abs(mu)), rel=1e-12)
        return
    ref, _ = integrate.quad(lambda x: np.exp(s * abs(x)) * stats.norm.pdf(x, mu, sigma),
                            mu - 12 * sigma, mu + 12 * sigma, points=[0.0] if abs(mu) < 12 * sigma else None,
                            epsabs=0, epsrel=1e-11)
    assert got == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("t_s", [86400.0, 365 * 86400.0])
@pytest.mark.parametrize("x", [0.05, 0.3, 0.9])
def test_channel_moments_match_the_emulated_pcm_reads(x, t_s):
    """The ReadChannel's mean and spread of a PCM read include the per-cell drift exponent's
    spread (ν ~ |N(μ_ν, σ_ν)|): against 2·10⁵ emulated cells, the mean is within 5 standard
    errors and the standard deviation within 5 standard errors (SE of s ≈ s·sqrt((κ − 1)/4n),
    κ the sample kurtosis)."""
    n = 200_000
    ch = ReadChannel(PCM, t_s)
    bench = EmulatedBench(PCM, n, seed=11)
    bench.program(np.full(n, ch.to_S(x)))
    y = ch.to_relative(bench.read(t_s))
    m, s = ch.mean_std(np.array([x]))
    sd = y.std()
    kurt = np.mean((y - y.mean()) ** 4) / sd ** 4
    assert abs(y.mean() - m[0]) < 5 * sd / np.sqrt(n)
    assert abs(sd - s[0]) < 5 * sd * np.sqrt((kurt - 1) / (4 * n))


@pytest.mark.parametrize("device,t_s", [(RRAM, 86400.0), (PCM, 365 * 86400.0), (load_device("rram-radar"), 86400.0)])
@pytest.mark.parametrize("inner", [DifferentialPair("auto"), Repetition(LinearMap("auto"), 3)], ids=lambda e: e.name)
def test_fast_mmse_decode_equals_the_direct_sum(device, t_s, inner):
    """The MMSE decoder's likelihood as one matrix product of sufficient statistics equals
    Σ_j ReadChannel.log_likelihood(y_j | x_kj) summed directly (posterior means agree to 1e-10
    of the weight range), on reads of the emulated card (censored reads included)."""
    from analogmem.storage.encoders import _posterior_mean

    enc = MMSE(inner)
    w = _weights(5000, seed=4)
    y, side, ch = _through_device(enc, w, device, t_s, seed=9)
    w_k = enc.candidates(side)
    x_k = np.clip(enc.inner._encode(w_k, side["scale"]), 0, 1)
    yy = y.reshape(w.size, -1)
    direct = _posterior_mean(enc.log_prior(side)[None, :]
                             + np.sum(ch.log_likelihood(yy[:, None, :], x_k[None]), axis=2), w_k)
    assert np.mean(yy <= ch.clip_lo + 1e-12) > 0 or device is PCM  # censored reads are exercised
    np.testing.assert_allclose(enc.decode(y, side, w.size, ch), direct, rtol=0, atol=1e-10 * np.abs(w).max())


@pytest.mark.parametrize("base", [MMSE(DifferentialPair("auto")), MMSE(LinearMap("auto"))], ids=lambda e: e.name)
def test_mmse_distortion_model_predicts_the_emulated_error(base):
    """MSE of the MMSE decoder with r = 1, 2, 4 copies predicted by quasi-Monte Carlo on the
    channel model (64 samples) within 15 % of the error measured on 20,000 emulated weights
    (rram-wan2022, 1 day); and fewer copies never predict less error than more."""
    w = _weights(20000, seed=1)
    ch = ReadChannel(RRAM, 86400.0)
    side = base.fit(w, ch)
    pred = base.distortion(w, side, ch, 4).mean(axis=0)
    assert np.all(np.diff(pred) < 0)
    for r in (1, 2, 4):
        enc = base.with_repetition(r)
        x = enc.encode(w, side)
        bench = EmulatedBench(RRAM, x.size, seed=20 + r)
        bench.program(ch.to_S(x))
        measured = np.mean((enc.decode(ch.to_relative(bench.read(86400.0)), side, w.size, ch) - w) ** 2)
        assert pred[r - 1] == pytest.approx(measured, rel=0.15)


def test_ml_level_detection_makes_fewer_errors_on_the_same_reads():
    """Maximum-likelihood levels under the card's channel (thresholds moved to where the
    level densities cross) against the nearest level, on the same reads of 4-level cells
    (rram-wan2022, 1 day): fewer symbol errors, beyond 4 binomial standard errors."""
    rng = np.random.default_rng(5)
    levels = rng.integers(0, 4, 100_000)
    ch = ReadChannel(RRAM, 86400.0)
    bench = EmulatedBench(RRAM, levels.size, seed=6)
    bench.program(ch.to_S(levels / 3.0))
    y = ch.to_relative(bench.read(86400.0))
    near = DigitalECC(bits=4, bits_per_cell=2, t=0).detect_levels(y)
    ml = DigitalECC(bits=4, bits_per_cell=2, t=0, detect="ml").detect_levels(y, ch)
    e_near, e_ml = np.mean(near != levels), np.mean(ml != levels)
    assert e_ml < e_near - 4 * np.sqrt(e_near * (1 - e_near) / levels.size)


def test_digital_ecc_takes_a_larger_field_for_strong_codes_and_round_trips_its_spec():
    enc = DigitalECC(bits=4, bits_per_cell=2, t=64, block_bytes=64, m=None, detect="ml")
    assert enc.m == 11 and enc.uses_channel  # 512 + 64·11 bits need GF(2^11)
    again = encoder_from_spec(enc.spec())
    assert again.spec() == enc.spec() and again.detect == "ml"
    w = _weights(500)
    side = enc.fit(w)
    np.testing.assert_array_equal(enc.decode(enc.encode(w, side), side, w.size), enc.quantise(w, side))
    with pytest.raises(ValueError, match="detect"):
        DigitalECC(detect="majority")


@pytest.mark.parametrize("card", ["rram-wan2022", "pcm-nandakumar2019"])
@pytest.mark.parametrize("name,cells", [("differential-mmse", 2), ("linear-mmse", 1)])
def test_mmse_table_decode_is_the_exact_posterior_to_a_small_fraction_of_the_noise(card, name, cells):
    """A tensor of 4 Mi weights decodes by interpolating a table of exact posterior
    means (MMSE.posterior_table): its difference from the exact posterior is below 0.5 % of the
    read-noise error in RMS and below 5 % at the 99.9th percentile (measured: 0.02-0.1 % and
    under 1 %); the same bits on 1 or 2 threads; float32 output the float64 one rounded; a
    smaller tensor decodes exactly."""
    from analogmem.emulator.bench import EmulatedBench
    from analogmem.storage.encoders import TABLE_MIN_WEIGHTS

    dev = load_device(card)
    enc = make_encoder(name, cells)
    n = 4 * TABLE_MIN_WEIGHTS
    w = np.random.default_rng(0).standard_normal(n) * 0.05
    ch = ReadChannel(dev, 86400.0)
    side = enc.fit(w, ch)
    bench = EmulatedBench(dev, cells * n, seed=0, dtype="float32")
    bench.program(ch.to_S(enc.encode(w, side)))
    g = bench.read(86400.0)
    table = enc.posterior_table(side, ch, n)
    assert table is not None and enc.posterior_table(side, ch, TABLE_MIN_WEIGHTS - 1) is None
    exact = enc.decode_S(g, side, n, ch, dtype=np.float64, n_threads=2, table=None)
    fast = enc.decode_S(g, side, n, ch, dtype=np.float64, n_threads=2)
    assert np.array_equal(fast, enc.decode_S(g, side, n, ch, dtype=np.float64, n_threads=1, table=table))
    f32 = enc.decode_S(g, side, n, ch, dtype=np.float32, n_threads=2, table=table)
    assert np.allclose(f32, fast, rtol=1e-6, atol=1e-9)
    noise = np.std(exact - w)
    d = np.abs(fast - exact) / noise
    assert np.sqrt(np.mean(d ** 2)) < 5e-3 and np.quantile(d, 0.999) < 0.05, (np.sqrt(np.mean(d ** 2)), d.max())
    small = enc.decode_S(g[:cells * 1000], side, 1000, ch, table="auto")
    assert np.array_equal(small, enc.decode_S(g[:cells * 1000], side, 1000, ch, table=None))
