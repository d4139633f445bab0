"""The compiled kernels: really in use, equal to the numpy oracle, deterministic, and their
random stream and elementary functions checked against published values."""

from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

import analogmem
from analogmem import EmulatedBench
from analogmem.emulator import _kernels, _streams, _testing
from analogmem.emulator._testing import kernel_params as _kernel_params
from analogmem.emulator.chipstate import STATE_KEYS, state_keys

DEVICES = ["pcm-nandakumar2019", "rram-wan2022", "pcm-stanford", "rram-radar", "pcm-hermes2023", "pcm-hermes2023-1dev",
           "rram-cmo-hfox", "rram-cmo-hfox-0.2pct"]

# Random123 known-answer vectors for Philox4x32-10 (tests/kat_vectors of the Random123
# distribution, D. E. Shaw Research): counter words, key words, output words.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def assert_close_to_oracle(fast: dict, slow: dict, device) -> None:
    """Kernel vs numpy oracle (float64 state): agreement to 1e-12 relative (plus 1e-12 of
    the card's g_max for conductances, where g_T + σz cancels to near zero; 1e-12 absolute
    for dimensionless values). The two use different elementary functions (~1 ulp apart),
    nothing else."""
    for key, value in fast.items():
        scale = device.g_max_S if key in ("g_prog", "g_eff", "read") and device.input == "conductance" else 1.0
        np.testing.assert_allclose(value, slow[key], rtol=1e-12, atol=1e-12 * scale, err_msg=key)


def test_installed_package_runs_compiled_kernels():
    info = analogmem.kernels_info()
    assert info["path"].endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), info
    # Cython functions, not Python ones: no silent fallback
    assert type(_kernels.program).__name__ == "cython_function_or_method"
    assert type(_kernels.read).__name__ == "cython_function_or_method"
    bench = EmulatedBench("pcm-nandakumar2019", 10, seed=0)
    assert bench.backend == "cython"


def test_kernels_are_multithreaded():
    assert _kernels.OPENMP, "kernels were built without OpenMP on a compiler that has it"
    assert _testing.threads_used(1) == 1
    assert _testing.threads_used(2) == 2


# ---------------------------------------------------------------- the random stream
@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_matches_random123_known_answers(counter, key, expected):
    assert _testing.philox4x32(*counter, *key) == expected  # the C kernels
    words = _streams.philox4x32(*(np.array([c], dtype=np.uint64) for c in counter), *key)  # the numpy twin
    assert tuple(int(w[0]) for w in words) == expected


def test_stream_twins_agree():
    """The kernels' draws and the numpy twin's: raw bits identical; uniforms identical;
    normals (Box–Muller, each side with its own log/sin/cos) within a few ulp; the read
    stream pairs cells 2j, 2j+1 on one Box–Muller pair."""
    key = (0x12345678, 0x9ABCDEF0, 0x0F1E2D3C)
    n, d = 5001, 5
    bits = _testing.draws(key, n, d, "bits")
    for j in range(d):
        np.testing.assert_array_equal(bits[:, j], _streams.draw_bits(key, np.arange(n), j))
    np.testing.assert_array_equal(_testing.draws(key, n, d, "uniform"), _streams.uniform(bits))
    np.testing.assert_allclose(_testing.draws(key, n, d, "normal"), _streams.normals(key, n, d), rtol=0, atol=4e-15)
    np.testing.assert_allclose(_testing.draws(key, n, 1, "read_normal")[:, 0], _streams.read_normals(key, n),
                               rtol=0, atol=4e-15)
    pairs = _streams.box_muller(_streams.draw_bits(key, np.arange(100), 0), _streams.draw_bits(key, np.arange(100), 1))
    r = _streams.read_normals(key, 200)
    np.testing.assert_array_equal(r[0::2], pairs[0])
    np.testing.assert_array_equal(r[1::2], pairs[1])


def test_elementary_functions_are_accurate_to_an_ulp():
    """The kernels' own log and exp (fdlibm's algorithms, branch-free) and sin/cos of 2πu
    against numpy, over the arguments the model uses and far beyond."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 200_000)), rng.uniform(0.5, 2.0, 200_000),
                        rng.uniform(1e-12, 2e-12, 1000), [2.0**-52, 1.0, 2.0, 1e300]])
    got, ref = _testing.elementary("log", x), np.log(x)
    assert np.max(np.abs(got - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))) <= 1.0
    y = np.concatenate([rng.uniform(-708, 709, 200_000), rng.uniform(-1, 1, 200_000), [0.0, -0.0, 1e-300]])
    got, ref = _testing.elementary("exp", y), np.exp(y)
    assert np.max(np.abs(got - ref) / np.spacing(ref)) <= 1.0
    u = rng.uniform(0, 1, 200_000)
    for name, fn in (("sin2pi", np.sin), ("cos2pi", np.cos)):
        np.testing.assert_allclose(_testing.elementary(name, u), fn(2 * np.pi * u), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(_testing.elementary("sin2pi", np.array([0.25, 0.5, 0.75])), [1.0, 0.0, -1.0])
    # float32 versions (float32 benches): within 1.5 float32 ulp of the exact value of the float32 argument
    xf = x[(x > 1e-37) & (x < 1e37)].astype(np.float32).astype(np.float64)
    got, ref = _testing.elementary("logf", xf), np.log(xf)
    assert np.max(np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)) <= 1.0
    yf = y[(y > -87) & (y < 88)].astype(np.float32).astype(np.float64)
    got, ref = _testing.elementary("expf", yf), np.exp(yf)
    assert np.max(np.abs(got - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)) <= 1.5
    uf = u.astype(np.float32).astype(np.float64)
    for name, fn in (("sin2pif", np.sin), ("cos2pif", np.cos)):
        np.testing.assert_allclose(_testing.elementary(name, uf), fn(2 * np.pi * uf), rtol=0, atol=2e-7)


# ---------------------------------------------------------------- kernels vs oracle
@pytest.mark.parametrize("device", DEVICES)
def test_kernels_equal_numpy_reference(device):
    """Same stream, same use of each draw: the kernels and the numpy oracle agree (see
    :func:`assert_close_to_oracle`), for a full program, partial reprogramming, per-cell
    ages, reads of a subset. (float32 benches compute in float32 with 32-bit draws: they
    are held to the model by the distribution tests of tests/test_statistics.py.)"""
    n = 150_001  # several work chunks, the last one partial
    dev = analogmem.load_device(device)
    rng = np.random.default_rng(3)
    targets = rng.uniform(*dev.input_range, n)
    fast = EmulatedBench(dev, n, seed=42)
    slow = EmulatedBench(dev, n, seed=42, backend="numpy")
    for b in (fast, slow):
        b.program(targets)
    assert set(fast.cell_state()) == set(state_keys(dev)) | {"t_prog_s", "stuck"}
    assert_close_to_oracle(fast.cell_state(), slow.cell_state(), dev)
    assert_close_to_oracle({"read": fast.read(3600.0)}, {"read": slow.read(3600.0)}, dev)
    addr = rng.choice(n, 5000, replace=False)
    for b in (fast, slow):
        b.wait(7200.0)
        b.program(dev.input_range[0] + (targets[addr] - dev.input_range[0]) * 0.5, addresses=addr)
    assert_close_to_oracle({"read": fast.read(10.0, addresses=addr)}, {"read": slow.read(10.0, addresses=addr)}, dev)
    assert_close_to_oracle({"read": fast.read(86400.0)}, {"read": slow.read(86400.0)}, dev)


def _general_vs_fast(device: str, dtype: str) -> None:
    dev = analogmem.load_device(device)
    params = _kernel_params(dev)  # no fault key: no stuck-at faults
    n = 70_001
    rng = np.random.default_rng(11)
    g = rng.uniform(*dev.input_range, n)
    stuck = rng.choice(np.array([0, 0, 0, 1, 2], dtype=np.int8), n)
    key = (7, 8, 9)
    keys = state_keys(dev)
    states = []
    for general in (False, True):
        st = tuple(np.empty(n, dtype=dtype) if k in keys else None for k in STATE_KEYS)
        _kernels.program(params, key, g, stuck, st, 2, first=12345, general=general)
        states.append(st)
    if dtype == "float64":  # float32 programs of these cards have only the vectorised path
        for a, b in zip(*states):
            if a is not None:
                np.testing.assert_array_equal(a, b)
    reads = []
    for general in (False, True):
        out = np.empty(n, dtype=dtype)
        _kernels.read(params, (1, 2, 3), states[0], np.array([86400.0]), out, 2, first=77, general=general)
        reads.append(out)
    np.testing.assert_array_equal(reads[0], reads[1])


@pytest.mark.parametrize("device", ["pcm-nandakumar2019", "rram-wan2022", "pcm-hermes2023", "rram-cmo-hfox"])
def test_vectorised_path_equals_the_cell_by_cell_path_bit_for_bit(device):
    """The vectorised block kernels (common cards, one age) and the one-cell-at-a-time
    kernels (every path) call the same model functions in the same order: identical bits,
    stuck cells included, at any op-local offset (programs in float64, reads in float64
    and float32)."""
    for dtype in ("float64", "float32"):
        _general_vs_fast(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_identical_whatever_the_thread_count(device):
    n = 300_000
    dev = analogmem.load_device(device)
    targets = np.random.default_rng(1).uniform(*dev.input_range, n)
    runs = []
    for threads in (1, 2, 2):
        b = EmulatedBench(dev, n, seed=7, n_threads=threads)
        b.program(targets)
        runs.append((b.cell_state()["g_prog"], b.read(3600.0), b.read(3600.0)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    # a second read draws fresh read noise (PCM); RRAM has no read noise: reads repeat exactly
    if dev.read_noise.enabled:
        assert not np.array_equal(runs[0][1], runs[0][2])
    else:
        np.testing.assert_array_equal(runs[0][1], runs[0][2])


def test_read_in_chunks_equals_one_read():
    """Counter-based draws: reading in chunks of any size (odd ones split a cell pair of
    the read stream) gives exactly the one-call read."""
    n = 100_003
    dev = analogmem.load_device("pcm-nandakumar2019")
    targets = np.random.default_rng(2).uniform(0, dev.g_max_S, n)
    a, b = EmulatedBench(dev, n, seed=5), EmulatedBench(dev, n, seed=5)
    a.program(targets)
    b.program(targets)
    whole = a.read(86400.0)
    pieces = list(b.read_chunks(86400.0, chunk_cells=9_999))
    assert [lo for lo, _ in pieces] == list(range(0, n, 9_999))
    np.testing.assert_array_equal(np.concatenate([v for _, v in pieces]), whole)
    np.testing.assert_array_equal(a.read(), b.read())  # the random state moved alike


def test_different_seeds_differ_and_generators_are_accepted():
    n = 1000
    t = np.full(n, 10e-6)
    reads = []
    for seed in (1, 2, np.random.default_rng(1), np.random.SeedSequence(1)):
        b = EmulatedBench("pcm-nandakumar2019", n, seed=seed)
        b.program(t)
        reads.append(b.read(60.0))
    assert not np.array_equal(reads[0], reads[1])
    np.testing.assert_array_equal(reads[0], reads[3])  # int seed == SeedSequence(seed)
    assert not np.array_equal(reads[0], reads[2])  # a Generator gives a spawned child stream


@pytest.mark.parametrize("device", ["pcm-nandakumar2019", "rram-wan2022", "pcm-hermes2023", "rram-cmo-hfox"])
def test_write_verify_kernel_equals_reference(device, card_text):
    """Program-and-verify draws a variable number of numbers per cell; the kernels and the
    reference (one numpy step per pulse) still agree, stuck cells included."""
    text = card_text(device).replace("p_stuck_low = 0.0", "p_stuck_low = 0.01").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.01")
    from analogmem.emulator.cells import parse_card

    dev = parse_card(text, device)
    n = 70_000  # several work chunks
    targets = np.random.default_rng(4).uniform(max(0.1 * dev.g_max_S, dev.g_min_S), dev.g_max_S, n)
    vf = analogmem.WriteVerify(max_pulses=8, tolerance_rel=0.03, tolerance_S=1e-8)
    fast = EmulatedBench(dev, n, seed=9, n_threads=2)
    slow = EmulatedBench(dev, n, seed=9, backend="numpy")
    np.testing.assert_array_equal(fast.stuck, slow.stuck)  # the C and numpy fault maps
    assert 0.015 < np.mean(fast.stuck != 0) < 0.025
    rf, rs = fast.program(targets, verify=vf), slow.program(targets, verify=vf)
    np.testing.assert_array_equal(rf.pulses, rs.pulses)
    np.testing.assert_array_equal(rf.success, rs.success)
    if not dev.read_noise.enabled:  # a stuck cell passes verify only if its stuck value is in the window
        lo, hi = vf.window(targets)
        stuck_value = np.where(fast.stuck == 1, dev.g_min_S, dev.g_max_S)
        inside = (stuck_value >= lo) & (stuck_value <= hi)
        np.testing.assert_array_equal(rf.success[fast.stuck != 0], inside[fast.stuck != 0])
    assert_close_to_oracle(fast.cell_state(), slow.cell_state(), dev)
    one = EmulatedBench(dev, n, seed=9, n_threads=1)
    np.testing.assert_array_equal(one.program(targets, verify=vf).pulses, rf.pulses)


def test_kernel_params_reject_oversized_tables(card_text):
    from analogmem.emulator.cells import parse_card
    from analogmem.errors import DeviceCardError

    text = card_text().replace("coefficients_uS = [0.26348, 1.9650, -1.1731]",
                               "coefficients_uS = [0.3, 0, 0, 0, 0, 0, 0, 0, 0, 0]")
    with pytest.raises(DeviceCardError, match="at most 8 coefficients"):
        _kernel_params(parse_card(text, "big.toml"))


def test_kernels_refuse_state_arrays_that_do_not_fit_the_card():
    dev = analogmem.load_device("pcm-nandakumar2019")
    params = _kernel_params(dev)
    n = 10
    g = np.full(n, 1e-5)
    ok = tuple(np.empty(n) if k in state_keys(dev) else None for k in STATE_KEYS)
    with pytest.raises(ValueError, match="nu is missing"):
        _kernels.program(params, (1, 2, 3), g, None, (None, np.empty(n), None, None, np.empty(n)), 1)
    with pytest.raises(ValueError, match="not used by this card"):
        _kernels.program(params, (1, 2, 3), g, None, (np.empty(n),) + ok[1:], 1)
    with pytest.raises(ValueError, match="all be float64 or all float32"):
        _kernels.program(params, (1, 2, 3), g, None, (None, np.empty(n), np.empty(n, np.float32), None,
                                                      np.empty(n)), 1)
    with pytest.raises(ValueError, match="of 10 values"):
        _kernels.program(params, (1, 2, 3), g, None, (None, np.empty(n), np.empty(n), None, np.empty(9)), 1)
