# cython: language_level=3
# Cython's view of the cell model's C interface (ext/am_kernels.h): its table sizes, the
# parameter struct am_params (the fields Cython code sets), the random stream, the elementary
# functions and the program/read/stuck kernels. The only place they are declared for Cython:
# _kernels.pyx and _testing.pyx cimport them from here. A pure extern declaration file: it has
# no module of its own at run time (op_key below is inline, compiled into each user).

from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t, uint64_t

cdef extern from "am_kernels.h" nogil:
    enum:
        AM_MAXC
        AM_MAXT
        AM_MAXK
        AM_MAXN
        AM_MAXH
    ctypedef struct am_key:
        uint32_t k0
        uint32_t k1
        uint32_t c3
    ctypedef struct am_params:
        double g_min, g_max, inv_g_max, clip_lo, clip_hi, x_floor
        double prog_scale
        double prog_c[AM_MAXC]
        int drift_on
        double t0, mu_slope, mu_icpt, mu_min, mu_max, sg_slope, sg_icpt, sg_min, sg_max
        double mu_lxb, sg_lxb
        double mu_hc[AM_MAXH]
        double sg_hc[AM_MAXH]
        int nu_table, nu_n, nu_simple
        double nu_x[AM_MAXN]
        double nu_mu[AM_MAXN]
        double nu_sg[AM_MAXN]
        int read_on, q_form, read_log10
        double q_coef, q_exp, q_max, t_read, t0_read
        double q_slope, q_icpt, q_lo, q_hi, q_lxb, ln_uS, inv_ln10, rn_floor
        double q_hc[AM_MAXH]
        int relax_on, relax_table, n_relax_t, n_relax_c
        double relax_scale
        double relax_lnt[AM_MAXT]
        double relax_c[AM_MAXT * AM_MAXC]
        double relax_x[AM_MAXC]
        int relax_add, relax_mean_on
        double relax_m[AM_MAXT * AM_MAXC]
        int emp_on, emp_n_levels, emp_n_probs
        const double* emp_levels
        const double* emp_probs
        const double* emp_q
        int pr_on, pr_n_levels, pr_n_probs
        const double* pr_lo
        const double* pr_hi
        const double* pr_cumw
        const double* pr_inv_log1mp
        const double* pr_off
        const double* pr_probs
        const double* pr_q
        int faults_on
        double p_stuck_lo, p_stuck_lohi
        am_key fault_key
        double q_stuck[3]
    ctypedef struct am_verify:
        int max_pulses
        int card
        double tol_abs, tol_rel, read_factor
    ctypedef struct am_fparams:
        pass
    ctypedef struct am_state:
        void* g_eff
        void* g_prog
        void* nu
        void* z_relax
        void* q_read
        int f32
    double am_log(double x)
    double am_exp(double x)
    double am_lnx(const am_params* p, double x)
    double am_q(const am_params* p, double x, double lx)
    double am_uniform(uint64_t bits)
    double am_normal_draw(am_key key, uint64_t cell, uint32_t d)
    double am_read_normal(am_key key, uint64_t pos)
    void am_sincos2pi(double u, double* s, double* c)
    uint64_t am_draw(am_key key, uint64_t cell, uint32_t d)
    void am_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                   uint64_t* lo_word, uint64_t* hi_word)
    void am_program_cells(const am_params* p, const am_verify* vf, am_key key, int64_t first, int64_t lo, int64_t hi,
                          const double* g_target, const int8_t* stuck, am_state s, int32_t* pulses, int8_t* success)
    void am_program_fast(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi, const double* g_target,
                         const int8_t* stuck, am_state s)
    void am_read_cells(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi, am_state s, const double* age,
                       int uniform, void* out, int out_f32)
    void am_read_fast(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi, am_state s, double age,
                      void* out, int out_f32)
    void am_stuck_cells(const am_params* p, int64_t first, const int64_t* addresses, int64_t n, int8_t* out)
    void am_fparams_of(const am_params* p, am_fparams* f)
    void am_program_fast_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                             int64_t hi, const double* g_target, const int8_t* stuck, am_state s)
    void am_read_cells_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                           int64_t hi, am_state s, const double* age, int uniform, float* out)
    void am_read_fast_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                          int64_t hi, am_state s, double age, float* out)
    float am_normal_draw_f(am_key key, uint64_t cell, uint32_t d)
    float am_read_normal_f(am_key key, uint64_t pos)
    float am_logf(float x)
    float am_expf(float x)
    void am_sincos2pif(float u, float* s, float* c)


cdef inline am_key op_key(tuple key) except *:
    """An operation's key (three 32-bit words) as the C struct."""
    cdef am_key k
    if len(key) != 3:
        raise ValueError("an operation key is three 32-bit words")
    k.k0, k.k1, k.c3 = key
    return k
