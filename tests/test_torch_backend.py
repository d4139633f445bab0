"""The torch backend (``EmulatedBench(..., backend="torch")``, :class:`TorchBench`,
:class:`TorchStore`) against the numpy reference.

The torch backend draws from torch generators, so it is not bit-identical to the reference:
its reads are compared *in distribution* with the reference's, for every bundled card at
several inputs x and times t. Each comparison of two samples (torch vs reference, ~5e4 each)
checks

* means within Z = 5 standard errors of their difference, se = sqrt(s₁²/n₁ + s₂²/n₂)
  (a correct backend fails one with probability 5.7e-7);
* standard deviations within Z = 5 standard errors of their difference, with
  se(s) = sqrt(m₄ − s⁴)/(2 s √n) per sample (m₄ the sample fourth central moment);
* a two-sample Kolmogorov–Smirnov test at level ALPHA_FAMILY / N_COMPARISONS = 1e-3/500:
  a Bonferroni correction, so that over all (fewer than 500) comparisons of this file a
  correct backend fails any KS test with probability below 1e-3.

Seeds are fixed, so the suite is deterministic; the bounds say how unlikely a failure of a
correct backend would be for any seed. ``test_comparison_has_power`` shows that the same
check rejects reads off by 1 % in mean or 5 % in spread.

The torch device is parametrised over ``ANALOGMEM_TEST_TORCH_DEVICES`` (comma-separated,
default ``cpu,cuda``; CUDA skipped when unavailable); ``benchmarks/gpu_check.sh`` runs this
file with ``cuda`` only.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

import analogmem  # noqa: E402
from analogmem import DeviceCardError, EmulatedBench, TargetRangeError, WriteVerify  # noqa: E402
from analogmem.emulator import reference  # noqa: E402
from analogmem.emulator._streams import op_key  # noqa: E402
from analogmem.emulator.cells import parse_card  # noqa: E402
from analogmem.emulator.torch_bench import TorchBench  # noqa: E402
from analogmem.storage import EmulatedStore, TorchStore, load_model, make_encoder, store_model  # noqa: E402
from analogmem.storage import encoders as E  # noqa: E402
from analogmem.storage import torch_store  # noqa: E402
from analogmem.storage.torch_store import on_device  # noqa: E402

YEAR = 365 * 86400.0
Z = 5.0
ALPHA_FAMILY = 1e-3
N_COMPARISONS = 500
ALPHA_KS = ALPHA_FAMILY / N_COMPARISONS

_WANTED = [d.strip() for d in os.environ.get("ANALOGMEM_TEST_TORCH_DEVICES", "cpu,cuda").split(",") if d.strip()]
TORCH_DEVICES = [pytest.param(d, marks=pytest.mark.skipif(d.startswith("cuda") and not torch.cuda.is_available(),
                                                          reason="CUDA is not available"))
                 for d in _WANTED]


def np_(a):
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def assert_same_distribution(got, want, what: str) -> None:
    """Two samples from one distribution: means and stds within Z standard errors, KS not
    rejected at ALPHA_KS (see the module docstring)."""
    got, want = np_(got).astype(np.float64).ravel(), np_(want).astype(np.float64).ravel()
    ng, nw = got.size, want.size
    mg, mw, sg, sw = got.mean(), want.mean(), got.std(ddof=1), want.std(ddof=1)
    se = math.sqrt(sg**2 / ng + sw**2 / nw)
    scale = max(abs(mg), abs(mw), 1e-300)
    assert abs(mg - mw) <= Z * se + 1e-12 * scale, f"{what}: means {mg:.6g} vs {mw:.6g} (±{Z}·{se:.3g})"

    def se_std(x, s):
        if s == 0:
            return 0.0
        m4 = np.mean((x - x.mean()) ** 4)
        return math.sqrt(max(m4 - s**4, 0.0)) / (2 * s * math.sqrt(x.size))

    se_s = math.hypot(se_std(got, sg), se_std(want, sw))
    assert abs(sg - sw) <= Z * se_s + 1e-12 * scale, f"{what}: stds {sg:.6g} vs {sw:.6g} (±{Z}·{se_s:.3g})"
    if se > 1e-12 * scale:  # not a constant (up to rounding): compare the distributions
        res = stats.ks_2samp(got, want)
        assert res.pvalue > ALPHA_KS, f"{what}: KS D = {res.statistic:.4g}, p = {res.pvalue:.3g} <= {ALPHA_KS:.1e}"


@pytest.fixture(params=TORCH_DEVICES)
def tdev(request):
    return request.param


# --------------------------------------------------------------------------- reads vs the reference
N_BLOCK = 50_000
#: per card: write inputs (x = g/g_max for conductance cards, volts for pcm-stanford) and read times (s)
CASES = {
    "pcm-nandakumar2019": ([0.02, 0.3, 0.7, 1.0], [0.0, 3600.0, 86400.0, YEAR]),
    "rram-wan2022": ([0.05, 0.4, 0.8, 1.0], [1.0, 3600.0, 86400.0, 7 * 86400.0]),
    "rram-radar": ([0.05, 0.45, 0.75, 0.97], [1.0, 600.0, 1e7, 1e11]),
    "pcm-stanford": ([1.0, 1.62, 2.33, 2.95], [0.0, 86400.0]),
    # two-branch drift and read-noise laws (breaks at x = 0.0945, 0.16, 0.31): inputs on both sides
    "pcm-hermes2023": ([0.03, 0.12, 0.5, 1.0], [0.0, 3600.0, YEAR]),
    "pcm-hermes2023-1dev": ([0.03, 0.2, 0.6], [0.0, 86400.0]),
    # additive log-linear decay (mean and spread) and log10 read noise; 0.5 s is held at 1 s, 20 y at 10 y
    "rram-cmo-hfox": ([0.2, 0.6, 0.95], [0.5, 3600.0, 20 * YEAR]),
    "rram-cmo-hfox-0.2pct": ([0.2, 0.6], [1.0, 86400.0]),
}


def _targets(dev, inputs):
    scale = 1.0 if dev.input != "conductance" else dev.g_max_S
    return np.repeat(np.asarray(inputs) * scale, N_BLOCK)


@pytest.mark.parametrize("card", list(CASES))
def test_reads_match_the_reference(card, tdev):
    """Programming noise (polynomial or empirical channel), drift, relaxation (polynomial
    and tabulated) and read noise: the torch reads at each x and t are distributed as the
    numpy reference's (the published models, README "Device cards")."""
    dev = analogmem.load_device(card)
    inputs, times = CASES[card]
    g_t = _targets(dev, inputs)
    bench = EmulatedBench(dev, g_t.size, seed=11, backend="torch", torch_device=tdev)
    assert isinstance(bench, TorchBench) and bench.torch_device.type == torch.device(tdev).type
    bench.program(torch.as_tensor(g_t, device=tdev))
    seed = np.random.SeedSequence(12)
    state = reference.program_reference(dev, g_t, np.zeros(g_t.size, np.int8), op_key(seed.spawn(1)[0]))
    mine = bench.cell_state()
    if "q_read" in state:  # the reference keeps only the arrays the card uses
        np.testing.assert_allclose(np_(mine["q_read"]), state["q_read"], rtol=1e-12)  # a function of the target
    if "g_eff" in state:
        np.testing.assert_array_equal(np_(mine["g_eff"]), state["g_eff"])
    for key in ("g_prog", "nu", "z_relax"):
        if key not in state:
            continue
        for b, x in enumerate(inputs):
            sl = slice(b * N_BLOCK, (b + 1) * N_BLOCK)
            assert_same_distribution(mine[key][sl], state[key][sl], f"{card} {key} at input {x}")
    for t in times:
        got = bench.read(t)
        assert got.device.type == torch.device(tdev).type and got.dtype == torch.float64
        want = reference.read_reference(dev, state, t, op_key(seed.spawn(1)[0]))
        for b, x in enumerate(inputs):
            sl = slice(b * N_BLOCK, (b + 1) * N_BLOCK)
            assert_same_distribution(got[sl], want[sl], f"{card} read at input {x}, t = {t:g} s")


def test_comparison_has_power():
    """The check above rejects a model off by 1 % in mean or 5 % in spread (PCM, x = 0.5, 1 day)."""
    dev = analogmem.load_device("pcm-nandakumar2019")
    g_t = np.full(N_BLOCK, 0.5 * dev.g_max_S)
    bench = TorchBench(dev, N_BLOCK, seed=1)
    bench.program(g_t)
    got = np_(bench.read(86400.0))
    seed = np.random.SeedSequence(2)
    want = reference.read_reference(dev, reference.program_reference(dev, g_t, np.zeros(N_BLOCK, np.int8), op_key(seed)),
                                     86400.0, op_key(seed.spawn(1)[0]))
    assert_same_distribution(got, want, "unchanged")
    with pytest.raises(AssertionError):
        assert_same_distribution(got * 1.01, want, "1 % off in mean")
    with pytest.raises(AssertionError):
        assert_same_distribution(got.mean() + (got - got.mean()) * 1.05, want, "5 % off in spread")


def test_float32_state_matches_the_reference():
    dev = analogmem.load_device("pcm-nandakumar2019")
    g_t = _targets(dev, [0.1, 0.9])
    bench = TorchBench(dev, g_t.size, seed=3, dtype="float32")
    bench.program(torch.as_tensor(g_t, dtype=torch.float32))
    seed = np.random.SeedSequence(4)
    state = reference.program_reference(dev, g_t, np.zeros(g_t.size, np.int8), op_key(seed))
    got = bench.read(86400.0)
    assert got.dtype == torch.float32
    want = reference.read_reference(dev, state, 86400.0, op_key(seed.spawn(1)[0]))
    for b in range(2):
        sl = slice(b * N_BLOCK, (b + 1) * N_BLOCK)
        assert_same_distribution(got[sl], want[sl], f"float32 block {b}")


# --------------------------------------------------------------------------- write-verify, faults, time
@pytest.mark.parametrize("card", ["pcm-nandakumar2019", "rram-wan2022"])
def test_write_verify_with_tolerance_windows_matches(card, tdev):
    """The re-draw loop (a write draw per pulse, a verify read with the card's read noise):
    pulses, success and the programmed and later read values as the compiled kernels give
    them (the kernels equal the numpy reference exactly, tests/test_kernels.py)."""
    dev = analogmem.load_device(card)
    g_t = _targets(dev, [0.2, 0.6])
    vf = WriteVerify(max_pulses=6, tolerance_rel=0.03)
    mine = TorchBench(dev, g_t.size, seed=5, torch_device=tdev)
    ref = EmulatedBench(dev, g_t.size, seed=6)
    rm, rr = mine.program(g_t, verify=vf), ref.program(g_t, verify=vf)
    gm, gr = mine.read(86400.0), ref.read(86400.0)
    for b in range(2):
        sl = slice(b * N_BLOCK, (b + 1) * N_BLOCK)
        pm, pr = np_(rm.pulses[sl]), rr.pulses[sl]
        table = np.array([np.bincount(pm, minlength=7)[1:], np.bincount(pr, minlength=7)[1:]])
        table = table[:, table.sum(axis=0) > 0]
        assert stats.chi2_contingency(table).pvalue > ALPHA_KS, (card, b, table)
        assert_same_distribution(np_(rm.success[sl]).astype(float), rr.success[sl].astype(float), "success")
        assert_same_distribution(mine.cell_state()["g_prog"][sl], ref.cell_state()["g_prog"][sl], "g_prog")
        assert_same_distribution(gm[sl], gr[sl], "read at 1 day")
    ok = np_(rm.success)
    lo, hi = vf.window(g_t)
    g_p = np_(mine.cell_state()["g_prog"])
    if not dev.read_noise.enabled:  # the last pulse's value is the one verified
        assert np.all((g_p[ok] >= lo[ok]) & (g_p[ok] <= hi[ok]))


def test_write_verify_card_model_matches(tdev):
    """rram-radar's pulse-response model (WriteVerify.card()): pulses per level against the
    card's closed form E[min(T, budget)] and P(T <= budget) and against the kernels; verified
    conductances and reads after relaxation as the kernels give them."""
    dev = analogmem.load_device("rram-radar")
    pr = dev.write_verify
    n_level = 20_000
    mids = [(lo + min(hi, dev.g_max_S)) / 2 for lo, hi in zip(pr.window_lo_S, pr.window_hi_S)]
    g_t = np.repeat(mids, n_level)
    vf = WriteVerify.card()
    mine = TorchBench(dev, g_t.size, seed=7, torch_device=tdev)
    ref = EmulatedBench(dev, g_t.size, seed=8)
    rm, rr = mine.program(g_t, verify=vf), ref.program(g_t, verify=vf)
    gm, gr = mine.read(1e7), ref.read(1e7)
    for j in range(pr.n_levels):
        sl = slice(j * n_level, (j + 1) * n_level)
        pulses = np_(rm.pulses[sl]).astype(float)
        mean = pr.mean_pulses(j)  # E[min(T, budget)] of the geometric mixture (the card's closed form)
        assert abs(pulses.mean() - mean) <= Z * pulses.std() / math.sqrt(n_level), (j, pulses.mean(), mean)
        p_ok = pr.success_probability(j)
        succ = np_(rm.success[sl]).astype(float)
        assert abs(succ.mean() - p_ok) <= Z * math.sqrt(max(p_ok * (1 - p_ok), 1e-12) / n_level) + 1e-12
        assert_same_distribution(pulses, rr.pulses[sl].astype(float), f"pulses of level {j}")
        assert_same_distribution(mine.cell_state()["g_prog"][sl], ref.cell_state()["g_prog"][sl], f"level {j} g_prog")
        assert_same_distribution(gm[sl], gr[sl], f"level {j} read at 1e7 s")
    assert np_(rm.pulses).max() <= pr.max_pulses


def test_write_verify_card_any_window_matches(tdev):
    """Issue #16 on the torch backend: windows the card has no level for (inside its range),
    a re-program and the ISPP scheme: pulses and success per window against the closed form
    of the table the shared model gives for exactly these settings."""
    dev = analogmem.load_device("rram-radar")
    windows = [(1.0 / 6660.0, 1.0 / 5920.0), (1.0 / 6010.0, 1.0 / 5770.0)]  # 5920-6660 and 5770-6010 ohm
    vf = WriteVerify.card(windows=windows, prior_programs=1, scheme="ispp", step_V=0.1)
    table = dev.write_verify.table(windows, prior_programs=1, scheme="ispp", step_V=0.1)
    n_level = 20_000
    g_t = np.repeat([math.sqrt(lo * hi) for lo, hi in windows], n_level)
    rep = TorchBench(dev, g_t.size, seed=3, torch_device=tdev).program(g_t, verify=vf)
    for j in range(len(windows)):
        sl = slice(j * n_level, (j + 1) * n_level)
        pulses = np_(rep.pulses[sl]).astype(float)
        mean = table.mean_pulses(j)
        assert abs(pulses.mean() - mean) <= Z * pulses.std() / math.sqrt(n_level), (j, pulses.mean(), mean)
        p_ok = table.success_probability(j)
        succ = np_(rep.success[sl]).astype(float)
        assert abs(succ.mean() - p_ok) <= Z * math.sqrt(max(p_ok * (1 - p_ok), 1e-12) / n_level) + 1e-12
    assert np_(rep.pulses).max() <= table.max_pulses


def test_stuck_cells(card_text, tdev):
    text = card_text().replace("p_stuck_low = 0.0", "p_stuck_low = 0.02").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.01")
    dev = parse_card(text, "stuck.toml")
    n = 100_000
    b = TorchBench(dev, n, seed=4, torch_device=tdev)
    stuck = np_(b.stuck)
    for code, p in ((1, 0.02), (2, 0.01)):
        assert abs(np.mean(stuck == code) - p) <= Z * math.sqrt(p * (1 - p) / n)
    rep = b.program(np.full(n, 12e-6))
    assert rep.n_stuck == int(np.count_nonzero(stuck))
    state = b.cell_state()
    assert np.all(np_(state["nu"])[stuck != 0] == 0.0)
    g = np_(b.read(86400.0))
    assert np.all(g[stuck == 1] == 0.0)
    ref = EmulatedBench(dev, n, seed=5)
    ref.program(np.full(n, 12e-6))
    gr = ref.read(86400.0)
    assert_same_distribution(g[stuck == 2], gr[ref.stuck == 2], "stuck at g_max: read noise, no drift")
    assert_same_distribution(g[stuck == 0], gr[ref.stuck == 0], "healthy cells")
    b.program(np.full(n, 3e-6))
    np.testing.assert_array_equal(np_(b.stuck), stuck)  # stuck for life


@pytest.mark.parametrize("card", ["pcm-nandakumar2019", "rram-wan2022", "rram-radar"])
def test_partial_programming_per_cell_ages_and_clock(card, tdev):
    """Cells programmed at different times read at their own ages (per-cell drift,
    relaxation and read-noise time factors); the clock moves as EmulatedBench's."""
    dev = analogmem.load_device(card)
    n = 2 * N_BLOCK
    mine = TorchBench(dev, n, seed=9, torch_device=tdev)
    ref = EmulatedBench(dev, n, seed=10)
    even = np.arange(0, n, 2)
    for b in (mine, ref):
        b.program(np.full(n, 0.8 * dev.g_max_S))
        b.wait(3600.0 if card == "rram-wan2022" else YEAR)
        b.program(np.full(even.size, 0.2 * dev.g_max_S),
                  addresses=torch.as_tensor(even, device=tdev) if b is mine else even)
    gm, gr = np_(mine.read(100.0)), ref.read(100.0)
    assert mine.time_s == ref.time_s
    np.testing.assert_array_equal(np_(mine.cell_state()["t_prog_s"]), ref.cell_state()["t_prog_s"])
    assert_same_distribution(gm[even], gr[even], "cells reprogrammed (100 s old)")
    assert_same_distribution(gm[1::2], gr[1::2], "cells programmed first (older)")
    odd = np.arange(1, n, 2)
    sub_m, sub_r = mine.read(addresses=odd), ref.read(addresses=odd)  # at the clock
    assert sub_m.shape == (odd.size,) and mine.time_s == ref.time_s
    assert_same_distribution(sub_m, sub_r, "addressed read at the clock")
    if dev.retention.enabled:
        assert mine.bake(1800.0, 393.15) == ref.bake(1800.0, 393.15)
        assert mine.time_s == ref.time_s
        assert_same_distribution(mine.read(), ref.read(), "after a bake")
    else:
        with pytest.raises(DeviceCardError, match="no \\[retention\\] model"):
            mine.bake(1800.0, 393.15)


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_result_and_thread_count_does_not_matter(tdev):
    dev = analogmem.load_device("rram-radar")
    g_t = np.random.default_rng(1).uniform(0, dev.g_max_S, 30_000)
    threads = torch.get_num_threads()
    runs = []
    try:
        for k in (1, 2, 2):
            torch.set_num_threads(k)
            b = TorchBench(dev, g_t.size, seed=7, torch_device=tdev)
            b.program(g_t)
            rep = b.program(g_t[:5000], addresses=np.arange(5000), verify=WriteVerify(max_pulses=4, tolerance_rel=0.02))
            runs.append([b.cell_state()["g_prog"], b.read(3600.0), rep.pulses, b.read(1e9)])
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            assert torch.equal(a, c)
    b = TorchBench(dev, g_t.size, seed=8, torch_device=tdev)
    b.program(g_t)
    assert not torch.equal(b.cell_state()["g_prog"], runs[0][0])
    # an int seed is SeedSequence(seed); a Generator gives a spawned child (as EmulatedBench)
    same = [TorchBench(dev, g_t.size, seed=s, torch_device=tdev) for s in (7, np.random.SeedSequence(7))]
    for s in same:
        s.program(g_t)
    assert torch.equal(same[0].cell_state()["g_prog"], same[1].cell_state()["g_prog"])
    TorchBench(dev, 10, seed=np.random.default_rng(7), torch_device=tdev)


# --------------------------------------------------------------------------- bad input
BAD_CALLS = [
    lambda b, t: b.program(np.full(10, 1e-6)),
    lambda b, t: b.program(np.full((5000, 1), 1e-6)),
    lambda b, t: b.program("abc"),
    lambda b, t: b.program(np.where(np.arange(5000) == 1234, np.nan, 1e-5)),
    lambda b, t: b.program(t(np.where(np.arange(5000) == 1234, np.inf, 1e-5))),
    lambda b, t: b.program(t(np.where(np.arange(5000) == 1234, 26e-6, 1e-5))),
    lambda b, t: b.program(np.where(np.arange(1000) == 234, -1e-6, 1e-5), addresses=np.arange(1000, 2000)),
    lambda b, t: b.program(t(np.full(10, 1e-6)).reshape(2, 5)),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=[0, 5000]),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=t(np.array([0, 5000]))),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=[-1, 3]),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=[3, 3]),
    lambda b, t: b.program(np.full(3, 1e-6), addresses=t(np.array([3, 1, 3]))),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=[0.5, 3]),
    lambda b, t: b.program(np.full(2, 1e-6), addresses=t(np.array([0.5, 3.0]))),
    lambda b, t: b.program(np.full(5000, 1e-6), verify={"max_pulses": 3}),
    lambda b, t: b.program(np.full(5000, 1e-6), verify=WriteVerify.card()),
    lambda b, t: b.read(-1.0),
    lambda b, t: b.read(np.nan),
    lambda b, t: b.read(3600.0, addresses=[7000]),
    lambda b, t: b.wait(np.inf),
    lambda b, t: b.bake(10.0, 300.0),
]


@pytest.mark.parametrize("call", range(len(BAD_CALLS)))
def test_bad_input_raises_what_emulated_bench_raises_and_changes_nothing(call, tdev):
    """Every bad call raises the exception (class and message) of the compiled
    EmulatedBench, before anything changes."""
    g = np.linspace(0, 25e-6, 5000)
    mine, ref = TorchBench("pcm-nandakumar2019", 5000, seed=3, torch_device=tdev), EmulatedBench(
        "pcm-nandakumar2019", 5000, seed=3)
    for b in (mine, ref):
        b.program(g)
        b.read(60.0)
    before, t_before = mine.cell_state(), mine.time_s
    with pytest.raises(Exception) as want:
        BAD_CALLS[call](ref, lambda a: a)
    with pytest.raises(type(want.value)) as got:
        BAD_CALLS[call](mine, lambda a: torch.as_tensor(a, device=tdev))
    assert isinstance(got.value, (analogmem.AnalogMemError, TypeError))
    assert str(got.value) == str(want.value)
    after = mine.cell_state()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert mine.time_s == t_before


def test_radar_card_verify_refuses_targets_outside_windows(tdev):
    dev = analogmem.load_device("rram-radar")
    mine, ref = TorchBench(dev, 3, seed=0, torch_device=tdev), EmulatedBench(dev, 3, seed=0)
    g = np.array([dev.write_verify.window_lo_S[3], 1e-4, 0.0])  # 1e-4 S lies between windows
    with pytest.raises(TargetRangeError) as want:
        ref.program(g, verify=WriteVerify.card())
    with pytest.raises(TargetRangeError) as got:
        mine.program(g, verify=WriteVerify.card())
    assert str(got.value) == str(want.value)
    with pytest.raises(DeviceCardError, match="write-verify needs a conductance window"):
        TorchBench("pcm-stanford", 4).program(np.full(4, 2.0), verify=WriteVerify())


def test_backend_wiring_and_constructor_errors():
    b = EmulatedBench("pcm-nandakumar2019", 8, seed=0, backend="torch")
    assert isinstance(b, TorchBench) and isinstance(b, analogmem.Bench) and b.torch_device == torch.device("cpu")
    assert isinstance(EmulatedBench("pcm-nandakumar2019", 8, seed=0), EmulatedBench)
    with pytest.raises(TypeError, match="torch_device"):  # a torch argument without backend="torch"
        EmulatedBench("pcm-nandakumar2019", 8, torch_device="cpu")
    with pytest.raises(ValueError, match="n_cells"):
        EmulatedBench("pcm-nandakumar2019", 0, backend="torch")
    with pytest.raises(ValueError, match="dtype"):
        TorchBench("pcm-nandakumar2019", 8, dtype="float16")
    with pytest.raises(ValueError, match="torch_device"):
        TorchBench("pcm-nandakumar2019", 8, torch_device="no-such-device")
    with pytest.raises(TypeError, match="seed"):
        TorchBench("pcm-nandakumar2019", 8, seed="abc")
    with pytest.raises(DeviceCardError):
        TorchBench("no-such-card", 8)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            EmulatedBench("pcm-nandakumar2019", 8, backend="torch", torch_device="cuda")
    code = "import sys, analogmem; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "import analogmem imported torch"


# --------------------------------------------------------------------------- storage on the device
DEVICE_ENCODERS = ["naive", "adaptive", "differential", "sign-magnitude", "sliced", "differential-mmse", "linear-mmse"]


#: every cell map, alone, repeated, and MMSE-decoded (name, cells per weight)
CELL_MAPS = [(n, c) for n in DEVICE_ENCODERS for c in (2, 4)] + [("sign-magnitude", 6), ("sliced", 6)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,cpw", CELL_MAPS)
def test_torch_encoders_equal_the_numpy_encoders(name, cpw, dtype, tdev):
    """The encoders' one implementation gives on a torch tensor (on its device, in its dtype)
    what it gives on the numpy array of the same values: side information (range fit,
    MMSE's prior histogram) exactly, targets and decoded weights to the dtype's rounding."""
    tdt = getattr(torch, dtype)
    w_t = torch.as_tensor(np.random.default_rng(2).laplace(0, 0.05, 70_001)).to(tdt)  # > 65,536: the tail fit
    w = w_t.numpy()
    enc = make_encoder(name, cpw)
    assert on_device(enc)
    ch = E.ReadChannel(analogmem.load_device("pcm-nandakumar2019"), 86400.0)
    w_t = w_t.to(tdev)
    side_np, side_t = enc.fit(w, ch), enc.fit(w_t, ch)
    assert side_t.keys() == side_np.keys()
    for k in side_np:
        np.testing.assert_array_equal(side_t[k], side_np[k], err_msg=k)
    x_np, x_t = enc.encode(w, side_np), enc.encode(w_t, side_np)
    assert torch.is_tensor(x_t) and x_t.dtype == tdt and x_t.device.type == torch.device(tdev).type
    # float32: the targets' rounding (Sliced's remainder carries the digits' rounding, times the base)
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np_(x_t), x_np, **tol)
    g_t = enc.encode_S(w_t, side_np, ch)
    assert torch.is_tensor(g_t)
    np.testing.assert_allclose(np_(g_t), enc.encode_S(w, side_np, ch), rtol=tol["rtol"], atol=tol["atol"] * ch.span_S)
    y_t = torch.as_tensor(np.clip(x_np + np.random.default_rng(3).normal(0, 0.03, x_np.size), 0, None)).to(tdt)
    y = y_t.numpy().astype(np.float64)
    dec_t = enc.decode(y_t.to(tdev), side_np, w.size, ch)
    assert torch.is_tensor(dec_t) and dec_t.device.type == torch.device(tdev).type
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(dec_t), enc.decode(y, side_np, w.size, ch), **tol)
    # from reads in siemens (the stores' path), with a drift gain (MMSE ignores it: its channel holds the drift)
    got = enc.decode_S(ch.to_S(y_t.to(tdev)), side_np, w.size, ch, 1.01, np.float32)
    assert torch.is_tensor(got) and got.dtype == torch.float32
    np.testing.assert_allclose(np_(got), enc.decode_S(ch.to_S(y), side_np, w.size, ch, 1.01, np.float32, table=None),
                               rtol=1e-5, atol=1e-6)
    # the naive decoder's gain and the finiteness check and drift scale, on the tensor
    if not isinstance(enc, E.MMSE):
        wd = torch.as_tensor(w[:100], dtype=torch.float64, device=tdev)
        np.testing.assert_array_equal(np_(enc._gain(wd, 0.3)), enc._gain(w[:100].astype(np.float64), 0.3))
    assert E.global_drift_scale(g_t.double(), 2e-5) == pytest.approx(
        E.global_drift_scale(enc.encode_S(w, side_np, ch), 2e-5), rel=1e-12 if dtype == "float64" else 1e-6)
    assert not on_device(E.DigitalECC())


def test_torch_encoders_edge_cases_equal_numpy(tdev):
    """The range fit's edge cases (all-zero, one weight, a zero percentile) and the check of
    non-finite weights give on tensors what they give on numpy arrays."""
    ch = E.ReadChannel(analogmem.load_device("rram-wan2022"), 3600.0)
    cases = [np.zeros(10), np.array([0.25]), np.r_[np.zeros(990), np.linspace(-1, 1, 10)],
             np.random.default_rng(4).normal(0, 1, 200_000)]
    for w in cases:
        for enc in (E.LinearMap(100.0), E.LinearMap(99.0), E.LinearMap("auto"), E.MMSE(E.DifferentialPair(99.9), 16)):
            got, want = enc.fit(torch.as_tensor(w, device=tdev), ch), enc.fit(w, ch)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{enc} {k} n={w.size}")
    bad = np.array([[1.0, 2.0], [np.inf, np.nan]])
    with pytest.raises(analogmem.StorageError) as want:
        E.check_finite("t", bad)
    with pytest.raises(analogmem.StorageError) as got:
        E.check_finite("t", torch.as_tensor(bad, device=tdev))
    assert str(got.value) == str(want.value)
    E.check_finite("ints", torch.arange(4, device=tdev))


def test_torch_store_runs_the_encoders_own_methods(monkeypatch):
    """torch_store has no cell-map math of its own: a TorchStore put/get and the torch
    backend of program_model call the encoders' methods with torch tensors."""
    assert not any(hasattr(torch_store, n) for n in ("torch_encode", "torch_decode", "torch_fit", "_cells",
                                                      "_naive_decode", "_mmse_decode", "_percentile_abs"))
    seen: list[tuple[str, str]] = []

    def spy(cls, meth):
        real = getattr(cls, meth)

        def wrapped(self, a, *args, **kw):
            seen.append((f"{cls.__name__}.{meth}", type(a).__module__.split(".")[0]))
            return real(self, a, *args, **kw)
        monkeypatch.setattr(cls, meth, wrapped)

    for cls, meth in [(E.DifferentialPair, "_encode"), (E.DifferentialPair, "_decode"), (E.LinearMap, "_encode"),
                      (E.LinearMap, "_decode"), (E.MMSE, "fit"), (E.MMSE, "decode"), (E.CellMap, "fit")]:
        spy(cls, meth)
    w = torch.randn(40, 50, dtype=torch.float64) * 0.05
    ts = TorchStore("pcm-nandakumar2019", 10 * w.numel(), seed=0)
    ts.put("d", w, make_encoder("differential", 2))
    ts.put("m", w, make_encoder("differential-mmse", 2))
    ts.put("n", w, make_encoder("naive", 2))
    out = ts.get_all(86400.0)
    assert all(torch.is_tensor(v) for v in out.values())
    on_tensors = {m for m, lib in seen if lib == "torch"}
    assert {"DifferentialPair._encode", "DifferentialPair._decode", "LinearMap._encode", "LinearMap._decode",
            "MMSE.fit", "MMSE.decode", "CellMap.fit"} <= on_tensors, sorted(set(seen))
    seen.clear()
    m = torch.nn.Linear(30, 20).double()
    am = analogmem.program_model(m, "pcm-nandakumar2019", seed=1, backend="torch", encoder="differential")
    dict(am.tensors_at(3600.0))
    assert ("DifferentialPair._decode", "torch") in seen, sorted(set(seen))


@pytest.mark.parametrize("name", ["naive", "adaptive", "differential", "differential-mmse", "sliced"])
def test_torch_store_decodes_like_the_numpy_store(name, tdev):
    """Weights go in as tensors and come back as tensors on the device (dtype and shape
    kept); the decoding errors ŵ − w are distributed as the numpy store's (PCM, 1 day)."""
    w = torch.as_tensor(np.random.default_rng(4).laplace(0, 0.05, (250, 200)), dtype=torch.float32)
    enc = make_encoder(name, 2)
    ts = TorchStore("pcm-nandakumar2019", w.numel() * 2, seed=1, torch_device=tdev)
    es = EmulatedStore("pcm-nandakumar2019", w.numel() * 2, seed=2)
    ts.put("w", w.to(tdev), enc)
    es.put("w", w.numpy(), enc)
    assert ts.usage() == es.usage()
    got = ts.get("w", 86400.0)
    assert torch.is_tensor(got) and got.device.type == torch.device(tdev).type
    assert got.dtype == torch.float32 and got.shape == w.shape
    want = es.get("w", 86400.0)
    assert_same_distribution(np_(got) - w.numpy(), want - w.numpy(), f"{name} decoding error")
    from_all = ts.get_all(86400.0)["w"]
    assert from_all.shape == w.shape and from_all.device == got.device


def test_torch_store_with_allocation_counts_and_digital_fallback(tdev):
    w = np.random.default_rng(5).normal(0, 0.1, 20_000)
    counts = np.random.default_rng(6).integers(0, 4, w.size)
    enc = make_encoder("differential", 2)
    ts = TorchStore("rram-wan2022", 200_000, seed=3, torch_device=tdev)
    es = EmulatedStore("rram-wan2022", 200_000, seed=4)
    ts.put("w", torch.as_tensor(w, device=tdev), enc, counts=counts)
    es.put("w", w, enc, counts=counts)
    assert ts.usage() == es.usage()
    got, want = np_(ts.get("w", 3600.0)), es.get("w", 3600.0)
    assert np.all(got[counts == 0] == 0.0)
    for r in (1, 2, 3):
        assert_same_distribution(got[counts == r] - w[counts == r], want[counts == r] - w[counts == r], f"r = {r}")
    # DigitalECC runs the numpy path (BCH on the CPU); the result still comes back as a tensor
    ecc = E.DigitalECC(bits=8, bits_per_cell=1, t=8)
    ts.put("d", torch.as_tensor(w[:2000], device=tdev), ecc)
    d = ts.get("d", 1.0)
    assert torch.is_tensor(d) and d.device.type == torch.device(tdev).type
    np.testing.assert_array_equal(np_(d), ecc.quantise(w[:2000], ts.entry("d").side))


def test_analog_path_does_not_go_through_numpy(monkeypatch):
    """On a TorchStore the naive/adaptive/differential(-mmse) paths move no tensor larger
    than the adaptive fit's 20,000-weight sample to the host."""
    moved: list[int] = []
    real_numpy, real_array = torch.Tensor.numpy, torch.Tensor.__array__

    def numpy(self, *a, **k):
        moved.append(self.numel())
        return real_numpy(self, *a, **k)

    def array(self, *a, **k):
        moved.append(self.numel())
        return real_array(self, *a, **k)

    w = torch.randn(300, 200) * 0.05  # 60,000 weights: more than the fit sample
    ts = TorchStore("pcm-nandakumar2019", 8 * w.numel(), seed=0)
    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    monkeypatch.setattr(torch.Tensor, "__array__", array)
    for i, name in enumerate(["naive", "adaptive", "differential", "differential-mmse"]):
        ts.put(f"w{i}", w, make_encoder(name, 2))
    out = ts.get_all(86400.0)
    assert all(torch.is_tensor(v) for v in out.values())
    assert max(moved, default=0) <= E.FIT_SAMPLE, sorted(moved)[-5:]


def test_store_model_and_load_model_keep_weights_on_the_device(tdev):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4)).to(tdev)
    with torch.no_grad():
        module[1].running_mean.normal_()
    store = TorchStore("pcm-nandakumar2019", 10_000, seed=1, torch_device=tdev)
    handle = store_model(module, store, make_encoder("differential", 2))
    loaded = load_model(handle, t_s=3600.0)
    dev_type = torch.device(tdev).type
    for (n, p), (_, q) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert q.device.type == dev_type and q.dtype == p.dtype and q.shape == p.shape
        if n in handle.digital:
            assert torch.equal(p, q), n
    err = np_(loaded[0].weight - module[0].weight).ravel()
    ref = EmulatedStore("pcm-nandakumar2019", 10_000, seed=2)
    ref_loaded = load_model(store_model(module.cpu() if dev_type == "cpu" else module.to("cpu"), ref,
                                        make_encoder("differential", 2)), t_s=3600.0)
    module.to(tdev)
    assert_same_distribution(err, np_(ref_loaded[0].weight - module[0].weight.cpu()).ravel(), "layer 0 error")
    on_cpu = load_model(handle, t_s=3600.0, device="cpu")
    assert all(v.device.type == "cpu" for v in on_cpu.state_dict().values())
    bad = torch.nn.Linear(4, 2).to(tdev)
    with torch.no_grad():
        bad.weight[1, 2] = float("nan")
    with pytest.raises(analogmem.StorageError, match=r"'weight' has a non-finite value nan at flat index 6"):
        store_model(bad, TorchStore("pcm-nandakumar2019", 100, seed=0, torch_device=tdev), make_encoder("naive", 1))
