"""SuRP, the algorithm and its bits (thesis ch.2; Isik, Weissman, No, AISTATS 2022; docs/pruning.md).

Each test names the step of the algorithm it checks: layer normalisation and signs,
the threshold schedule θ = s·λ⁻¹ with s = ln(n/ln n) and λ⁻¹ = (α/s)·mean residual, the
(1 − 1/n) shrink, resets with α ← 0.9α every 20 resets, the random (shared-stream) index
choice with its geometric position K, and the rate = Σ code lengths + sign bits + side bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analogmem.pruning import (
    LAM_RULES,
    PruningError,
    best_code,
    elias_gamma_length,
    exp_golomb_length,
    global_magnitude_masks,
    global_magnitude_prune,
    rice_length,
    scale_factor,
    successive_refinement,
    surp_decode,
    surp_encode,
    target_nonzero,
)
from analogmem.pruning.codes import BitReader, BitWriter, code_lengths
from analogmem.pruning.surp import _FIRST_CHUNK, _IndexStream


# --------------------------------------------------------------------------- direct transcription
def transcription(u, seed, alpha, steps):
    """SuRP written out literally from docs/pruning.md ("The algorithm") (O(n) per step, means recomputed from the
    residual vector), with the shared stream drawn in the documented chunks 1024, 2048, …"""
    n = u.size
    s = math.log(n / math.log(n))
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    res, rec = u.copy(), np.zeros(n)
    a, resets = alpha, 0
    lam = (a / s) * res[res > 0].mean()
    log = {"m": [], "theta": [], "K": [], "epoch_lam": [lam], "epoch_alpha": [a], "epoch_resets": [0]}
    while len(log["m"]) < steps:
        cand = res > s * lam
        if not cand.any():
            resets += 1
            if resets % 20 == 0:
                a *= 0.9
            lam = (a / s) * res[res > 0].mean()
            log["epoch_lam"].append(lam), log["epoch_alpha"].append(a), log["epoch_resets"].append(resets)
            continue
        offset, size = 0, 1024
        while True:
            j = np.minimum((gen.random(size) * n).astype(np.int64), n - 1)
            hit = np.flatnonzero(cand[j])
            if hit.size:
                k, m = offset + int(hit[0]) + 1, int(j[hit[0]])
                break
            offset, size = offset + size, min(2 * size, 1 << 20)
        theta = s * lam
        rec[m] += theta
        res[m] -= theta
        log["m"].append(m), log["theta"].append(theta), log["K"].append(k)
        lam *= 1 - 1 / n
    return rec, log


def test_run_matches_a_direct_transcription():
    u = np.abs(np.random.default_rng(3).laplace(size=12))
    rec, log = transcription(u, seed=7, alpha=10.0, steps=60)
    run = successive_refinement(u, seed=7, max_steps=60)
    np.testing.assert_array_equal(run.indices, log["m"])
    np.testing.assert_array_equal(run.gaps, log["K"])
    # the encoder takes the mean residual from running sums (Σu − Σθ, what the decoder can
    # compute); the transcription recomputes it: equal up to float rounding
    np.testing.assert_allclose(run.thresholds, log["theta"], rtol=1e-9)
    np.testing.assert_allclose(run.epoch_lam_inv, log["epoch_lam"], rtol=1e-9)
    np.testing.assert_array_equal(run.epoch_resets, log["epoch_resets"])
    np.testing.assert_allclose(run.epoch_alpha, log["epoch_alpha"], rtol=0)
    np.testing.assert_allclose(run.reconstruction, rec, rtol=1e-9)
    assert run.n_resets == log["epoch_resets"][-1] > 20  # α decayed at least once on this tiny case
    # s = ln(n / ln n) for n = 12
    assert run.scale == pytest.approx(math.log(12 / math.log(12)))


def test_threshold_schedule_shrink_and_resets():
    # θ_{t+1} = θ_t·(1 − 1/n) inside an epoch; at an epoch start θ = α_e·(mean residual), i.e.
    # λ⁻¹ = (α_e/s)·mean; a reset happens only when no residual exceeds the last threshold.
    u = np.abs(np.random.default_rng(0).laplace(size=500))
    run = successive_refinement(u, seed=1, target_nonzero=200)
    n, s = run.n, run.scale
    th, ep = run.thresholds, run.epoch_of_step
    same = ep[1:] == ep[:-1]
    np.testing.assert_allclose(th[1:][same], th[:-1][same] * (1 - 1 / n), rtol=1e-13)
    res = u.copy()
    for t in range(run.n_steps):
        if t == 0 or ep[t] != ep[t - 1]:
            e = ep[t]
            assert th[t] == pytest.approx(run.epoch_alpha[e] * res[res > 0].mean(), rel=1e-11)
            assert th[t] == pytest.approx(s * run.epoch_lam_inv[e], rel=1e-15)
        assert res[run.indices[t]] > th[t]  # only candidates are picked
        assert run.n_candidates[t] == np.count_nonzero(res > th[t])
        res[run.indices[t]] -= th[t]
        if t + 1 < run.n_steps and ep[t + 1] != ep[t]:  # the epoch ended: nothing above its next threshold
            assert not np.any(res > th[t] * (1 - 1 / n))
    np.testing.assert_allclose(res, run.residual, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule", LAM_RULES)
def test_every_lam_rule_follows_its_schedule_and_decodes(rule):
    # After each step λ⁻¹ ← λ⁻¹·(1 − 1/n) ("n-1", the default), λ⁻¹·(1 − s/n) ("n-s"), or
    # (α/s)·mean residual recomputed from the running sums ("mean": θ = α·mean residual at every
    # step). The rule is in the header, so each decodes bit for bit; resets are unchanged.
    w = np.random.default_rng(0).laplace(size=500)
    code = surp_encode([w], max_steps=400, seed=1, lam_rule=rule)
    run = code.run
    assert run.lam_rule == rule and run.n_steps == 400
    n, s, th, ep = run.n, run.scale, run.thresholds, run.epoch_of_step
    same = ep[1:] == ep[:-1]
    assert same.sum() > 100
    if rule == "mean":
        mean_before = (run.u_sum - np.r_[0.0, np.cumsum(th)[:-1]]) / run.positive
        np.testing.assert_allclose(th, run.epoch_alpha[ep] * mean_before, rtol=1e-12)
    else:
        factor = 1 - (1 if rule == "n-1" else s) / n
        np.testing.assert_allclose(th[1:][same], th[:-1][same] * factor, rtol=1e-13)
    decoded = surp_decode(code.to_bytes(), code.shapes, code.seed_state)[0]
    np.testing.assert_array_equal(decoded, code.layers()[0])
    assert math.ceil(code.total_bits / 8) == len(code.to_bytes())
    with pytest.raises(PruningError, match="lam_rule"):
        successive_refinement(np.abs(w), seed=0, max_steps=5, lam_rule="1-1/n")


@pytest.mark.parametrize("rule", ["n-1", "mean"])
def test_an_epoch_uses_up_its_candidates_one_per_step(rule):
    # Why SuRP stays far above R(D) whatever the λ rule: a picked residual u − θ falls below θ
    # (with probability 1 − e^(−s) for an exponential tail) and the slowly falling threshold
    # lets few new indices in, so within an epoch the candidate count drops by one per step
    # (c₀, c₀ − 1, …, 1, with the odd repeat) and the late steps cost about log₂ n bits each.
    u = np.abs(np.random.default_rng(0).laplace(size=20_000))
    run = successive_refinement(u, seed=1, max_steps=60, lam_rule=rule)
    epochs = np.unique(run.epoch_of_step)[:4]  # the first four epochs with steps
    assert run.epoch_steps[epochs].sum() >= 20
    drops = []
    for e in epochs:
        c = run.n_candidates[run.epoch_of_step == e]
        assert c[-1] == 1 and np.all(np.diff(c) <= 0)
        drops.extend(np.diff(c))
    assert np.mean(np.asarray(drops) == -1) >= 0.9


def test_alpha_decays_by_0_9_every_20_resets():
    u = np.abs(np.random.default_rng(5).standard_normal(2000))  # Gaussian tails: α must decay a lot
    run = successive_refinement(u, seed=2, target_nonzero=300)
    assert run.n_resets >= 60
    np.testing.assert_allclose(run.epoch_alpha, 10.0 * 0.9 ** (run.epoch_resets // 20), rtol=1e-13)
    assert run.alpha_final == pytest.approx(10.0 * 0.9 ** (run.n_resets // 20))
    slow = successive_refinement(u, seed=2, target_nonzero=300, decay_every=40)
    np.testing.assert_allclose(slow.epoch_alpha, 10.0 * 0.9 ** (slow.epoch_resets // 40), rtol=1e-13)


def test_reconstruction_signs_sparsity_and_normalisation():
    rng = np.random.default_rng(11)
    layers = [rng.laplace(size=(20, 30)) * 0.1, rng.laplace(size=50) * 3.0, rng.laplace(size=(4, 5, 6))]
    code = surp_encode(layers, sparsity=0.8, seed=3)
    n = sum(a.size for a in layers)
    assert code.n == n and code.nonzero == target_nonzero(n, 0.8) == round(0.2 * n)
    w = np.concatenate([a.reshape(-1) for a in layers])
    w_hat = code.flat()
    kept = w_hat != 0
    assert kept.sum() == code.nonzero and code.sparsity == pytest.approx(1 - code.nonzero / n)
    assert np.all(np.sign(w_hat[kept]) == np.sign(w[kept]))  # signs kept
    # ŵ_m = sign·‖layer‖·Σ_{t: m_t = m} θ_t: a sum of the threshold schedule, nothing else
    sums = np.zeros(n)
    np.add.at(sums, code.run.indices, code.run.thresholds)
    norms = np.repeat([np.float32(np.linalg.norm(a)) for a in layers], [a.size for a in layers])
    np.testing.assert_allclose(code.run.reconstruction, sums, rtol=1e-12, atol=0)
    np.testing.assert_allclose(w_hat, np.sign(w) * sums * norms, rtol=1e-12, atol=0)
    # layer normalisation: the magnitudes refined are |w|/‖layer‖
    np.testing.assert_allclose(code.run.reconstruction + code.run.residual, np.abs(w) / norms, rtol=1e-12)
    assert [a.shape for a in code.layers()] == [a.shape for a in layers]
    # the residual never goes negative: SuRP under-approximates every magnitude
    assert code.run.residual.min() > 0 and np.all(np.abs(w_hat) <= np.abs(w) * (1 + 1e-12))


def test_rate_is_the_sum_of_code_lengths_and_the_bitstream_decodes():
    rng = np.random.default_rng(4)
    layers = [rng.laplace(size=(40, 25)), rng.laplace(size=300)]
    code = surp_encode(layers, sparsity=0.6, seed=9)
    steps = code.step_code_lengths()
    # index bits = Σ_t |code(K_t)| with each epoch's (family, order)
    manual = 0
    for (family, order, bits), e in zip(code.epoch_codes, np.flatnonzero(code.run.epoch_steps > 0)):
        k = code.run.gaps[code.run.epoch_of_step == e]
        assert bits == int(code_lengths(k, family, order).sum()) == best_code(k)[2]
        manual += bits
    assert code.index_bits == manual == int(steps.sum())
    assert code.sign_bits == code.nonzero
    blob = code.to_bytes()
    assert len(blob) == math.ceil(code.total_bits / 8)
    assert code.total_bits == code.index_bits + code.sign_bits + code.side_bits
    assert code.rate_trace()["bits"][-1] == code.total_bits
    decoded = surp_decode(blob, code.shapes, code.seed_state)
    for a, b in zip(decoded, code.layers()):
        np.testing.assert_array_equal(a, b)  # bit for bit
    with pytest.raises(PruningError, match="truncated"):
        surp_decode(blob[: len(blob) // 2], code.shapes, code.seed_state)
    # the rate trace is non-decreasing and the distortion non-increasing
    tr = code.rate_trace()
    assert np.all(np.diff(tr["bits"]) > 0) and np.all(np.diff(tr["l1"]) < 0) and np.all(np.diff(tr["l2"]) < 0)


def test_same_seed_same_code_other_seed_other_code():
    w = np.random.default_rng(0).laplace(size=800)
    a, b = surp_encode([w], sparsity=0.7, seed=5), surp_encode([w], sparsity=0.7, seed=5)
    assert a.to_bytes() == b.to_bytes()
    c = surp_encode([w], sparsity=0.7, seed=6)
    assert not np.array_equal(a.run.indices, c.run.indices)


def test_index_choice_is_uniform_over_candidates_and_K_is_geometric():
    # The shared stream picks the first candidate: m ~ Uniform(candidates), K ~ Geometric(C/n).
    n, cand = 200, np.zeros(200, dtype=bool)
    cand[[3, 50, 51, 120, 199]] = True
    stream = _IndexStream(np.random.SeedSequence(0), n)
    draws = [stream.first_hit(cand) for _ in range(5000)]
    k = np.array([d[0] for d in draws])
    m = np.array([d[1] for d in draws])
    counts = np.array([np.count_nonzero(m == i) for i in np.flatnonzero(cand)])
    assert counts.sum() == 5000
    assert stats.chisquare(counts).pvalue > 1e-3
    p = cand.sum() / n
    # chi-square of K against Geometric(p) on bins with ≥ 5 expected counts
    edges = np.r_[1, np.unique(stats.geom.ppf(np.linspace(0.1, 0.9, 9), p).astype(int) + 1), 10 ** 9]
    obs = np.histogram(k, bins=edges)[0]
    exp = 5000 * np.diff(stats.geom.cdf(edges - 1, p))
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    assert abs(k.mean() - 1 / p) < 5 * math.sqrt((1 - p) / p**2 / 5000)
    # the decoder's side of the stream gives back the same index for each K
    dec = _IndexStream(np.random.SeedSequence(0), n)
    assert all(dec.at(kk) == mm for kk, mm in zip(k[:200], m[:200]))
    assert _FIRST_CHUNK == 1024


def test_gaps_in_a_run_are_geometric_given_the_candidate_count():
    # Probability integral transform of the discrete K_t under Geometric(p_t) (randomised):
    # uniform on (0, 1) if K_t is geometric with the recorded candidate counts.
    u = np.abs(np.random.default_rng(8).laplace(size=3000))
    run = successive_refinement(u, seed=4, max_steps=3000)
    p = run.n_candidates / run.n
    k = run.gaps
    v = np.random.default_rng(0).random(k.size)
    pit = stats.geom.cdf(k - 1, p) + v * stats.geom.pmf(k, p)
    assert stats.kstest(pit, "uniform").pvalue > 1e-3


def test_prefix_codes_by_hand():
    def bits(k, family, order):
        w = BitWriter()
        w.write_code(k, family, order)
        return "".join(str(b) for b in np.unpackbits(np.frombuffer(w.getvalue(), np.uint8))[: w.n_bits])

    assert bits(1, "exp-golomb", 0) == "1" and bits(2, "exp-golomb", 0) == "010"
    assert bits(5, "exp-golomb", 0) == "00101"  # Elias gamma of 5
    assert bits(1, "exp-golomb", 2) == "100" and bits(5, "exp-golomb", 2) == "01000"  # q=4: 4+4=8=1000
    assert bits(1, "rice", 2) == "000" and bits(7, "rice", 2) == "1010"  # q=6: 1 in unary, then 10
    assert list(elias_gamma_length([1, 2, 3, 4, 7, 8, 1000])) == [1, 3, 3, 5, 5, 7, 19]
    assert list(exp_golomb_length([1, 4, 5], 2)) == [3, 3, 5]
    assert list(rice_length([1, 4, 5, 100], 2)) == [3, 3, 4, 27]
    # round trip of random integers through writer and reader, every family/order
    rng = np.random.default_rng(1)
    ks = rng.geometric(0.01, 400)
    w = BitWriter()
    plan = [(int(k), ("rice", "exp-golomb")[i % 2], i % 9) for i, k in enumerate(ks)]
    for k, f, o in plan:
        w.write_code(k, f, o)
    w.write_float64(math.pi)
    r = BitReader(w.getvalue())
    assert [r.read_code(f, o) for _, f, o in plan] == [k for k, _, _ in plan]
    assert r.read_float64() == math.pi
    assert w.n_bits == sum(int(code_lengths(k, f, o)) for k, f, o in plan) + 64
    # best_code: the minimum over families and orders
    fam, order, total = best_code(ks)
    assert total == min(int(code_lengths(ks, f, o).sum()) for f in ("rice", "exp-golomb") for o in range(20))


def test_global_magnitude_pruning_keeps_the_global_top_k():
    rng = np.random.default_rng(2)
    layers = [rng.normal(size=(10, 10)), 5 * rng.normal(size=30)]
    pruned = global_magnitude_prune(layers, 0.75)
    flat = np.concatenate([a.reshape(-1) for a in layers])
    kept = np.concatenate([p.reshape(-1) for p in pruned]) != 0
    assert kept.sum() == round(0.25 * 130)
    assert np.abs(flat[kept]).min() >= np.abs(flat[~kept]).max()  # one global threshold
    np.testing.assert_array_equal(np.concatenate([p.reshape(-1) for p in pruned])[kept], flat[kept])
    # ties at the threshold: exact count, earlier positions first
    masks = global_magnitude_masks([np.ones(10)], 0.5)
    assert masks[0].tolist() == [True] * 5 + [False] * 5


@pytest.mark.parametrize("bad, match", [
    ([np.array([1.0, np.nan, 2.0])], r"layer 'layer0' has 1 NaN/inf"),
    ([np.ones(4), np.zeros((0, 3))], r"layer 'layer1' is empty"),
    ([np.ones(4), np.zeros(5)], r"layer 'layer1' is all zeros"),
])
def test_malformed_layers_are_named(bad, match):
    with pytest.raises(PruningError, match=match):
        surp_encode(bad, sparsity=0.5, seed=0)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_sparsity(sparsity):
    with pytest.raises(PruningError, match="sparsity"):
        surp_encode([np.arange(1.0, 11.0)], sparsity=sparsity, seed=0)
    with pytest.raises(PruningError, match="sparsity"):
        global_magnitude_masks([np.arange(1.0, 11.0)], sparsity)


def test_unreachable_sparsity_and_bad_parameters():
    w = np.r_[np.zeros(6), np.arange(1.0, 5.0)]  # already 60 % zeros
    with pytest.raises(PruningError, match="only 4 are non-zero"):
        surp_encode([w], sparsity=0.5, seed=0)
    with pytest.raises(PruningError, match="keeps no weight"):
        surp_encode([np.arange(1.0, 11.0)], sparsity=0.99, seed=0)
    with pytest.raises(PruningError, match="alpha"):
        surp_encode([np.arange(1.0, 11.0)], sparsity=0.5, alpha=0.0, seed=0)
    with pytest.raises(PruningError, match="stopping target"):
        successive_refinement(np.arange(1.0, 11.0), seed=0)
    with pytest.raises(PruningError, match="at least 2"):
        scale_factor(1)
    # the pruned zeros of an earlier pass stay zero
    code = surp_encode([w], sparsity=0.7, seed=0)
    assert np.all(code.flat()[:6] == 0) and code.nonzero == 3
