"""Sparsifiers, error feedback and the wire format of analogmem.dsgd (thesis ch.5, no processes).

rTop-k (Barnes, Inan, Isik, Özgür, JSAIT 2020), as docs/dsgd.md states it: p = g + m; T = the r
indices of largest |p|; S = a uniformly random k-subset of T; send (S, p[S]); m ← p − sent.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from analogmem.dsgd import (
    DSGDError,
    coordinate_budget,
    densify,
    error_feedback_sparsify,
    index_bits_log2,
    pack_payload,
    payload_bits,
    rank_generator,
    select,
    select_randk,
    select_rtopk,
    select_topk,
    subset_bits,
    unpack_payload,
)
from analogmem.errors import AnalogMemError

torch.set_num_threads(1)
ALPHA = 1e-3  # level of the chi-square tests (fixed seeds: deterministic)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def distinct_magnitudes(n: int, seed: int = 0) -> torch.Tensor:
    """A vector whose |p_i| are a random permutation of 1..n with random signs (no ties)."""
    g = gen(seed)
    mags = torch.randperm(n, generator=g).double() + 1.0
    signs = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return (mags * signs).float()


# ---------------------------------------------------------------- budget and selection rules

def test_coordinate_budget_rounds_density_and_r_factor():
    assert coordinate_budget(114_314, 0.01, 4.0) == (1143, 4572)
    assert coordinate_budget(100, 0.001) == (1, 1)  # at least one coordinate
    assert coordinate_budget(10, 0.5, 100.0) == (5, 10)  # r capped at n
    assert coordinate_budget(7, 1.0, 2.0) == (7, 7)
    for bad in (dict(density=0.0), dict(density=1.5), dict(density=float("nan")), dict(r_factor=0.5)):
        kwargs = dict(n=100, density=0.1, r_factor=2.0) | bad
        with pytest.raises(DSGDError, match=next(iter(bad))):
            coordinate_budget(**kwargs)
    with pytest.raises(DSGDError, match="n="):
        coordinate_budget(0, 0.1)


def test_topk_picks_the_largest_magnitudes():
    p = distinct_magnitudes(500, seed=1)
    for k in (1, 7, 50, 500):
        idx = select_topk(p, k)
        assert idx.dtype == torch.int64 and idx.numel() == k and torch.unique(idx).numel() == k
        # every selected |p| is ≥ every unselected |p|: the set is exactly the k largest
        expected = set(torch.argsort(p.abs(), descending=True)[:k].tolist())
        assert set(idx.tolist()) == expected


def test_rtopk_selects_only_from_the_top_r_and_is_deterministic_per_generator():
    p = distinct_magnitudes(300, seed=2)
    top_r = set(torch.argsort(p.abs(), descending=True)[:40].tolist())
    for s in range(50):
        idx = select_rtopk(p, 40, 10, gen(s))
        assert idx.numel() == 10 and torch.unique(idx).numel() == 10
        assert set(idx.tolist()) <= top_r
        assert torch.equal(idx, select_rtopk(p, 40, 10, gen(s)))  # same generator state, same draw
    # r = k is top-k
    assert set(select_rtopk(p, 12, 12, gen(0)).tolist()) == set(select_topk(p, 12).tolist())


def test_rtopk_is_uniform_over_the_top_r_chi_square():
    """Each of the r top coordinates is sent with probability k/r (and none other, ever):
    chi-square goodness of fit of the inclusion counts against trials·k/r each."""
    n, r, k, trials = 200, 12, 4, 6000
    p = distinct_magnitudes(n, seed=3)
    order = torch.argsort(p.abs(), descending=True)
    rank_of = torch.empty(n, dtype=torch.int64)
    rank_of[order] = torch.arange(n)
    counts = np.zeros(n, dtype=np.int64)
    g = gen(123)
    for _ in range(trials):
        counts[select_rtopk(p, r, k, g).numpy()] += 1
    by_rank = counts[order.numpy()]
    assert by_rank[r:].sum() == 0, "rTop-k sent a coordinate outside the top r"
    res = stats.chisquare(by_rank[:r], np.full(r, trials * k / r))
    assert res.pvalue > ALPHA, f"inclusion counts {by_rank[:r]} not uniform: chi2 p = {res.pvalue:.3g}"


def test_rtopk_draws_every_k_subset_of_the_top_r_equally_often_chi_square():
    """Uniform over k-subsets (not just uniform marginals): all C(r, k) subsets equally likely."""
    r, k, trials = 6, 2, 4500
    p = distinct_magnitudes(50, seed=4)
    top = torch.argsort(p.abs(), descending=True)[:r].tolist()
    subsets = {frozenset(c): i for i, c in enumerate(itertools.combinations(top, k))}
    counts = np.zeros(len(subsets), dtype=np.int64)
    g = gen(7)
    for _ in range(trials):
        counts[subsets[frozenset(select_rtopk(p, r, k, g).tolist())]] += 1
    res = stats.chisquare(counts)
    assert len(subsets) == math.comb(r, k) == 15
    assert res.pvalue > ALPHA, f"subset counts {counts} not uniform: chi2 p = {res.pvalue:.3g}"


def test_randk_is_uniform_over_all_coordinates_chi_square():
    n, k, trials = 40, 5, 4000
    counts = np.zeros(n, dtype=np.int64)
    g = gen(11)
    for _ in range(trials):
        idx = select_randk(n, k, g)
        assert torch.unique(idx).numel() == k
        counts[idx.numpy()] += 1
    res = stats.chisquare(counts, np.full(n, trials * k / n))
    assert res.pvalue > ALPHA, f"random-k inclusion counts not uniform: chi2 p = {res.pvalue:.3g}"


def test_select_validates_its_inputs():
    p = torch.randn(20)
    with pytest.raises(DSGDError, match="'sparse'"):
        select("sparse", p, 3)
    with pytest.raises(DSGDError, match="generator"):
        select("rtopk", p, 3, 6)
    with pytest.raises(DSGDError, match="r=None"):
        select("rtopk", p, 3, None, gen(0))
    with pytest.raises(DSGDError, match="k=7"):
        select_rtopk(p, 6, 7, gen(0))  # k > r
    with pytest.raises(DSGDError, match="r=21"):
        select_rtopk(p, 21, 3, gen(0))  # r > n
    with pytest.raises(DSGDError, match="1-D"):
        select_topk(torch.randn(4, 5), 2)
    with pytest.raises(DSGDError, match="floating"):
        select_topk(torch.arange(10), 2)
    with pytest.raises(AnalogMemError):
        select_topk(p, 0)


# ---------------------------------------------------------------- error feedback

@pytest.mark.parametrize("method", ["topk", "randk", "rtopk"])
def test_error_feedback_invariant_is_exact(method):
    """sent + new memory == g + old memory, bit for bit, at every step; and the memory is p
    with exactly the k sent coordinates zeroed."""
    g_stream = gen(5)
    n, k, r = 1000, 10, 40
    memory = torch.zeros(n)
    total_g = torch.zeros(n, dtype=torch.float64)
    total_sent = torch.zeros(n, dtype=torch.float64)
    for step in range(25):
        g = torch.randn(n, generator=g_stream) * torch.linspace(0.01, 3.0, n)
        upd = error_feedback_sparsify(g, memory, method, k, r, rank_generator(0, 0, step, 0))
        sent = densify(upd.indices, upd.values, n)
        assert torch.equal(sent + upd.memory, g + memory)
        assert upd.indices.numel() == k and torch.unique(upd.indices).numel() == k
        assert torch.all(upd.memory[upd.indices] == 0)
        assert torch.equal(upd.values, (g + memory)[upd.indices])
        total_g += g.double()
        total_sent += sent.double()
        memory = upd.memory
    # telescoping: everything ever computed was either sent or is still in memory
    torch.testing.assert_close(total_sent + memory.double(), total_g, rtol=0, atol=1e-4)


def test_error_feedback_memory_makes_topk_send_accumulated_small_coordinates():
    """A coordinate too small to be sent alone is sent once its memory has grown past the others."""
    n = 10
    g = torch.tensor([1.0] + [0.3] * (n - 1))
    memory = torch.zeros(n)
    sent_at = {}
    for step in range(8):
        upd = error_feedback_sparsify(g, memory, "topk", 1)
        sent_at.setdefault(int(upd.indices[0]), step)
        memory = upd.memory
    assert sent_at[0] == 0 and len(sent_at) > 1  # later steps send accumulated 0.3-coordinates


def test_without_error_feedback_memory_stays_none_and_g_is_untouched():
    g = torch.randn(50)
    before = g.clone()
    upd = error_feedback_sparsify(g, None, "topk", 5)
    assert upd.memory is None and torch.equal(g, before)
    with pytest.raises(DSGDError, match="memory must match"):
        error_feedback_sparsify(g, torch.zeros(49), "topk", 5)


def test_rank_generator_is_deterministic_and_distinct_per_rank_step_bucket():
    draw = lambda *key: torch.randint(0, 2**31, (4,), generator=rank_generator(*key)).tolist()  # noqa: E731
    assert draw(3, 0, 5, 1) == draw(3, 0, 5, 1)
    keys = [(3, 0, 5, 1), (3, 1, 5, 1), (3, 0, 6, 1), (3, 0, 5, 2), (4, 0, 5, 1)]
    assert len({tuple(draw(*key)) for key in keys}) == len(keys)


# ---------------------------------------------------------------- wire format and bits

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_payload_roundtrip_is_exact_and_bits_are_counted_from_the_tensor(dtype):
    k = 7  # odd: exercises alignment of the int32 part after 2-byte values
    idx = torch.tensor([5, 0, 2**31 - 1, 17, 3, 99, 1000])
    val = torch.randn(k, generator=gen(1)).to(dtype)
    payload = pack_payload(idx, val)
    assert payload.dtype == torch.uint8
    elem_bits = torch.empty((), dtype=dtype).element_size() * 8
    assert payload_bits(payload) == payload.numel() * 8 == k * (32 + elem_bits)
    i2, v2 = unpack_payload(payload, k, dtype)
    assert torch.equal(i2, idx) and torch.equal(v2, val) and i2.dtype == torch.int64
    with pytest.raises(DSGDError, match="bytes"):
        unpack_payload(payload[:-1], k, dtype)
    with pytest.raises(DSGDError, match="int32"):
        pack_payload(torch.tensor([2**31]), torch.zeros(1))


def test_information_theoretic_index_bits():
    assert [index_bits_log2(n) for n in (1, 2, 3, 4, 5, 1024, 1025, 114_314)] == [0, 1, 2, 2, 3, 10, 11, 17]
    for n, k in ((10, 3), (1000, 10), (64, 64)):
        assert subset_bits(n, k) == pytest.approx(math.log2(math.comb(n, k)), abs=1e-9)
    # a set of k indices never needs more than k·⌈log2 n⌉ bits
    assert subset_bits(114_314, 1143) < 1143 * index_bits_log2(114_314)
