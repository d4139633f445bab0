# cython: language_level=3
"""Private compiled kernels of analogmem (built into ``analogmem.emulator._kernels``).

The cell model itself is C in ``ext/am_kernels.h`` (random stream, elementary functions,
program and read per cell and in vectorised blocks); this module is its thin face:
:class:`KernelParams` packs a device card's parameters (an
:class:`~analogmem.emulator.card_params.CardParams`) into the C struct once per bench; the
entry points take that object, check the arrays they are handed, and run chunks of cells in
parallel with OpenMP (when the build has it). Validation of user input happens in Python
before these are called. The C interface is declared for Cython in ``ext/am_kernels.pxd``,
:class:`KernelParams` in ``ext/_kernels.pxd``; test hooks (the raw stream, the elementary
functions, a thread probe) live in ``analogmem.emulator._testing``.

Random numbers are counter-based (Philox4x32-10, normals by Box-Muller): draw ``d`` of
the cell at op-local position ``i`` depends only on the operation's key, ``i`` and ``d`` —
never on chunking or threads. Per cell, ``program`` draws: the write (a normal, or a uniform for an empirical
channel; with program-and-verify the verify loop's draws instead: per pulse a write draw
and, with read noise, a normal; with the card's windows a uniform for the response class,
a geometric pulse count, then a uniform for the verified value or a write draw on failure),
then the drift exponent's normal if the card has drift, then the relaxation latent if it
has relaxation. ``read`` draws one normal per cell if the card has read noise. The numpy
reference (analogmem.emulator.reference) draws the same numbers.

Per-cell state arrays are float64 or float32 (all of one kind per call); arrays of model
components the card lacks are None and never touched.
"""

from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t, uint64_t
from cython.parallel cimport prange
from libc.math cimport sqrt
cimport numpy as cnp
import numpy as np

from am_kernels cimport *

from analogmem.emulator.chipstate import STATE_KEYS

cnp.import_array()

cdef extern from *:
    """
    #if ANALOGMEM_OPENMP
    #include <omp.h>
    static int am_openmp(void) { return 1; }
    static int am_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int am_openmp(void) { return 0; }
    static int am_max_threads(void) { return 1; }
    #endif
    """
    int am_openmp() nogil
    int am_max_threads() nogil

#: True when the kernels were compiled with OpenMP (multi-threaded chunks).
OPENMP = bool(am_openmp())

MAX_COEFFICIENTS = AM_MAXC
MAX_RELAXATION_TIMES = AM_MAXT
MAX_PULSE_COMPONENTS = AM_MAXK
MAX_DRIFT_KNOTS = AM_MAXN
#: Cells per unit of parallel work (a scheduling choice: results do not depend on it).
WORK_CHUNK = 1 << 15

cdef const double* _f64_ptr(object a, Py_ssize_t n, str what) except? NULL:
    if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 1 or not a.flags.c_contiguous \
            or (n >= 0 and a.shape[0] != n):
        raise ValueError(f"{what} must be a contiguous float64 array" + (f" of {n} values" if n >= 0 else ""))
    return <const double*> cnp.PyArray_DATA(a)


cdef int _fill(double* dst, object values, int size, str what) except -1:
    """Copy ``values`` into ``dst[0:size]``, zero-padded."""
    cdef int i
    if len(values) > size:
        raise ValueError(f"{what}: at most {size} values")
    for i in range(size):
        dst[i] = values[i] if i < len(values) else 0.0
    return 0


cdef int _pack(am_params* p, object d, object fault_key) except -1:
    """Copy the card ``d`` (a CardParams) and the bench's fault key into the C struct."""
    cdef int i, j
    p.g_min = d.g_min
    p.g_max = d.g_max
    p.inv_g_max = 1.0 / p.g_max
    p.clip_lo = d.clip_lo
    p.clip_hi = d.clip_hi
    p.x_floor = d.x_floor
    prog = d.prog_c
    if len(prog) < 1 or len(prog) > AM_MAXC:
        raise ValueError(f"programming polynomial must have 1..{AM_MAXC} coefficients")
    for i in range(AM_MAXC):
        p.prog_c[i] = prog[i] if i < len(prog) else 0.0
    p.prog_scale = d.prog_scale
    p.drift_on = d.drift_on
    p.t0 = d.t0
    p.mu_slope, p.mu_icpt, p.mu_min, p.mu_max = d.mu
    p.sg_slope, p.sg_icpt, p.sg_min, p.sg_max = d.sigma_nu
    p.mu_lxb, p.sg_lxb = d.mu_lxb, d.sg_lxb
    _fill(p.mu_hc, d.mu_hc, AM_MAXH, "drift mu upper branch")
    _fill(p.sg_hc, d.sg_hc, AM_MAXH, "drift sigma upper branch")
    p.nu_table = d.nu_table
    p.nu_simple = not p.nu_table and p.mu_lxb == float("inf") and p.sg_lxb == float("inf")
    knots = d.nu_x
    p.nu_n = len(knots)
    if p.nu_table and not 2 <= p.nu_n <= AM_MAXN:
        raise ValueError(f"a drift table needs 2..{AM_MAXN} knots")
    _fill(p.nu_x, knots, AM_MAXN, "drift table knots")
    _fill(p.nu_mu, d.nu_mu, AM_MAXN, "drift table mu")
    _fill(p.nu_sg, d.nu_sg, AM_MAXN, "drift table sigma")
    p.read_on = d.read_on
    p.q_form = d.q_form
    p.read_log10 = d.read_log10
    p.q_slope, p.q_icpt, p.q_lo, p.q_hi, p.q_lxb = d.q_piece
    _fill(p.q_hc, d.q_hc, AM_MAXH, "read-noise upper branch")
    p.ln_uS = am_log(1e-6)
    p.inv_ln10 = 1.0 / am_log(10.0)
    p.rn_floor = d.x_floor * d.g_max
    p.q_coef = d.q_coef
    p.q_exp = d.q_exp
    p.q_max = d.q_max
    p.t_read = d.t_read
    p.t0_read = d.t0_read
    p.relax_on = d.relax_on
    p.relax_scale = d.relax_scale
    times = d.relax_t
    table = d.relax_c
    p.n_relax_t = len(times)
    p.n_relax_c = len(table[0]) if p.n_relax_t else 0
    if p.n_relax_t > AM_MAXT or p.n_relax_c > AM_MAXC:
        raise ValueError(f"relaxation table must have at most {AM_MAXT} times and {AM_MAXC} coefficients")
    for i in range(AM_MAXT * AM_MAXC):
        p.relax_c[i] = 0.0
    for i in range(p.n_relax_t):
        p.relax_lnt[i] = am_log(times[i])
        if len(table[i]) != p.n_relax_c:
            raise ValueError("relaxation coefficient rows must have equal length")
        for j in range(p.n_relax_c):
            p.relax_c[i * AM_MAXC + j] = table[i][j]
    p.relax_table = d.relax_table
    p.relax_add = d.relax_add
    mean_rows = d.relax_m
    p.relax_mean_on = len(mean_rows) > 0
    for i in range(AM_MAXT * AM_MAXC):
        p.relax_m[i] = 0.0
    if p.relax_mean_on:
        if len(mean_rows) != p.n_relax_t or not p.relax_table:
            raise ValueError("a relaxation mean needs a tabulated relaxation and one row per time")
        for i in range(p.n_relax_t):
            if len(mean_rows[i]) != p.n_relax_c:
                raise ValueError("relaxation mean rows must have one value per x knot")
            for j in range(p.n_relax_c):
                p.relax_m[i * AM_MAXC + j] = mean_rows[i][j]
    knots = d.relax_x
    if p.relax_table:
        if len(knots) != p.n_relax_c or p.n_relax_c < 2:
            raise ValueError("relaxation table needs one x knot per sigma column (at least 2)")
        for j in range(p.n_relax_c):
            p.relax_x[j] = knots[j]
    # Empirical channel: pointers into float64 arrays that the CardParams (held by the
    # KernelParams) keeps alive.
    p.emp_on = d.emp_on
    p.emp_n_levels = p.emp_n_probs = 0
    p.emp_levels = p.emp_probs = p.emp_q = NULL
    if p.emp_on:
        levels, probs, q = d.emp_levels, d.emp_probs, d.emp_q
        if q.ndim != 2 or q.shape[0] != levels.shape[0] or q.shape[1] != probs.shape[0] or probs.shape[0] < 2:
            raise ValueError("empirical channel table has the wrong shape")
        p.emp_n_levels, p.emp_n_probs = levels.shape[0], probs.shape[0]
        p.emp_levels = _f64_ptr(levels, -1, "emp_levels")
        p.emp_probs = _f64_ptr(probs, -1, "emp_probs")
        p.emp_q = _f64_ptr(q.reshape(-1), q.size, "emp_q") if q.flags.c_contiguous else NULL
        if p.emp_q == NULL:
            raise ValueError("emp_q must be C-contiguous")
    p.pr_on = 0  # a write-verify call's table: KernelParams.with_pulse_table
    p.pr_n_levels = p.pr_n_probs = 0
    p.pr_lo = p.pr_hi = p.pr_cumw = p.pr_inv_log1mp = p.pr_off = p.pr_probs = p.pr_q = NULL
    # stuck-at faults: a pure function of the bench's fault key (none without one)
    p.faults_on = fault_key is not None and d.faults_on
    p.p_stuck_lo = d.p_stuck_lo if p.faults_on else 0.0
    p.p_stuck_lohi = p.p_stuck_lo + (d.p_stuck_hi if p.faults_on else 0.0)
    fk0, fk1, fk2 = fault_key if p.faults_on else (0, 0, 0)
    p.fault_key.k0, p.fault_key.k1, p.fault_key.c3 = fk0, fk1, fk2
    p.q_stuck[0] = 0.0
    p.q_stuck[1] = am_q(p, p.g_min * p.inv_g_max, am_lnx(p, p.g_min * p.inv_g_max)) if p.read_on else 0.0
    p.q_stuck[2] = am_q(p, p.g_max * p.inv_g_max, am_lnx(p, p.g_max * p.inv_g_max)) if p.read_on else 0.0
    return 0


cdef class KernelParams:
    """A device card packed for the kernels, once (numpy.random's pattern: the C struct
    lives in the object): ``KernelParams(card, fault_key=None)`` with ``card`` an
    :class:`~analogmem.emulator.card_params.CardParams` and ``fault_key`` the bench's three
    words keying its stuck-at faults (None: no faults, whatever the card says). Immutable;
    :meth:`with_pulse_table` gives the copy a write-verify call with the card's windows uses."""

    def __init__(self, object card, object fault_key=None):
        cdef int i
        if fault_key is not None:
            fault_key = tuple(int(w) for w in fault_key)
            if len(fault_key) != 3:
                raise ValueError("a fault key is three words")
        _pack(&self.p, card, fault_key)
        am_fparams_of(&self.p, &self.f)
        keys = tuple(card.state_keys)
        for i in range(5):
            self.need[i] = STATE_KEYS[i] in keys
        if not self.need[1]:
            raise ValueError("every card needs g_prog")
        self.card = card
        self.fault_key = fault_key if self.p.faults_on else None
        self.pulse_table = None

    def with_pulse_table(self, object table):
        """A copy carrying the pulse-response ``table`` (a
        :class:`~analogmem.emulator.card_params.PulseArrays`) for ``program(verify_card=1)``."""
        cdef KernelParams out = KernelParams.__new__(KernelParams)
        out.p = self.p
        out.f = self.f
        out.need = self.need
        out.card, out.fault_key, out.pulse_table = self.card, self.fault_key, table
        lo, hi, off, pprobs = table.lo, table.hi, table.offset, table.probs
        cumw, inv, pq = table.cumw, table.inv_log1mp, table.q
        nl = lo.shape[0]
        if (nl < 1 or hi.shape[0] != nl or off.shape[0] != nl or cumw.shape != (nl, AM_MAXK)
                or inv.shape != (nl, AM_MAXK) or pq.shape != (nl, pprobs.shape[0]) or pprobs.shape[0] < 2
                or not (cumw.flags.c_contiguous and inv.flags.c_contiguous and pq.flags.c_contiguous)):
            raise ValueError("pulse-response table has the wrong shape")
        out.p.pr_on = 1
        out.p.pr_n_levels, out.p.pr_n_probs = nl, pprobs.shape[0]
        out.p.pr_lo, out.p.pr_hi = _f64_ptr(lo, nl, "pr_lo"), _f64_ptr(hi, nl, "pr_hi")
        out.p.pr_off, out.p.pr_probs = _f64_ptr(off, nl, "pr_off"), _f64_ptr(pprobs, -1, "pr_probs")
        out.p.pr_cumw = _f64_ptr(cumw.reshape(-1), cumw.size, "pr_cumw")
        out.p.pr_inv_log1mp = _f64_ptr(inv.reshape(-1), inv.size, "pr_inv_log1mp")
        out.p.pr_q = _f64_ptr(pq.reshape(-1), pq.size, "pr_q")
        return out

    @property
    def faults_on(self):
        """Whether any cell can be stuck (the card has fault probabilities and a fault key was given)."""
        return bool(self.p.faults_on)

    cdef int check_state(self, tuple arrays) except -1:
        cdef int i
        if len(arrays) != 5:
            raise ValueError(f"state is five arrays {STATE_KEYS} (None where absent)")
        for i in range(5):
            if (arrays[i] is not None) != self.need[i]:
                raise ValueError(f"state array {STATE_KEYS[i]} is {'missing' if self.need[i] else 'not used by this card'}")
        return 0

    def __reduce__(self):
        return (KernelParams, (self.card, self.fault_key)) if self.pulse_table is None else \
            (_with_table, (self.card, self.fault_key, self.pulse_table))

    def __repr__(self):
        return (f"KernelParams(state_keys={tuple(self.card.state_keys)!r}, faults_on={self.faults_on}, "
                f"pulse_table={self.pulse_table is not None})")


def _with_table(card, fault_key, table):
    return KernelParams(card, fault_key).with_pulse_table(table)


cdef am_state _state(tuple arrays, Py_ssize_t n, bint writable) except *:
    """Pointers of the five state arrays (None: absent); all present ones of one float dtype."""
    cdef am_state s
    cdef void* ptrs[5]
    cdef int i
    cdef int kind = -1, t
    for i in range(5):
        a = arrays[i]
        ptrs[i] = NULL
        if a is None:
            continue
        t = cnp.PyArray_TYPE(a) if isinstance(a, np.ndarray) else -2
        if (t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT) or (kind != -1 and t != kind):
            raise ValueError("state arrays must all be float64 or all float32")
        kind = t
    if kind == -1:
        raise ValueError("state arrays must all be float64 or all float32")
    s.f32 = kind == cnp.NPY_FLOAT
    for i in range(5):
        a = arrays[i]
        ptrs[i] = NULL
        if a is None:
            continue
        if a.ndim != 1 or not a.flags.c_contiguous or a.shape[0] != n \
                or (writable and not a.flags.writeable):
            raise ValueError(f"state array {STATE_KEYS[i]} must be a contiguous writable array of {n} values")
        ptrs[i] = cnp.PyArray_DATA(a)
    if ptrs[1] == NULL:
        raise ValueError("state needs g_prog")
    s.g_eff, s.g_prog, s.nu, s.z_relax, s.q_read = ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4]
    return s


cdef inline void _program_chunk(const am_params* p, const am_fparams* f, const am_verify* vf, am_key k,
                                int64_t first, int64_t lo, int64_t hi, const double* gt, const int8_t* st,
                                am_state s, int32_t* pl, int8_t* sc, bint fast) noexcept nogil:
    """Program cells lo..hi-1 (one work chunk)."""
    if fast and s.f32:
        am_program_fast_f32(p, f, k, first, lo, hi, gt, st, s)
    elif fast:
        am_program_fast(p, k, first, lo, hi, gt, st, s)
    else:
        am_program_cells(p, vf, k, first, lo, hi, gt, st, s, pl, sc)


cdef inline void _read_chunk(const am_params* p, const am_fparams* f, am_key k, int64_t first, int64_t lo, int64_t hi,
                             am_state s, const double* ag, double age0, bint uniform, void* o, int out_f32,
                             bint fast) noexcept nogil:
    """Read cells lo..hi-1 (one work chunk)."""
    if s.f32 and fast:
        am_read_fast_f32(p, f, k, first, lo, hi, s, age0, <float*> o)
    elif s.f32:
        am_read_cells_f32(p, f, k, first, lo, hi, s, ag, uniform, <float*> o)
    elif fast:
        am_read_fast(p, k, first, lo, hi, s, age0, o, out_f32)
    else:
        am_read_cells(p, k, first, lo, hi, s, ag, uniform, o, out_f32)


def program(KernelParams params, tuple key, const double[::1] g_target, object stuck, tuple state, int n_threads,
            Py_ssize_t first=0,
            int verify_max_pulses=0, double tol_abs=0.0, double tol_rel=0.0,
            int32_t[::1] pulses=None, int8_t[::1] success=None, int verify_card=0, bint general=False):
    """Program cells of the card ``params``: for every cell ``i`` of ``g_target`` (op-local
    position ``first + i``, draws keyed by ``key``) write the state arrays ``state = (g_eff, g_prog, nu, z_relax, q_read)``
    (None where the card has no such component): the effective target (stuck cells at their
    stuck value), the programmed conductance (S), the drift exponent, the relaxation latent
    and the read-noise factor Q_s. ``stuck`` is an int8 array (0/1/2) per cell or None.

    With ``verify_max_pulses > 0`` each cell is programmed and verified: after each pulse it
    is read (with the card's read noise right after programming) and the loop stops when the
    read lies in ``[g_T - h, g_T + h]``, ``h = tol_abs + tol_rel*|g_T|`` (S), or after
    ``verify_max_pulses`` pulses; ``pulses`` and ``success`` receive the outcome. With
    ``verify_card`` the card's pulse-response model and windows replace that loop (every
    target must lie in one of the card's windows). ``general`` forces the one-cell-at-a-time
    path (for tests: it must equal the vectorised one bit for bit)."""
    cdef const am_params* p = &params.p
    cdef const am_fparams* f = &params.f
    cdef am_key k = op_key(key)
    cdef am_verify vf
    cdef Py_ssize_t n = g_target.shape[0]
    cdef Py_ssize_t chunk = WORK_CHUNK
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t c
    cdef const int8_t* st = NULL
    cdef int8_t[::1] stuck_mv
    params.check_state(state)
    cdef am_state s = _state(state, n, True)
    if stuck is not None:
        stuck_mv = stuck
        if stuck_mv.shape[0] != n:
            raise ValueError("stuck must have one entry per cell")
        if n:
            st = &stuck_mv[0]
    if n == 0:
        return
    vf.max_pulses = verify_max_pulses
    vf.card = verify_card
    if verify_card and not p.pr_on:
        raise ValueError("verify_card needs a card with a pulse-response model")
    vf.tol_abs = tol_abs
    vf.tol_rel = tol_rel
    vf.read_factor = sqrt(max(am_log((p.t0_read + p.t_read) / (2.0 * p.t_read)), 0.0)) if p.read_on else 0.0
    cdef int32_t* pl = NULL
    cdef int8_t* sc = NULL
    if verify_max_pulses > 0:
        if pulses is None or success is None or pulses.shape[0] != n or success.shape[0] != n:
            raise ValueError("program-and-verify needs pulses and success arrays of one entry per cell")
        pl = &pulses[0]
        sc = &success[0]
    cdef const double* gt = &g_target[0]
    cdef bint fast = not general and verify_max_pulses == 0 and not p.emp_on
    if n_chunks == 1 or n_threads <= 1:  # no parallel region to open (its start costs more than a few cells)
        with nogil:
            for c in range(n_chunks):
                _program_chunk(p, f, &vf, k, first, c * chunk, min(n, (c + 1) * chunk), gt, st, s, pl, sc, fast)
        return
    with nogil:
        for c in prange(n_chunks, schedule="dynamic", num_threads=n_threads):
            _program_chunk(p, f, &vf, k, first, c * chunk, min(n, (c + 1) * chunk), gt, st, s, pl, sc, fast)


def read(KernelParams params, tuple key, tuple state, const double[::1] age_s, object out, int n_threads,
         Py_ssize_t first=0, bint general=False):
    """Read cells: ``out`` (S; float64 or float32) from the programmed ``state`` (as for
    :func:`program`), ``age_s`` seconds after each cell was programmed (one value for all
    cells, or one per cell); draws keyed by ``key`` and each cell's op-local position
    ``first + i``."""
    cdef const am_params* p = &params.p
    cdef const am_fparams* f = &params.f
    cdef am_key k = op_key(key)
    if not isinstance(out, np.ndarray) or out.ndim != 1 or not out.flags.c_contiguous \
            or out.dtype not in (np.float64, np.float32) or not out.flags.writeable:
        raise ValueError("out must be a contiguous writable float64 or float32 array")
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t chunk = WORK_CHUNK
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t c
    cdef bint uniform = age_s.shape[0] == 1
    params.check_state(state)
    cdef am_state s = _state(state, n, False)
    cdef int out_f32 = out.dtype == np.float32
    cdef void* o = cnp.PyArray_DATA(out)
    if s.f32 and not out_f32:
        raise ValueError("float32 state reads into a float32 array")
    if n == 0:
        return
    if not uniform and age_s.shape[0] != n:
        raise ValueError("age_s must have one value or one per cell")
    cdef const double* ag = &age_s[0]
    cdef double age0 = age_s[0]
    cdef bint fast = not general and uniform and not p.relax_table
    if n_chunks == 1 or n_threads <= 1:
        with nogil:
            for c in range(n_chunks):
                _read_chunk(p, f, k, first, c * chunk, min(n, (c + 1) * chunk), s, ag, age0, uniform, o, out_f32, fast)
        return
    with nogil:
        for c in prange(n_chunks, schedule="dynamic", num_threads=n_threads):
            _read_chunk(p, f, k, first, c * chunk, min(n, (c + 1) * chunk), s, ag, age0, uniform, o, out_f32, fast)


def stuck(KernelParams params, Py_ssize_t first, Py_ssize_t n, object addresses=None, int n_threads=1):
    """Stuck-at states (int8: 0 healthy, 1 at g_min, 2 at g_max) of the cells at
    ``addresses`` (int64 array) or, without, of cells ``first .. first + n - 1``: a pure
    function of the card's fault probabilities, the bench's fault key and the address."""
    cdef const am_params* p = &params.p
    cdef const int64_t* ad = NULL
    cdef int64_t[::1] a_mv
    if addresses is not None:
        a_mv = addresses
        n = a_mv.shape[0]
        if n:
            ad = &a_mv[0]
    out = np.zeros(n, dtype=np.int8)
    if n == 0 or not p.faults_on:
        return out
    cdef int8_t[::1] o = out
    cdef Py_ssize_t chunk = WORK_CHUNK * 8
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t c, lo
    with nogil:
        for c in prange(n_chunks, schedule="static", num_threads=max(n_threads, 1)):
            lo = c * chunk
            am_stuck_cells(p, first + lo, (ad + lo) if ad != NULL else NULL, min(n, lo + chunk) - lo, &o[lo])
    return out


def max_threads():
    """Threads OpenMP would use by default (1 without OpenMP)."""
    return am_max_threads()
