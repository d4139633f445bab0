"""The backend factory (analogmem.emulator.make_bench) and the kernels' parameter object
(packed once per bench, not per call)."""

import numpy as np
import pytest

import analogmem
from analogmem.emulator import EmulatedBench, TorchBench, make_bench
from analogmem.emulator import _kernels
from analogmem.emulator.card_params import card_params
from analogmem.errors import SettingError


def test_make_bench_picks_the_class_by_backend():
    k = make_bench("pcm-nandakumar2019", 16, seed=3)
    assert type(k) is EmulatedBench and k.backend == "cython"
    assert make_bench("pcm-nandakumar2019", 16, seed=3, backend="cython").backend == "cython"
    assert make_bench("pcm-nandakumar2019", 16, seed=3, backend="numpy").backend == "numpy"
    t = make_bench("pcm-nandakumar2019", 16, seed=3, backend="torch", dtype="float32")
    assert isinstance(t, TorchBench) and isinstance(t, analogmem.Bench)
    # the factory is the constructor: the same seed gives the same cells
    g = np.linspace(2e-6, 2e-5, 16)
    k.program(g)
    direct = EmulatedBench("pcm-nandakumar2019", 16, seed=3)
    direct.program(g)
    np.testing.assert_array_equal(k.read(60.0), direct.read(60.0))
    with pytest.raises(SettingError, match="backend must be one of"):
        make_bench("pcm-nandakumar2019", 16, backend="jax")


def test_emulated_bench_backend_torch_still_works_but_is_deprecated():
    with pytest.warns(DeprecationWarning, match="make_bench"):
        b = EmulatedBench("pcm-nandakumar2019", 8, seed=0, backend="torch")
    assert isinstance(b, TorchBench) and not isinstance(b, EmulatedBench)


def test_kernel_params_are_packed_once_per_bench():
    b = EmulatedBench("rram-wan2022", 64, seed=1)
    p = b._params
    assert isinstance(p, _kernels.KernelParams)
    b.program(np.full(64, 2e-5))
    b.read(10.0)
    assert b._params is p  # nothing re-packed per call
    assert p.card.state_keys == card_params(b.device).state_keys == b._keys
    with pytest.raises(TypeError):
        _kernels.read({"g_min": 0.0}, (1, 2, 3), (None, np.empty(1), None, None, None), np.array([1.0]),
                      np.empty(1), 1)
