# cython: language_level=3
"""Test hooks of the compiled kernels (built into ``analogmem.emulator._testing``; not part of
the package's interface): the raw random stream and its transforms, the kernels' own
elementary functions, one Philox block, a probe of how many threads a parallel loop ran on,
and :func:`kernel_params` (a card packed for the kernels without a bench). The tests check
each against published values or the numpy twin (``analogmem.emulator._streams``); the
production kernels are ``analogmem.emulator._kernels``, which does not import this."""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from cython.parallel cimport prange, threadid
from libc.math cimport sqrt
import numpy as np

from am_kernels cimport *

cimport numpy as cnp

cnp.import_array()


def kernel_params(device, fault_key=None):
    """``device`` (a DeviceModel) packed as a bench packs it (``fault_key`` None: no faults)."""
    from analogmem.emulator._kernels import KernelParams
    from analogmem.emulator.card_params import card_params

    return KernelParams(card_params(device), fault_key)


def philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1):
    """One Philox4x32-10 block (for known-answer tests)."""
    cdef uint64_t a, b
    am_philox(c0, c1, c2, c3, k0, k1, &a, &b)
    return (int(a & 0xFFFFFFFF), int(a >> 32), int(b & 0xFFFFFFFF), int(b >> 32))


def draws(tuple key, Py_ssize_t n_cells, int n_draws, str kind="bits"):
    """``(n_cells, n_draws)`` draws of cells 0.. of an operation: raw 64-bit words
    (``kind="bits"``), uniforms, normals, or (``"read_normal"``, one column) the read-noise
    normals of cells 0.. of a read; ``"normal_f32"`` (at most two columns) and
    ``"read_normal_f32"`` the same for float32 benches (for tests of the stream and its
    transforms)."""
    cdef am_key k = op_key(key)
    cdef Py_ssize_t i
    cdef int d
    modes = {"bits": 0, "uniform": 1, "normal": 2, "read_normal": 3, "normal_f32": 4, "read_normal_f32": 5}
    if kind not in modes:
        raise ValueError(f"kind must be one of {sorted(modes)}")
    if kind == "normal_f32" and n_draws > 2:
        raise ValueError("float32 programs draw at most two normals per cell from a shared block")
    out = np.empty((n_cells, n_draws), dtype=np.uint64 if kind == "bits" else np.float64)
    cdef uint64_t[:, ::1] ob
    cdef double[:, ::1] of
    cdef uint64_t w
    if kind == "bits":
        ob = out
    else:
        of = out
    cdef int mode = modes[kind]
    with nogil:
        for i in range(n_cells):
            for d in range(n_draws):
                w = am_draw(k, <uint64_t> i, <uint32_t> d)
                if mode == 0:
                    ob[i, d] = w
                elif mode == 1:
                    of[i, d] = am_uniform(w)
                elif mode == 2:
                    of[i, d] = am_normal_draw(k, <uint64_t> i, <uint32_t> d)
                elif mode == 3:
                    of[i, d] = am_read_normal(k, <uint64_t> i)
                elif mode == 4:
                    of[i, d] = am_normal_draw_f(k, <uint64_t> i, <uint32_t> d)
                else:
                    of[i, d] = am_read_normal_f(k, <uint64_t> i)
    return out


def elementary(str name, const double[::1] x):
    """The kernels' own ``log``, ``exp``, ``sin2pi`` (sin 2 pi x) or ``cos2pi`` of each
    ``x``, or their float32 versions ``logf``, ``expf``, ``sin2pif``, ``cos2pif`` (of x
    rounded to float32; for tests)."""
    cdef Py_ssize_t i, n = x.shape[0]
    out = np.empty(n)
    cdef double[::1] o = out
    cdef double sv, cv
    cdef float sf, cf
    cdef int which = {"log": 0, "exp": 1, "sin2pi": 2, "cos2pi": 3, "logf": 4, "expf": 5, "sin2pif": 6,
                      "cos2pif": 7}[name]
    with nogil:
        for i in range(n):
            if which == 0:
                o[i] = am_log(x[i])
            elif which == 1:
                o[i] = am_exp(x[i])
            elif which <= 3:
                am_sincos2pi(x[i], &sv, &cv)
                o[i] = sv if which == 2 else cv
            elif which == 4:
                o[i] = am_logf(<float> x[i])
            elif which == 5:
                o[i] = am_expf(<float> x[i])
            else:
                am_sincos2pif(<float> x[i], &sf, &cf)
                o[i] = sf if which == 6 else cf
    return out


def threads_used(int n_threads, Py_ssize_t n_items=4096):
    """How many distinct threads actually ran a parallel loop of ``n_items`` iterations
    with ``num_threads=n_threads`` (a probe for tests: 1 means the loop ran serially)."""
    cdef int* seen = <int*> malloc(n_items * sizeof(int))
    cdef Py_ssize_t i
    cdef double acc
    cdef int j
    if seen == NULL:
        raise MemoryError()
    with nogil:
        for i in prange(n_items, schedule="static", chunksize=1, num_threads=max(n_threads, 1)):
            acc = 0.0
            for j in range(2000):
                acc = acc + sqrt(<double>(i + j))
            seen[i] = threadid() + (0 if acc >= 0 else 1)
    ids = set(seen[i] for i in range(n_items))
    free(seen)
    return len(ids)
