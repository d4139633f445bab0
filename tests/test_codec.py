"""The storage codec's fit passes (analogmem.storage._codec.histogram, abs_tail) against the
numpy functions they stand in for: the MMSE prior histogram and the exact range percentiles
are promised bit-identical to numpy's, so these compare with equality."""

import numpy as np
import pytest

from analogmem.storage import _codec
from analogmem.storage import encoders as E


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 10, 70_000, 1_000_003])
def test_histogram_is_numpys(dtype, n):
    rng = np.random.default_rng(n)
    w = (rng.standard_t(3, n) * 0.05).astype(dtype)
    if n > 10:  # the extremes and values on inner edges
        w[:3] = [0.0, np.abs(w).max(), -np.abs(w).max()]
    wmax = float(np.abs(w).max()) or 1.0
    for bins in (2, 7, 64, 251):
        ref, edges = np.histogram(w, bins=bins, range=(-wmax, wmax))
        mine = np.linspace(-wmax, wmax, bins + 1, dtype=w.dtype)
        assert np.array_equal(edges, mine)
        assert np.array_equal(_codec.histogram(w, mine, 2), ref)
        # values exactly on every edge and one ulp either side
        e = mine.astype(dtype)
        w2 = np.concatenate([e, np.nextafter(e, dtype(1)), np.nextafter(e, dtype(-1))]).astype(dtype)
        ref2, _ = np.histogram(w2, bins=bins, range=(-wmax, wmax))
        assert np.array_equal(_codec.histogram(w2, e, 1), ref2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_abs_tail_selects_what_numpy_selects(dtype):
    w = (np.random.default_rng(2).standard_normal(1_000_003) * 0.05).astype(dtype)
    for bound in (-np.inf, 0.0, 0.1, 1.0):
        below, tail = _codec.abs_tail(w, bound, 2)
        a = np.abs(w)
        assert below == np.count_nonzero(a < bound)
        assert np.array_equal(tail, a[a >= bound].astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, 70_000, 3_000_000])
def test_ranges_are_numpys_percentiles(dtype, n):
    w = (np.random.default_rng(n).standard_t(3, n) * 0.05).astype(dtype)
    ps = (99.0, 99.5, 99.9, 99.99, 100.0)
    ref = [float(v) for v in np.percentile(np.abs(w).astype(np.float64), ps[:-1])] + [float(np.abs(w).max())]
    assert E._ranges(w, ps) == ref


def test_fit_passes_respect_the_openmp_limit():
    """The fit passes take their thread count from OpenMP's current limit, so a
    ``threadpool_limits`` around a chip (the store job's parallel chips) holds them to it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        assert E._fit_threads() == 1
    assert 1 <= E._fit_threads() <= max(1, len(__import__("os").sched_getaffinity(0)))
