"""Encoders/decoders of analogmem.storage.encoders (thesis ch.3, DESIGN §5)."""

from __future__ import annotations

import numpy as np
import pytest

from analogmem import EmulatedBench, load_device
from analogmem.storage.encoders import (
    MMSE, Channel, DifferentialPair, DigitalECC, LinearMap, Repetition, SignMagnitude, Sliced,
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
    s_auto = enc.fit(w, Channel(RRAM, 86400.0))["scale"]
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
    ch = Channel(device, t_s)
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
    ch = Channel(RRAM, 1.0)
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
