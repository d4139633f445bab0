"""EmulatedBench behaviour: the protocol, time, consistency of drift, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import analogmem
from analogmem import AddressError, Bench, EmulatedBench, TargetRangeError
from analogmem.emulator.cells import parse_card

YEAR = 365 * 86400.0


@pytest.fixture
def pcm():
    bench = EmulatedBench("pcm-nandakumar2019", 5000, seed=3)
    bench.program(np.linspace(0, 25e-6, 5000))
    return bench


def test_emulated_bench_implements_the_protocol(pcm):
    assert isinstance(pcm, Bench)
    with EmulatedBench("rram-wan2022", 4, seed=0) as b:
        report = b.program(np.array([0, 10e-6, 20e-6, 40e-6]))
        assert report.n_cells == 4 and report.n_stuck == 0 and report.addresses is None
        assert b.read().shape == (4,)


def test_reads_are_in_siemens_and_finite_up_to_ten_years(pcm):
    for t in (0.0, 1.0, 3600.0, 86400.0, YEAR, 10 * YEAR):
        g = pcm.read(t)
        assert g.dtype == np.float64 and g.shape == (5000,)
        assert np.all(np.isfinite(g)) and np.all(g >= 0) and g.max() < 40e-6
    assert pcm.time_s == pytest.approx(10 * YEAR)


def test_drift_is_consistent_across_reads():
    """The same programmed cells drift consistently: per cell, read(1 y)/read(1 h) follows
    that cell's own drift exponent, up to read noise; reads at one time agree up to read
    noise only; the clock only moves forward."""
    n = 20000
    b = EmulatedBench("pcm-nandakumar2019", n, seed=9)
    b.program(np.full(n, 12.5e-6))
    nu = b.cell_state()["nu"]
    h1, y1 = b.read(3600.0), b.read(YEAR)
    expected = ((YEAR + 20) / (3600 + 20)) ** (-nu)
    ratio = y1 / h1
    # relative read noise is ~5-8 % per read: the ratio follows the per-cell drift closely
    assert np.corrcoef(ratio, expected)[0, 1] > 0.3
    assert abs(np.median(ratio / expected) - 1) < 0.01
    # two reads at the same time: same drifted value, independent read noise
    a, c = b.read(YEAR), b.read(YEAR)
    assert not np.array_equal(a, c)
    assert abs(np.mean(a) / np.mean(c) - 1) < 0.005
    # RRAM (no read noise): reading twice at one time gives identical values, and the
    # relaxation of each cell after programming is one latent scaled by the spread at t
    r = EmulatedBench("rram-wan2022", n, seed=9)
    g_t = np.full(n, 20e-6)
    r.program(g_t)
    g_p = r.cell_state()["g_prog"]
    d1 = r.read(1.0) - g_t  # reads in time order: no bench reads in the past
    z = [(r.read(t) - g_p) / r.device.sigma_relaxation_S(g_t, t) for t in (3600.0, 86400.0, 172800.0)]
    # rounding only: (g_p + s_t·z) − g_p recovers z to a few ulp of g_p/s_t ≈ 20/0.5 = 40 → ~1e-14
    np.testing.assert_allclose(z[0], z[1], rtol=1e-9)
    np.testing.assert_allclose(z[0], z[2], rtol=1e-9)
    np.testing.assert_array_equal(r.read(172800.0), r.read(172800.0))
    d2 = r.read(172800.0) - g_t
    rho = r.device.sigma_program_S(20e-6) / r.device.sigma_total_relaxation_S(20e-6, 172800.0)
    assert abs(np.corrcoef(d1, d2)[0, 1] - rho) < 5 * (1 - rho**2) / math.sqrt(n)


def test_wait_and_read_at_current_clock(pcm):
    t_prog_read = pcm.read(3600.0)
    pcm.wait(YEAR - 3600.0)
    later = pcm.read()  # at the clock: one year after programming
    assert pcm.time_s == pytest.approx(YEAR)
    assert np.mean(later[2500:]) < np.mean(t_prog_read[2500:])


def test_partial_programming_keeps_other_cells_and_their_age():
    n = 1000
    b = EmulatedBench("pcm-nandakumar2019", n, seed=1)
    b.program(np.full(n, 20e-6))
    before = b.cell_state()
    b.wait(YEAR)
    addr = np.arange(0, n, 2)
    rep = b.program(np.full(addr.size, 5e-6), addresses=addr)
    np.testing.assert_array_equal(rep.addresses, addr)
    after = b.cell_state()
    odd = np.arange(1, n, 2)
    for k in ("g_prog", "nu", "q_read"):
        np.testing.assert_array_equal(after[k][odd], before[k][odd])
    assert np.all(after["t_prog_s"][addr] == YEAR) and np.all(after["t_prog_s"][odd] == 0.0)
    g = b.read(0.0)  # right after the second programming: old cells are a year old
    assert np.mean(g[odd]) < 0.8 * 20e-6 and abs(np.mean(g[addr]) / 5e-6 - 1) < 0.05


def test_stuck_cells(card_text, tmp_path):
    text = card_text().replace("p_stuck_low = 0.0", "p_stuck_low = 0.02").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.01")
    dev = parse_card(text, "stuck.toml")
    n = 100_000
    b = EmulatedBench(dev, n, seed=4)
    frac_low, frac_high = np.mean(b.stuck == 1), np.mean(b.stuck == 2)
    assert abs(frac_low - 0.02) < 5 * math.sqrt(0.02 * 0.98 / n)
    assert abs(frac_high - 0.01) < 5 * math.sqrt(0.01 * 0.99 / n)
    rep = b.program(np.full(n, 12e-6))
    assert rep.n_stuck == int(np.count_nonzero(b.stuck))
    g = b.read(86400.0)
    assert np.all(g[b.stuck == 1] == 0.0)  # g_min = 0 S: no read noise on 0 S
    hi = g[b.stuck == 2]
    assert abs(np.mean(hi) / 25e-6 - 1) < 0.01  # at g_max, no drift, only read noise
    stuck_before = b.stuck.copy()
    b.program(np.full(n, 3e-6))
    np.testing.assert_array_equal(b.stuck, stuck_before)  # stuck for life


# ---------------------------------------------------------------- bad input, state unchanged
BAD_TARGETS = [
    (np.nan, "is not finite"),
    (np.inf, "is not finite"),
    (-1e-6, "outside the input range"),
    (26e-6, "outside the input range"),
]


@pytest.mark.parametrize("value, message", BAD_TARGETS)
@pytest.mark.parametrize("partial", [False, True])
def test_bad_targets_are_refused_and_state_is_unchanged(pcm, value, message, partial):
    before, t_before = pcm.cell_state(), pcm.time_s
    targets = np.full(5000, 10e-6)
    targets[1234] = value
    with pytest.raises(TargetRangeError, match=message) as info:
        if partial:
            pcm.program(targets[1000:2000], addresses=np.arange(1000, 2000))
        else:
            pcm.program(targets)
    assert "234]" in str(info.value)  # names the offending index
    after = pcm.cell_state()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert pcm.time_s == t_before


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda b: b.program(np.full(10, 1e-6)), TargetRangeError, "1-D array of 5000 values"),
        (lambda b: b.program(np.full((5000, 1), 1e-6)), TargetRangeError, "1-D array of 5000 values"),
        (lambda b: b.program("abc"), TargetRangeError, "numbers"),
        (lambda b: b.program(np.full(2, 1e-6), addresses=[0, 5000]), AddressError, r"addresses\[1\] = 5000"),
        (lambda b: b.program(np.full(2, 1e-6), addresses=[-1, 3]), AddressError, "outside"),
        (lambda b: b.program(np.full(2, 1e-6), addresses=[3, 3]), AddressError, "duplicates"),
        (lambda b: b.program(np.full(2, 1e-6), addresses=[0.5, 3]), AddressError, "integers"),
        (lambda b: b.read(-1.0), TargetRangeError, "t_s must be finite, >= 0 s"),
        (lambda b: b.read(np.nan), TargetRangeError, "t_s must be finite"),
        (lambda b: b.wait(np.inf), TargetRangeError, "seconds must be finite"),
        (lambda b: b.read(addresses=[7000]), AddressError, "outside"),
    ],
)
def test_bad_calls_raise_specific_errors_and_change_nothing(pcm, call, error, message):
    before, t_before = pcm.cell_state(), pcm.time_s
    with pytest.raises(error, match=message):
        call(pcm)
    for k, v in pcm.cell_state().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert pcm.time_s == t_before


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="n_cells"):
        EmulatedBench("pcm-nandakumar2019", 0)
    with pytest.raises(ValueError, match="backend"):
        EmulatedBench("pcm-nandakumar2019", 10, backend="fortran")
    with pytest.raises(ValueError, match="n_threads"):
        EmulatedBench("pcm-nandakumar2019", 10, n_threads=0)
    with pytest.raises(TypeError, match="seed"):
        EmulatedBench("pcm-nandakumar2019", 10, seed="abc")
    with pytest.raises(analogmem.DeviceCardError):
        EmulatedBench("no-such-card", 10)


# ---------------------------------------------------------------- program-and-verify
def test_write_verify_statistics_match_the_geometric_law():
    """RRAM card (no read noise): each pulse re-draws g_P ~ N(g_T, σ_P(x)); a pulse
    succeeds with p = 2Φ(h/σ_P) − 1, so pulses ~ Geometric(p) truncated at max_pulses and
    every successful cell ends inside its window."""
    from scipy import stats

    n, x, rel, m = 100_000, 0.5, 0.02, 6
    dev = analogmem.load_device("rram-wan2022")
    g_t = x * dev.g_max_S
    b = EmulatedBench(dev, n, seed=2)
    rep = b.program(np.full(n, g_t), verify=analogmem.WriteVerify(max_pulses=m, tolerance_rel=rel))
    sigma = float(dev.sigma_program_S(g_t))
    p = 2 * stats.norm.cdf(rel * g_t / sigma) - 1
    expect_success = 1 - (1 - p) ** m
    assert abs(rep.success.mean() - expect_success) <= 5 * math.sqrt(expect_success * (1 - expect_success) / n)
    k = np.arange(1, m + 1)
    pmf = np.where(k < m, p * (1 - p) ** (k - 1), (1 - p) ** (m - 1))
    observed = np.bincount(rep.pulses, minlength=m + 1)[1:]
    assert stats.chisquare(observed, pmf * n).pvalue > 1e-3
    g_p = b.cell_state()["g_prog"]
    assert np.all(np.abs(g_p[rep.success] - g_t) <= rel * g_t * (1 + 1e-12))


def test_write_verify_bad_settings_and_voltage_cards():
    with pytest.raises(ValueError, match="max_pulses"):
        analogmem.WriteVerify(max_pulses=0)
    with pytest.raises(ValueError, match="needs a window"):
        analogmem.WriteVerify(tolerance_rel=0.0)
    b = EmulatedBench("pcm-stanford", 10, seed=0)
    with pytest.raises(analogmem.DeviceCardError, match="write-verify needs a conductance window"):
        b.program(np.full(10, 2.0), verify=analogmem.WriteVerify())
    with pytest.raises(TypeError, match="WriteVerify"):
        EmulatedBench("rram-wan2022", 10).program(np.full(10, 1e-5), verify={"max_pulses": 3})


# ---------------------------------------------------------------- lean, lazy state
def test_a_bench_of_1e8_cells_is_made_without_touching_per_cell_memory():
    """Construction allocates nothing per cell: numpy reports every array it allocates to
    tracemalloc, so the peak traced memory while making a 10⁸-cell bench (which would need
    1.2 GB of float32 state) stays below 1 MB, and the bench holds no state until programmed."""
    import tracemalloc

    for dtype in ("float64", "float32"):
        tracemalloc.start()
        try:
            b = EmulatedBench("pcm-nandakumar2019", 100_000_000, seed=0, dtype=dtype)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, f"constructing a 1e8-cell bench traced {peak} bytes"
        assert b.state_nbytes == 0
        assert b.bytes_per_cell * b.n_cells == {"float64": 2_400_000_000, "float32": 1_200_000_000}[dtype]


@pytest.mark.parametrize("device, keys", [
    ("pcm-nandakumar2019", ("g_prog", "nu", "q_read")),
    ("rram-wan2022", ("g_eff", "g_prog", "z_relax")),
    ("pcm-stanford", ("g_prog",)),
    ("rram-radar", ("g_eff", "g_prog", "z_relax")),
])
def test_state_holds_only_the_arrays_the_card_uses(device, keys):
    for dtype, size in (("float64", 8), ("float32", 4)):
        b = EmulatedBench(device, 1000, seed=0, dtype=dtype)
        assert b.bytes_per_cell == len(keys) * size
        b.program(np.full(1000, b.device.input_range[0]))
        state = b.cell_state()
        assert tuple(k for k in state if k not in ("t_prog_s", "stuck")) == keys
        assert all(state[k].dtype == np.dtype(dtype) for k in keys)
        assert b.state_nbytes == 1000 * len(keys) * size
        assert b.read(1.0).dtype == np.dtype(dtype)


def test_unprogrammed_cells_read_at_g_min_and_materialise_on_partial_program():
    b = EmulatedBench("rram-wan2022", 1000, seed=0)
    assert b.state_nbytes == 0
    np.testing.assert_array_equal(b.read(1.0), np.zeros(1000))  # g_min = 0 S, never programmed
    assert b.state_nbytes == 0  # reading did not allocate the state
    b.program(np.full(10, 20e-6), addresses=np.arange(10))
    state = b.cell_state()
    assert np.all(state["g_prog"][10:] == 0.0) and np.all(state["g_prog"][:10] > 0)
    assert b.state_nbytes == 1000 * b.bytes_per_cell + 1000 * 8  # + per-cell programming times


def test_stuck_faults_are_a_function_of_the_seed_and_survive_restore(card_text):
    text = card_text().replace("p_stuck_low = 0.0", "p_stuck_low = 0.05").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.05")
    dev = parse_card(text, "stuck.toml")
    n = 20_000
    a, a2, other = EmulatedBench(dev, n, seed=1), EmulatedBench(dev, n, seed=1), EmulatedBench(dev, n, seed=2)
    np.testing.assert_array_equal(a.stuck, a2.stuck)
    assert not np.array_equal(a.stuck, other.stuck)
    addr = np.array([5, 17, 19_999])
    rep = a.program(np.full(3, 12e-6), addresses=addr)
    np.testing.assert_array_equal(rep.stuck, a.stuck[addr])
    a.program(np.full(n, 12e-6))
    # a chip restored into a bench with another fault key keeps its own stuck cells for life
    other.restore_state(a.cell_state(), time_s=a.time_s, seed=np.random.SeedSequence(9))
    np.testing.assert_array_equal(other.stuck, a.stuck)
    rep = other.program(np.full(n, 3e-6))
    np.testing.assert_array_equal(rep.stuck, a.stuck)
    g = other.cell_state()["g_prog"]
    assert np.all(g[a.stuck == 2] == dev.g_max_S) and np.all(g[a.stuck == 1] == dev.g_min_S)


def test_restore_state_round_trip_in_float32():
    n = 3000
    a = EmulatedBench("pcm-nandakumar2019", n, seed=3, dtype="float32")
    a.program(np.linspace(0, 25e-6, n))
    a.wait(100.0)
    a.program(np.full(10, 1e-6), addresses=np.arange(10))
    saved, t, seed = a.cell_state(), a.time_s, np.random.SeedSequence(a.seed_sequence.entropy,
                                                                         n_children_spawned=a.seed_sequence.n_children_spawned)
    b = EmulatedBench("pcm-nandakumar2019", n, seed=99, dtype="float32")
    b.restore_state(saved, time_s=t, seed=seed)
    for k, v in b.cell_state().items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    np.testing.assert_array_equal(b.read(3600.0), a.read(3600.0))


def test_bad_dtype_and_missing_restore_keys():
    with pytest.raises(ValueError, match="dtype"):
        EmulatedBench("pcm-nandakumar2019", 10, dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        EmulatedBench("pcm-nandakumar2019", 10, dtype="banana")
    b = EmulatedBench("pcm-nandakumar2019", 10, seed=0)
    state = b.cell_state()
    del state["nu"]
    with pytest.raises(analogmem.StorageError, match="lacks"):
        b.restore_state(state, time_s=0.0, seed=np.random.SeedSequence(0))
    with pytest.raises(ValueError, match="chunk_cells"):
        b.read_chunks(1.0, chunk_cells=0)


def test_freed_state_is_reused_by_the_next_bench_without_changing_results():
    """The state pool hands a garbage-collected bench's arrays to the next bench of the
    same size (no fresh pages to zero); every cell is rewritten before it is read, so the
    results equal those of a bench on fresh memory, and release_state_pool frees them."""
    import gc

    from analogmem.emulator import chipstate

    n = 100_000
    targets = np.linspace(0, 25e-6, n)
    first = EmulatedBench("pcm-nandakumar2019", n, seed=5, dtype="float32")
    first.program(targets)
    addresses = {first._cells.arrays[k].ctypes.data for k in ("g_prog", "nu", "q_read")}
    del first
    gc.collect()
    reused = EmulatedBench("pcm-nandakumar2019", n, seed=6, dtype="float32")
    reused.program(np.full(10, 1e-6), addresses=np.arange(10))  # a partial program first: all cells written
    reused.program(targets)
    assert {reused._cells.arrays[k].ctypes.data for k in ("g_prog", "nu", "q_read")} == addresses
    limit = chipstate.STATE_POOL.limit_bytes
    chipstate.STATE_POOL.limit_bytes = 0
    try:
        fresh = EmulatedBench("pcm-nandakumar2019", n, seed=6, dtype="float32")
        fresh.program(np.full(10, 1e-6), addresses=np.arange(10))
        fresh.program(targets)
        for k, v in reused.cell_state().items():
            np.testing.assert_array_equal(v, fresh.cell_state()[k], err_msg=k)
        np.testing.assert_array_equal(reused.read(60.0), fresh.read(60.0))
    finally:
        chipstate.STATE_POOL.limit_bytes = limit
    del reused, fresh
    gc.collect()
    assert chipstate.release_state_pool() > 0 and chipstate.release_state_pool() == 0
