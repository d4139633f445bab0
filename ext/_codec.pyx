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
from libc.math cimport exp, fabs

cnp.import_array()


# min/max of finite doubles: am_kernels.h's am_min/am_max, which compile to minsd/maxsd (libm's
# NaN-aware fmin/fmax are calls; a comparison written in Cython becomes a branch, mispredicted
# on data such as a weight's sign)
cdef extern from "am_codec.h" nogil:
    double am_min(double a, double b)
    double am_max(double a, double b)
    double am_keep(double x, cnp.int64_t keep)
    void am_table_ff(cnp.int64_t n, int c, const float* g, double g_min, double inv_span, double y0, double inv_h,
                     double thr, cnp.int64_t N, const double* t, float* out)
    void am_table_fd(cnp.int64_t n, int c, const float* g, double g_min, double inv_span, double y0, double inv_h,
                     double thr, cnp.int64_t N, const double* t, double* out)
    void am_table_df(cnp.int64_t n, int c, const double* g, double g_min, double inv_span, double y0, double inv_h,
                     double thr, cnp.int64_t N, const double* t, float* out)
    void am_table_dd(cnp.int64_t n, int c, const double* g, double g_min, double inv_span, double y0, double inv_h,
                     double thr, cnp.int64_t N, const double* t, double* out)


cdef inline double _min(double a, double b) noexcept nogil:
    return am_min(a, b)


cdef inline double _max(double a, double b) noexcept nogil:
    return am_max(a, b)


cdef inline double _clip(double v, double lo, double hi) noexcept nogil:
    return _min(_max(v, lo), hi)

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
            # in [0, 1] exactly (|clip(v)| <= scale), as the numpy encoders' clip to [0, 1] leaves it
            x0 = (_clip(v, -scale, scale) / scale + 1.0) / 2.0
            for k in range(r):
                out[i * width + k] = g_min_S + x0 * span_S
        else:
            m = _min(fabs(v) / scale, 1.0)
            x0 = am_keep(m, v > 0)  # m or +0, without a branch on the sign
            x1 = am_keep(m, v < 0)
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


cdef Py_ssize_t _n_blocks(Py_ssize_t n) noexcept nogil:
    """Blocks of at least 65,536 values, at most 256 of them (per-block partial results)."""
    cdef Py_ssize_t nb = (n + 65535) // 65536
    return 1 if nb < 1 else (256 if nb > 256 else nb)


def histogram(const real_w[::1] w, const real_w[::1] edges, int n_threads=1):
    """``np.histogram(w, bins=edges)[0]`` (int64, shape (len(edges) − 1,)) for uniform ``edges``
    made as numpy makes them (``np.linspace(first, last, bins + 1, dtype=w.dtype)``): a value
    counts in bin ``i`` when ``edges[i] ≤ v < edges[i + 1]`` (the last bin also holds
    ``edges[-1]``); values outside ``[edges[0], edges[-1]]`` are not counted. One pass over
    ``n_threads`` threads; the bin is estimated from the edges' spacing and then corrected
    against the edges themselves, so the counts are numpy's exactly."""
    cdef Py_ssize_t n = w.shape[0], K = edges.shape[0] - 1, nb = _n_blocks(n), size, b, i, a, z, j
    cdef double first, last, scale, v
    if K < 1:
        raise ValueError("histogram needs at least two edges")
    first, last = <double>edges[0], <double>edges[K]
    if not last > first:
        raise ValueError("histogram edges must increase")
    scale = K / (last - first)
    # four sub-histograms per block (value i into sub-histogram i % 4): a run of values in one
    # bin does not wait on its own increments
    cdef cnp.int64_t[:, ::1] part = np.zeros((4 * nb, K), dtype=np.int64)
    size = (n + nb - 1) // nb
    for b in prange(nb, nogil=True, num_threads=max(1, n_threads), schedule="static"):
        a = b * size
        z = a + size if a + size < n else n
        for i in range(a, z):
            v = <double>w[i]
            if not (v >= first and v <= last):
                continue
            j = <Py_ssize_t>((v - first) * scale)
            if j > K - 1:
                j = K - 1
            if j < 0:
                j = 0
            while j > 0 and v < <double>edges[j]:
                j = j - 1
            while j < K - 1 and v >= <double>edges[j + 1]:
                j = j + 1
            part[4 * b + (i & 3), j] += 1
    return np.asarray(part).sum(axis=0)


def abs_tail(const real_w[::1] w, double bound, int n_threads=1):
    """``(count of |w| < bound, the values |w| ≥ bound as float64)``: the tail of ``|w|`` that
    an exact order statistic above ``bound`` is selected from, in two passes over
    ``n_threads`` threads without a full-size temporary (the tail keeps ``w``'s order)."""
    cdef Py_ssize_t n = w.shape[0], nb = _n_blocks(n), size, b, i, a, z, c, o
    cdef double v
    cdef cnp.int64_t[::1] cnt = np.zeros(nb, dtype=np.int64)
    size = (n + nb - 1) // nb
    for b in prange(nb, nogil=True, num_threads=max(1, n_threads), schedule="static"):
        a = b * size
        z = a + size if a + size < n else n
        c = 0
        for i in range(a, z):
            if fabs(<double>w[i]) >= bound:
                c = c + 1
        cnt[b] = c
    offsets = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
    cdef cnp.int64_t[::1] off = offsets
    tail_arr = np.empty(int(offsets[-1]))
    cdef double[::1] tail = tail_arr
    for b in prange(nb, nogil=True, num_threads=max(1, n_threads), schedule="static"):
        a = b * size
        z = a + size if a + size < n else n
        o = off[b]
        for i in range(a, z):
            v = fabs(<double>w[i])
            if v >= bound:
                tail[o] = v
                o = o + 1
    return n - int(offsets[-1]), tail_arr


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
    cdef double y1, y2, u1, u2, f1, f2, thr = lo + 1e-12
    cdef Py_ssize_t cen
    # reciprocals once: the loop multiplies (a division per read and grid coordinate cost
    # more than the interpolation itself)
    cdef double inv_span = 1.0 / span_S, inv_h = 1.0 / h
    if g.shape[0] != n * c or N < 2 or (c == 2 and (table.shape[0] != N or cen_first.shape[0] != N
                                                    or cen_second.shape[0] != N)):
        raise ValueError("inconsistent shapes")
    # The censored tables become an extra node N of each read (padded to N + 2 so that the
    # neighbour a weight of 0 multiplies exists): a censored read takes node N with fraction
    # 0, so every weight runs the same bilinear formula, without branches on censoring (reads
    # at the clip are common and unpredictable: half the cells of a differential pair sit there)
    padded = np.zeros((int(N) + 2, int(N) + 2) if c == 2 else (1, int(N) + 2))
    if c == 2:
        padded[:N, :N] = table
        padded[N, :N] = cen_first  # first read censored: interpolated at the second
        padded[:N, N] = cen_second  # second read censored: interpolated at the first
        padded[N, N] = cen_both
    else:
        padded[0, :N] = table[0]
        padded[0, N] = cen_both
    cdef double[:, ::1] t = padded
    cdef Py_ssize_t nb = (n + 16383) // 16384, b, lo_q, m
    if n == 0:
        return
    for b in prange(nb, nogil=True, num_threads=max(1, n_threads), schedule="static"):
        lo_q = b * 16384
        m = 16384 if lo_q + 16384 <= n else n - lo_q
        if real_g is float and real_w is float:
            am_table_ff(m, c, &g[lo_q * c], g_min_S, inv_span, y0, inv_h, thr, N, &t[0, 0], &out[lo_q])
        elif real_g is float and real_w is double:
            am_table_fd(m, c, &g[lo_q * c], g_min_S, inv_span, y0, inv_h, thr, N, &t[0, 0], &out[lo_q])
        elif real_g is double and real_w is float:
            am_table_df(m, c, &g[lo_q * c], g_min_S, inv_span, y0, inv_h, thr, N, &t[0, 0], &out[lo_q])
        else:
            am_table_dd(m, c, &g[lo_q * c], g_min_S, inv_span, y0, inv_h, thr, N, &t[0, 0], &out[lo_q])
