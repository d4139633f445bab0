# cython: language_level=3
"""Hot loops of the storage layer (analogmem.storage._codec): weights ⇄ cell targets.

Each function does in one pass, per weight and across ``n_threads`` OpenMP threads, what the
numpy encoders of :mod:`analogmem.storage.encoders` do in several passes with full-size
temporaries, with the same double-precision operations in the same order (the kernels are
built with ``-ffp-contract=off``), so ``encode_map`` and ``decode_map`` give the numpy
encoders' bits and ``mmse_posterior`` the numpy posterior mean to rounding (its sums run in
another order than numpy's matrix products).

Kinds of map (``kind``): 0 linear ``x = (clip(w, −s, s)/s + 1)/2``; 1 differential pair
``x± = min(|w|/s, 1)·[±w > 0]``. Layout of a weight's cells: ``r`` copies of the map's
``c`` cells, copy-major (``Repetition``).
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.math cimport exp, fabs, fmin, fmax

cnp.import_array()

ctypedef fused real_w:
    float
    double

ctypedef fused real_g:
    float
    double


def encode_map(int kind, const real_w[::1] w, double scale, int r, double g_min_S, double span_S,
               double[::1] out, int n_threads=1):
    """Targets (S) of weights ``w`` (shape (n,)) under map ``kind`` with range ``scale``,
    ``r`` copies: ``out`` of shape (n·c·r,) (c = 1 linear, 2 differential)."""
    cdef Py_ssize_t n = w.shape[0], i, k
    cdef int c = 1 if kind == 0 else 2
    cdef Py_ssize_t width = c * r
    cdef double v, x0, x1, m
    if out.shape[0] != n * width:
        raise ValueError("out has the wrong length")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        v = <double>w[i]
        if kind == 0:
            x0 = (fmin(fmax(v, -scale), scale) / scale + 1.0) / 2.0
            x0 = fmin(fmax(x0, 0.0), 1.0)
            for k in range(r):
                out[i * width + k] = g_min_S + x0 * span_S
        else:
            m = fmin(fabs(v) / scale, 1.0)
            x0 = m if v > 0 else 0.0
            x1 = m if v < 0 else 0.0
            x0 = fmin(fmax(x0, 0.0), 1.0)
            x1 = fmin(fmax(x1, 0.0), 1.0)
            for k in range(r):
                out[i * width + 2 * k] = g_min_S + x0 * span_S
                out[i * width + 2 * k + 1] = g_min_S + x1 * span_S


def decode_map(int kind, const real_g[::1] g, double gain, double scale, int r, double g_min_S, double span_S,
               real_w[::1] out, int n_threads=1):
    """Weights from reads ``g`` (S, shape (n·c·r,)): each read multiplied by ``gain`` (the drift
    compensation factor; 1 for none), to relative units, the ``r`` copies averaged, then the
    map's naive decoder (linear ``s·(2y − 1)``, differential ``s·(y+ − y−)``), into ``out`` (n,)."""
    cdef Py_ssize_t n = out.shape[0], i, k, base
    cdef int c = 1 if kind == 0 else 2
    cdef Py_ssize_t width = c * r
    cdef double y0, y1, a
    if g.shape[0] != n * width:
        raise ValueError("g has the wrong length")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        base = i * width
        y0 = 0.0
        y1 = 0.0
        for k in range(r):
            a = <double>g[base + c * k]
            if gain != 1.0:
                a = a * gain
            y0 = y0 + (a - g_min_S) / span_S
            if c == 2:
                a = <double>g[base + c * k + 1]
                if gain != 1.0:
                    a = a * gain
                y1 = y1 + (a - g_min_S) / span_S
        y0 = y0 / r
        y1 = y1 / r
        if kind == 0:
            out[i] = <real_w>(scale * (2.0 * y0 - 1.0))
        else:
            out[i] = <real_w>(scale * (y0 - y1))


def read_sum(const real_g[::1] g, int n_threads=1):
    """Σ g in double (for the drift compensation's mean read)."""
    cdef Py_ssize_t n = g.shape[0], i
    cdef double s = 0.0
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        s += <double>g[i]
    return s


cdef extern from "am_codec.h" nogil:
    int AM_CODEC_MAXG
    int AM_CODEC_MAXK
    void am_mmse_rows(cnp.int64_t n, int C, int G, int K, const double* y, const cnp.int64_t* group,
                      const double* coef, double lo, const double* log_prior, const double* w_k, double* out)


def mmse_limits():
    """``(max groups, max candidates)`` that :func:`mmse_posterior` takes."""
    return AM_CODEC_MAXG, AM_CODEC_MAXK


def mmse_posterior(const real_g[::1] g, double g_min_S, double span_S, const cnp.int64_t[::1] group,
                   const double[:, ::1] coef, double lo, const double[::1] log_prior, const double[::1] w_k,
                   real_w[::1] out, int n_threads=1):
    """The posterior mean ``Σ_k p_k L_k w_k / Σ_k p_k L_k`` of each weight from its reads
    (``am_mmse_rows`` in ext/am_codec.h, over blocks of weights on ``n_threads`` threads).

    Args:
        g: reads (S), shape (n·C,): the C cells of weight i at ``g[i·C:(i+1)·C]``.
        group: (C,) the coefficient group of each cell (cells whose target is the same for
            every candidate share a group; G groups).
        coef: (4G, K) coefficients of the per-group statistics (Σy², Σy, count) of reads above
            the clip ``lo`` and the count of reads at or below it (relative units), as built by
            :class:`analogmem.storage.encoders._GaussianLikelihood`.
        log_prior, w_k: (K,) log prior and candidate weights.
        out: (n,) posterior means.
    """
    cdef Py_ssize_t C = group.shape[0], K = w_k.shape[0], G = coef.shape[0] // 4
    cdef Py_ssize_t n = out.shape[0], b, nb, i, j, a, m
    cdef Py_ssize_t B = 1024
    cdef double* y
    cdef double* o
    if g.shape[0] != n * C or coef.shape[1] != K or log_prior.shape[0] != K or G * 4 != coef.shape[0]:
        raise ValueError("inconsistent shapes")
    if G > AM_CODEC_MAXG or K > AM_CODEC_MAXK or G < 1:
        raise ValueError(f"mmse_posterior takes 1..{AM_CODEC_MAXG} groups and at most {AM_CODEC_MAXK} candidates")
    nb = (n + B - 1) // B
    with nogil, parallel(num_threads=max(1, n_threads)):
        y = <double*>malloc(B * C * sizeof(double))
        o = <double*>malloc(B * sizeof(double))
        for b in prange(nb, schedule="static"):
            a = b * B
            m = B if a + B <= n else n - a
            for i in range(m * C):
                y[i] = (<double>g[a * C + i] - g_min_S) / span_S
            am_mmse_rows(m, <int>C, <int>G, <int>K, y, &group[0], &coef[0, 0], lo, &log_prior[0], &w_k[0], o)
            for i in range(m):
                out[a + i] = <real_w>o[i]
        free(y)
        free(o)




cdef inline Py_ssize_t _cell_of(double v, double y0, double h, Py_ssize_t N) noexcept nogil:
    """The grid cell (0..N-2) of ``v`` on nodes ``y0 + j·h`` (j = 0..N-1), clamped to the grid."""
    cdef double u = (v - y0) / h
    if u <= 0.0:
        return 0
    if u >= <double>(N - 2):
        return N - 2
    return <Py_ssize_t>u


cdef inline double _frac_in(double v, double y0, double h, Py_ssize_t i) noexcept nogil:
    """The fraction of ``v`` in grid cell ``i`` (clamped to [0, 1]: past the grid, its edge)."""
    return fmin(fmax((v - y0) / h - <double>i, 0.0), 1.0)


def mmse_table(const real_g[::1] g, double g_min_S, double span_S, double lo, double y0, double h,
               const double[:, ::1] table, const double[::1] cen_first, const double[::1] cen_second,
               double cen_both, real_w[::1] out, int n_threads=1):
    """Posterior means from a table of them: reads ``g`` (S) of ``c`` = 1 or 2 cells per weight
    (shape (n·c,)) in relative units ``y = (g − g_min_S)/span_S``; a read at or below ``lo``
    (the card's clip, −inf for none) is censored. Uncensored reads are interpolated
    (bilinearly for c = 2) on ``table``, the posterior mean at nodes ``y0 + j·h`` (shape
    (1, N) for c = 1, (N, N) for c = 2); reads past the grid take its edge. With c = 2, a
    weight whose first (second) read is censored interpolates ``cen_first`` (``cen_second``)
    at its other read; both censored: ``cen_both``. With c = 1 a censored read is ``cen_both``."""
    cdef Py_ssize_t N = table.shape[1], n = out.shape[0], q, i1, i2
    cdef int c = 1 if table.shape[0] == 1 else 2
    cdef double y1, y2, f1, f2, thr = lo + 1e-12
    if g.shape[0] != n * c or N < 2 or (c == 2 and (table.shape[0] != N or cen_first.shape[0] != N
                                                    or cen_second.shape[0] != N)):
        raise ValueError("inconsistent shapes")
    for q in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        # every variable is assigned here (private to its thread): no pointers into them
        y1 = (<double>g[q * c] - g_min_S) / span_S
        i1 = _cell_of(y1, y0, h, N)
        f1 = _frac_in(y1, y0, h, i1)
        if c == 1:
            if y1 <= thr:
                out[q] = <real_w>cen_both
            else:
                out[q] = <real_w>(table[0, i1] * (1.0 - f1) + table[0, i1 + 1] * f1)
        else:
            y2 = (<double>g[q * c + 1] - g_min_S) / span_S
            i2 = _cell_of(y2, y0, h, N)
            f2 = _frac_in(y2, y0, h, i2)
            if y1 <= thr and y2 <= thr:
                out[q] = <real_w>cen_both
            elif y1 <= thr:
                out[q] = <real_w>(cen_first[i2] * (1.0 - f2) + cen_first[i2 + 1] * f2)
            elif y2 <= thr:
                out[q] = <real_w>(cen_second[i1] * (1.0 - f1) + cen_second[i1 + 1] * f1)
            else:
                out[q] = <real_w>((table[i1, i2] * (1.0 - f2) + table[i1, i2 + 1] * f2) * (1.0 - f1)
                                  + (table[i1 + 1, i2] * (1.0 - f2) + table[i1 + 1, i2 + 1] * f2) * f1)
