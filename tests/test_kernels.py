"""The compiled kernels: really in use, equal to the numpy oracle, deterministic."""

from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

import analogmem
from analogmem import EmulatedBench
from analogmem.emulator import _kernels
from analogmem.emulator.bench import _kernel_params

DEVICES = ["pcm-nandakumar2019", "rram-wan2022", "pcm-stanford"]


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
    assert _kernels.threads_used(1) == 1
    assert _kernels.threads_used(2) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_equal_numpy_reference(device):
    """Same streams, same order of draws: the kernels and the numpy oracle agree to
    floating-point rounding, for a full program, partial reprogramming, per-cell ages."""
    n = 150_001  # several chunks, the last one partial
    dev = analogmem.load_device(device)
    rng = np.random.default_rng(3)
    targets = rng.uniform(*dev.input_range, n)
    fast = EmulatedBench(dev, n, seed=42)
    slow = EmulatedBench(dev, n, seed=42, backend="numpy")
    for b in (fast, slow):
        b.program(targets)
    for key, value in fast.cell_state().items():
        np.testing.assert_allclose(value, slow.cell_state()[key], rtol=1e-12, atol=1e-24, err_msg=key)
    np.testing.assert_allclose(fast.read(3600.0), slow.read(3600.0), rtol=1e-12, atol=1e-24)
    addr = rng.choice(n, 5000, replace=False)
    for b in (fast, slow):
        b.wait(7200.0)
        b.program(dev.input_range[0] + (targets[addr] - dev.input_range[0]) * 0.5, addresses=addr)
    np.testing.assert_allclose(fast.read(10.0, addresses=addr), slow.read(10.0, addresses=addr), rtol=1e-12, atol=1e-24)
    np.testing.assert_allclose(fast.read(86400.0), slow.read(86400.0), rtol=1e-12, atol=1e-24)


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


@pytest.mark.parametrize("device", ["pcm-nandakumar2019", "rram-wan2022"])
def test_write_verify_kernel_equals_reference(device, card_text):
    """Program-and-verify draws a variable number of numbers per cell; the kernels and the
    cell-by-cell reference still agree exactly, stuck cells included."""
    text = card_text(device).replace("p_stuck_low = 0.0", "p_stuck_low = 0.01").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.01")
    from analogmem.emulator.cells import parse_card

    dev = parse_card(text, device)
    n = 70_000  # two chunks
    targets = np.random.default_rng(4).uniform(0.1 * dev.g_max_S, dev.g_max_S, n)
    vf = analogmem.WriteVerify(max_pulses=8, tolerance_rel=0.03, tolerance_S=1e-8)
    fast = EmulatedBench(dev, n, seed=9, n_threads=2)
    slow = EmulatedBench(dev, n, seed=9, backend="numpy")
    rf, rs = fast.program(targets, verify=vf), slow.program(targets, verify=vf)
    np.testing.assert_array_equal(rf.pulses, rs.pulses)
    np.testing.assert_array_equal(rf.success, rs.success)
    if not dev.read_noise.enabled:  # a stuck cell passes verify only if its stuck value is in the window
        lo, hi = vf.window(targets)
        stuck_value = np.where(fast.stuck == 1, dev.g_min_S, dev.g_max_S)
        inside = (stuck_value >= lo) & (stuck_value <= hi)
        np.testing.assert_array_equal(rf.success[fast.stuck != 0], inside[fast.stuck != 0])
    for key, value in fast.cell_state().items():
        np.testing.assert_allclose(value, slow.cell_state()[key], rtol=1e-12, atol=1e-24, err_msg=key)
    one = EmulatedBench(dev, n, seed=9, n_threads=1)
    np.testing.assert_array_equal(one.program(targets, verify=vf).pulses, rf.pulses)


def test_kernel_params_reject_oversized_tables(card_text):
    from analogmem.emulator.cells import parse_card
    from analogmem.errors import DeviceCardError

    text = card_text().replace("coefficients_uS = [0.26348, 1.9650, -1.1731]",
                               "coefficients_uS = [0.3, 0, 0, 0, 0, 0, 0, 0, 0, 0]")
    with pytest.raises(DeviceCardError, match="at most 8 coefficients"):
        _kernel_params(parse_card(text, "big.toml"))
