"""Noisy-data lossy compression (thesis ch.8; Isik & Weissman, ISIT 2022 / JSAIT 2023)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from analogmem.privacy import (
    CompressedDataset,
    PrivacyParameterError,
    add_noise,
    compress_dct,
    compress_gaussian,
    gaussian_matched_channel,
    gaussian_rate_bits,
    reidentification_rate,
    run_noisy_compression,
    train_and_evaluate,
)


def test_gaussian_rate_formula():
    # R(D = σ²) = ½ log₂((P + σ²)/σ²): P = 3σ² → 1 bit, P = 15σ² → 2 bits, P = 0 → 0.
    np.testing.assert_allclose(gaussian_rate_bits([3.0, 15.0, 0.0], 1.0), [1.0, 2.0, 0.0], atol=1e-15)
    assert gaussian_rate_bits(0.75, 0.25) == pytest.approx(1.0)


def test_matched_gaussian_compression_restores_the_clean_distribution():
    # X ~ N(0, P), Y = X + N(0, σ²), Ŷ = matched compressor at D = σ²: Ŷ ~ N(0, P) (KS test and
    # chi-square interval on the variance), E(Y − Ŷ)² = σ², and Y − Ŷ ⟂ Ŷ (backward channel).
    n, p, s2 = 200_000, 2.0, 0.5
    rng = np.random.default_rng(1)
    x = math.sqrt(p) * rng.standard_normal(n)
    y = add_noise(x, math.sqrt(s2), rng)
    yh = gaussian_matched_channel(y, p, s2, rng)
    assert stats.kstest(yh, "norm", args=(0.0, math.sqrt(p))).pvalue > 1e-3
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n) / n * p
    assert lo < np.mean(yh**2) < hi
    assert abs(yh.mean()) < 4 * math.sqrt(p / n)
    dist = (y - yh) ** 2
    assert abs(dist.mean() - s2) < 4 * dist.std() / math.sqrt(n)
    assert abs(np.corrcoef(y - yh, yh)[0, 1]) < 4 / math.sqrt(n)
    # the noisy data are not N(0, P): the same KS test rejects them
    assert stats.kstest(y, "norm", args=(0.0, math.sqrt(p))).pvalue < 1e-6


def test_compress_gaussian_matches_clean_covariance_and_rate():
    # Gaussian "images" with a known spectrum: the release has the clean covariance and the
    # rate Σ ½ log₂(1 + P_i/σ²) per image (up to the sample-covariance error).
    n, side, sigma = 20_000, 4, 0.3
    rng = np.random.default_rng(2)
    spectrum = np.linspace(2.0, 0.01, side * side)
    basis = np.linalg.qr(rng.standard_normal((side * side, side * side)))[0]
    clean = (rng.standard_normal((n, side * side)) * np.sqrt(spectrum)) @ basis.T
    out = compress_gaussian(add_noise(clean, sigma, rng).reshape(n, side, side), sigma, rng)
    recon = out.reconstruct().reshape(n, -1)
    np.testing.assert_allclose(np.cov(recon.T), basis @ np.diag(spectrum) @ basis.T, atol=0.06)
    expected_bpp = gaussian_rate_bits(spectrum, sigma**2).sum() / spectrum.size
    assert out.rate_bpp == pytest.approx(expected_bpp, rel=0.02)


def test_dct_coder_distortion_matches_noise_and_round_trips():
    # Step Δ = √12 σ: quantisation MSE ≈ Δ²/12 = σ² on high-variance coefficients; symbols are
    # int16, reconstruct() is deterministic; metadata are JSON so the data set can be stored.
    rng = np.random.default_rng(3)
    sigma = 0.05
    y = rng.uniform(0, 1, (300, 8, 8)) * 4
    out = compress_dct(y, sigma)
    assert isinstance(out, CompressedDataset)
    assert out.arrays["symbols"].dtype == np.int16
    assert out.metadata["distortion_per_pixel"] == pytest.approx(sigma**2, rel=0.1)
    np.testing.assert_array_equal(out.reconstruct(), out.reconstruct())
    json.dumps(out.metadata)
    coarser = compress_dct(y, 4 * sigma)
    assert coarser.rate_bpp < out.rate_bpp - 1.5  # 4× the step saves ≈ log₂ 4 = 2 bits per pixel
    assert out.metadata["rate_lzma_bpp"] > 0


def test_reidentification_rate():
    x = np.random.default_rng(4).uniform(size=(500, 8, 8))
    assert reidentification_rate(x, x) == 1.0
    assert reidentification_rate(x + 0.01, x) == 1.0
    noisy = add_noise(x, 10.0, 5)
    assert reidentification_rate(noisy, x) < 0.05  # near chance 1/500


def test_train_and_evaluate_is_deterministic():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 4, 4))
    y = (x.reshape(200, -1).sum(axis=1) > 0).astype(np.int64)
    a = train_and_evaluate(x[:150], y[:150], x[150:], y[150:], seed=1, epochs=3)
    assert a == train_and_evaluate(x[:150], y[:150], x[150:], y[150:], seed=1, epochs=3)
    assert 0.0 <= a <= 1.0


def test_noisy_compression_experiment_on_digits():
    # Ch.8 claim on load_digits at σ = 0.3 (pixels in [0, 1]): the compressed releases store far
    # fewer bits than the original 4.09 bpp, keep accuracy near the clean model, and are less
    # re-identifiable than the clean data (and, for the R(D) compressor, than noise alone).
    rows = run_noisy_compression("digits", (0.3,), seed=0, epochs=15)
    by = {r["release"]: r for r in rows}
    assert set(by) == {"clean", "noisy", "noisy+dct", "noisy+gaussian-rd"}
    assert by["clean"]["rate_bpp"] == pytest.approx(math.log2(17))
    assert by["clean"]["test_accuracy"] > 0.93 and by["clean"]["reidentification_rate"] == 1.0
    for release in ("noisy+dct", "noisy+gaussian-rd"):
        assert by[release]["rate_bpp"] < 1.5
        assert by[release]["test_accuracy"] > by["clean"]["test_accuracy"] - 0.08
        assert by[release]["reidentification_rate"] < 0.9
    assert by["noisy+gaussian-rd"]["reidentification_rate"] < by["noisy"]["reidentification_rate"]
    json.dumps(rows)


def test_bad_inputs_are_named():
    with pytest.raises(PrivacyParameterError, match="noise_std=-0.1"):
        add_noise(np.zeros(3), -0.1)
    with pytest.raises(PrivacyParameterError, match="noise_std=0"):
        compress_dct(np.zeros((2, 4, 4)), 0.0)
    with pytest.raises(PrivacyParameterError, match="'cifar'"):
        run_noisy_compression("cifar")
    with pytest.raises(PrivacyParameterError, match="noise_var > 0"):
        gaussian_rate_bits(1.0, 0.0)
    with pytest.raises(PrivacyParameterError, match="must match"):
        reidentification_rate(np.zeros((3, 2)), np.zeros((4, 2)))


def test_compressed_dataset_round_trips_through_stores():
    """The compressed data set lives on a Store: exact on a DigitalStore; on an emulated
    RRAM store the DCT indices (bits) stay exact and the Gaussian reconstruction (analog)
    comes back with the device's noise, small against the pixel range."""
    from analogmem.privacy.noisy_compression import CompressedDataset, add_noise, compress_dct, compress_gaussian, load_images
    from analogmem.storage import DigitalStore, EmulatedStore

    images, _ = load_images("digits")
    images = images[:60]
    noisy = add_noise(images, 0.25, seed=0)
    for ds in (compress_dct(noisy, 0.25), compress_gaussian(noisy, 0.25, seed=1)):
        digital = DigitalStore()
        ds.put_on(digital)
        back = CompressedDataset.from_store(digital, ds.metadata)
        np.testing.assert_array_equal(back.reconstruct(), ds.reconstruct())
        chip = EmulatedStore("rram-wan2022", 4 * images.size, seed=2)
        ds.put_on(chip)
        read = CompressedDataset.from_store(chip, ds.metadata, t_s=3600.0).reconstruct()
        err = np.sqrt(np.mean((read - ds.reconstruct()) ** 2))
        if ds.metadata["method"] == "dct-uniform":
            assert err == 0.0
        else:
            assert 0.0 < err < 0.5 * np.std(ds.reconstruct())  # device noise, well below the signal
