"""FedPM pieces of analogmem.federated (thesis ch.6): sparse random networks, Beta aggregation,
client training, data splits, the final model on a Store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from analogmem import DigitalStore, EmulatedStore
from analogmem.federated import (
    BernoulliStraightThrough,
    BetaAggregator,
    FederatedError,
    MaskedMLP,
    beta_mode,
    client_mask_update,
    load_masked_model,
    partition_indices,
    save_masked_model,
    signed_constant,
    train_scores,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ sparse random networks
def test_frozen_weights_are_signed_constants_from_the_seed():
    """Paper/authors' ME_init: w ∈ {−c, +c}, c = e·sqrt(1/fan_in), signs fair coin flips."""
    net = MaskedMLP(64, [32], 10, seed=3)
    for layer in net.layers:
        c = math.e * math.sqrt(1.0 / layer.in_features)
        assert signed_constant(layer.in_features) == pytest.approx(c)
        np.testing.assert_allclose(np.abs(layer.weight.numpy()), c, rtol=1e-6)
        np.testing.assert_allclose(np.abs(layer.bias.numpy()), c, rtol=1e-6)
        assert not layer.weight.requires_grad
    signs = np.concatenate([np.sign(l.weight.numpy()).ravel() for l in net.layers])
    assert stats.binomtest(int((signs > 0).sum()), signs.size, 0.5).pvalue > 1e-3
    same, other = MaskedMLP(64, [32], 10, seed=3), MaskedMLP(64, [32], 10, seed=4)
    assert torch.equal(same.layers[0].weight, net.layers[0].weight)
    assert not torch.equal(other.layers[0].weight, net.layers[0].weight)
    assert net.n_params == 64 * 32 + 32 + 32 * 10 + 10


def test_forward_masks_are_bernoulli_theta_and_gradient_is_straight_through():
    g = torch.Generator().manual_seed(0)
    theta = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    draws = torch.stack([BernoulliStraightThrough.apply(theta, g) for _ in range(4000)]).detach()
    for j, t in enumerate([0.1, 0.5, 0.9]):  # E[m] = θ within 5 standard errors
        assert abs(float(draws[:, j].mean()) - t) <= 5 * math.sqrt(t * (1 - t) / 4000)
    coeff = torch.tensor([2.0, -1.0, 3.0])
    (BernoulliStraightThrough.apply(theta, g) * coeff).sum().backward()
    # FedPM (Isik et al., ICLR 2023): straight-through θ·grad, i.e. ∂L/∂θ = θ·∂L/∂m
    torch.testing.assert_close(theta.grad, theta.detach() * coeff)


def test_probabilities_round_trip_and_mask_validation():
    net = MaskedMLP(16, [8], 3, seed=0)
    theta = np.linspace(0.02, 0.98, net.n_params)
    net.set_probabilities(theta)
    np.testing.assert_allclose(net.probabilities(), theta, rtol=1e-5)
    with pytest.raises(FederatedError, match="masked parameters"):
        net.set_probabilities(theta[:-1])
    with pytest.raises(FederatedError, match=r"theta\[0\]"):
        net.set_probabilities(np.full(net.n_params, 1.5))
    with pytest.raises(FederatedError, match="zeros and ones"):
        net.use_mask(np.full(net.n_params, 2))


def test_final_model_on_a_store_reloads_to_identical_outputs():
    """The final FedPM model is seed + mask: saved as digital tensors, it rebuilds exactly."""
    net = MaskedMLP(64, [32, 16], 10, seed=11)
    mask = (np.random.default_rng(0).random(net.n_params) < 0.3).astype(np.uint8)
    net.use_mask(mask)
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    for store in (DigitalStore(), EmulatedStore("rram-wan2022", n_cells=16, seed=0)):
        info = save_masked_model(store, net, mask)
        back = load_masked_model(store)
        with torch.no_grad():
            assert torch.equal(back(x), want)
        # the coded mask costs about h₂(0.3) ≈ 0.881 bits per parameter (< 1 bpp, + 32-bit count)
        assert info["mask_bits"] / net.n_params < 0.881 + 0.01 + 160 / net.n_params
        assert store.usage()["digital_bits"] == info["mask_bits"] + info["header_bits"]


# ------------------------------------------------------------------ Bayesian aggregation
def test_beta_aggregation_equals_the_closed_form():
    """Paper: Beta(1,1) prior, α += Σ m, β += Σ(1 − m), θ = (α − 1)/(α + β − 2)."""
    rng = np.random.default_rng(0)
    masks = [(rng.random(500) < 0.4).astype(np.uint8) for _ in range(7)]
    agg = BetaAggregator(500, prior=1.0, reset_every=1)
    theta = agg.update(masks, server_round=1)
    alpha = 1 + np.sum(masks, axis=0)
    beta = 1 + np.sum([1 - m for m in masks], axis=0)
    np.testing.assert_allclose(theta, (alpha - 1) / (alpha + beta - 2))
    np.testing.assert_allclose(theta, np.mean(masks, axis=0))  # with λ₀ = 1 the mode is the mean mask
    np.testing.assert_array_equal(agg.alpha, alpha)
    np.testing.assert_array_equal(agg.beta, beta)
    # reset every round: round 2 forgets round 1
    theta2 = agg.update(masks[:2], server_round=2)
    np.testing.assert_allclose(theta2, np.mean(masks[:2], axis=0))


def test_beta_prior_reset_every_rho_rounds():
    rng = np.random.default_rng(1)
    r1 = [(rng.random(100) < 0.5).astype(np.uint8) for _ in range(3)]
    r2 = [(rng.random(100) < 0.5).astype(np.uint8) for _ in range(2)]
    r3 = [(rng.random(100) < 0.5).astype(np.uint8) for _ in range(4)]
    agg = BetaAggregator(100, reset_every=2)
    agg.update(r1, 1)
    np.testing.assert_allclose(agg.update(r2, 2), np.mean(r1 + r2, axis=0))  # pooled over rounds 1-2
    np.testing.assert_allclose(agg.update(r3, 3), np.mean(r3, axis=0))  # reset before round 3
    # a stronger prior Beta(λ₀, λ₀) shrinks towards 1/2: mode (λ₀ − 1 + Σm)/(2λ₀ − 2 + K)
    strong = BetaAggregator(100, prior=3.0)
    np.testing.assert_allclose(strong.update(r1, 1), (2 + np.sum(r1, axis=0)) / (4 + 3))
    assert beta_mode(np.ones(2), np.ones(2)).tolist() == [0.5, 0.5]
    with pytest.raises(FederatedError, match="0/1 arrays of 100"):
        agg.update([np.full(100, 0.5)], 4)
    with pytest.raises(FederatedError, match="prior must be >= 1"):
        BetaAggregator(10, prior=0.5)


# ------------------------------------------------------------------ client training
@pytest.fixture(scope="module")
def digits_small():
    from analogmem.ml.datasets import digits

    d = digits(0)
    return d.x_train[:400], d.y_train[:400]


def test_score_training_learns_a_good_mask(digits_small):
    x, y = digits_small
    net = MaskedMLP(64, [64], 10, seed=0)
    net.use_mask((net.probabilities() > 0.5).astype(np.uint8))
    with torch.no_grad():
        before = float((net(x).argmax(1) == y).double().mean())
    train_scores(net, x, y, epochs=6, batch_size=32, lr=0.1, seed=0)
    net.use_mask((net.probabilities() > 0.5).astype(np.uint8))
    with torch.no_grad():
        after = float((net(x).argmax(1) == y).double().mean())
    assert before < 0.3 and after > 0.7, (before, after)
    # the weights stayed frozen: only the scores moved
    assert torch.equal(net.layers[0].weight, MaskedMLP(64, [64], 10, seed=0).layers[0].weight)


def test_client_update_is_reproducible_and_samples_from_its_theta(digits_small):
    x, y = digits_small
    net = MaskedMLP(64, [32], 10, seed=0)
    theta0 = np.full(net.n_params, 0.5)
    a = client_mask_update(net, theta0, x[:100], y[:100], epochs=1, seed=5)
    b = client_mask_update(MaskedMLP(64, [32], 10, seed=0), theta0, x[:100], y[:100], epochs=1, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    theta, mask, _ = a
    # Σ m ~ Σ Bern(θ_i): mean Σθ, variance Σθ(1−θ) (5 standard deviations)
    assert abs(mask.sum() - theta.sum()) <= 5 * math.sqrt(np.sum(theta * (1 - theta)))


# ------------------------------------------------------------------ data splits
def test_iid_and_noniid_partitions():
    y = np.repeat(np.arange(10), 50)
    iid = partition_indices(y, 7, "iid", seed=0)
    allidx = np.concatenate(iid)
    assert np.array_equal(np.sort(allidx), np.arange(500)) and max(map(len, iid)) - min(map(len, iid)) <= 1
    non = partition_indices(y, 10, "noniid", classes_per_client=2, seed=0)
    assert np.array_equal(np.sort(np.concatenate(non)), np.arange(500))
    assert all(len(np.unique(y[p])) == 2 for p in non)
    assert partition_indices(y, 10, "noniid", 2, seed=0)[3].tolist() == non[3].tolist()
    with pytest.raises(FederatedError, match="split must be"):
        partition_indices(y, 3, "dirichlet")
    with pytest.raises(FederatedError, match="classes_per_client"):
        partition_indices(y, 3, "noniid", classes_per_client=11)
