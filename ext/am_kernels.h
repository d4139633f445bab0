/* The cell model of analogmem in C: random stream, elementary functions, program and read.
 *
 * Included by ext/_kernels.pyx (the thin Cython face: parameter packing, array checks,
 * OpenMP over chunks). Everything here is a pure function of its arguments.
 *
 * Random stream (counter-based, Philox4x32-10 of Salmon et al., SC'11, as in Random123):
 * draw d (0, 1, 2, ...) of the cell at op-local position i of an operation with key
 * (k0, k1, c3) is the 64-bit word (d & 1) of Philox4x32-10(counter = (i mod 2^32, i >> 32,
 * d >> 1, c3), key = (k0, k1)) (words little-endian: w0 | w1 << 32, w2 | w3 << 32). No
 * state is carried from cell to cell, so a result never depends on chunking or on threads.
 *   uniform: (floor(bits / 2^12) + 0.5) / 2^52, in (0, 1), exact in double;
 *   normal:  draws 2j and 2j + 1 as normals are the Box-Muller pair of the two uniforms of
 *            block j: r cos(2 pi u2), r sin(2 pi u2) with r = sqrt(-2 ln u1) (tails to
 *            8.57 sigma); a read draws one normal per cell, the cells at positions 2j and
 *            2j + 1 sharing the pair of counter j (block 0).
 *
 * Elementary functions: am_log and am_exp are fdlibm's algorithms written without
 * branches (so loops over them vectorise), accurate to about 1 ulp; am_log needs a
 * positive normal argument, am_exp clamps to [-708, 709]. The build turns floating-point
 * contraction off (-ffp-contract=off), so every clone below (AVX-512, AVX2, baseline)
 * gives the same bits.
 *
 * The per-cell model is written once, as small inline functions; the vectorised block
 * kernels (common cards: polynomial write noise, drift, read noise, polynomial
 * relaxation, one age for all cells) and the general per-cell kernels (program-and-verify,
 * empirical channels, tabulated relaxation, per-cell ages) call the same functions in the
 * same order, so both give identical bits (tests/test_kernels.py checks this).
 */
#ifndef AM_KERNELS_H
#define AM_KERNELS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define AM_MAXC 8  /* polynomial coefficients / table knots, at most */
#define AM_MAXT 16 /* published relaxation times, at most */
#define AM_MAXK 4  /* pulse-response mixture components per level, at most */
#define AM_MAXN 32 /* knots of a tabulated drift exponent nu(x), at most */
#define AM_MAXH 4  /* coefficients of the upper branch of a piecewise law (cubic), at most */
#define AM_BLOCK 256

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(AM_NO_CLONES)
#define AM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AM_CLONES
#endif

typedef struct {
    uint32_t k0, k1, c3;
} am_key;

/* A card's parameters, packed once per bench by _kernels.KernelParams (ext/_kernels.pyx) from a
   CardParams (analogmem/emulator/card_params.py). Cython sees this struct through its one
   declaration in ext/am_kernels.pxd: a field added here that Cython code sets goes there too. */
typedef struct {
    double g_min, g_max, inv_g_max, clip_lo, clip_hi, x_floor;
    /* programming noise: scale * sum_k prog_c[k] x^k (S); zero-padded to AM_MAXC */
    double prog_scale;
    double prog_c[AM_MAXC];
    /* drift: mu and sigma of nu are clip(slope ln x + icpt, min, max) below x_break (ln: *_lxb, +inf: always)
       and the polynomial *_hc in x from x_break on; with nu_table, linear in x between knots nu_x (held) */
    int drift_on;
    double t0, mu_slope, mu_icpt, mu_min, mu_max, sg_slope, sg_icpt, sg_min, sg_max;
    double mu_lxb, sg_lxb, mu_hc[AM_MAXH], sg_hc[AM_MAXH];
    int nu_table, nu_n, nu_simple; /* nu_simple: one clipped log-linear branch each (no table, no break) */
    double nu_x[AM_MAXN], nu_mu[AM_MAXN], nu_sg[AM_MAXN];
    /* read noise: Q_s form q_form 0: min(q_coef x^-q_exp, q_max); 1: piecewise (as mu, fields q_*);
       2: the constant q_coef. read_log10: sigma_R = q log10(|g| / 1 uS) F (else |g| q F) */
    int read_on, q_form, read_log10;
    double q_coef, q_exp, q_max, t_read, t0_read;
    double q_slope, q_icpt, q_lo, q_hi, q_lxb, q_hc[AM_MAXH], ln_uS, inv_ln10, rn_floor;
    /* relaxation: rows of relax_c are polynomials (zero-padded) or, with relax_table,
       sigma (uS at g_ref) at the knots relax_x, linear in x */
    int relax_on, relax_table, n_relax_t, n_relax_c;
    double relax_scale;
    double relax_lnt[AM_MAXT];
    double relax_c[AM_MAXT * AM_MAXC];
    /* relax_add: sigma is the relaxation spread itself (not a total including sigma_P);
       relax_mean_on: tabulated rows relax_m (uS at g_ref, like relax_c) shift the mean */
    int relax_add, relax_mean_on;
    double relax_m[AM_MAXT * AM_MAXC];
    double relax_x[AM_MAXC];
    /* empirical write channel (pointers into arrays the caller keeps alive) */
    int emp_on, emp_n_levels, emp_n_probs;
    const double *emp_levels, *emp_probs, *emp_q;
    /* pulse-response write-verify model */
    int pr_on, pr_n_levels, pr_n_probs;
    const double *pr_lo, *pr_hi, *pr_cumw, *pr_inv_log1mp, *pr_off, *pr_probs, *pr_q;
    /* stuck-at faults: a pure function of (fault key, cell address) */
    int faults_on;
    double p_stuck_lo, p_stuck_lohi;
    am_key fault_key;
    /* derived: Q_s of a cell stuck low / high (0 without read noise) */
    double q_stuck[3];
} am_params;

typedef struct {
    int max_pulses;     /* 0: single-shot write */
    int card;           /* 1: the card's windows and pulse-response model */
    double tol_abs, tol_rel;
    double read_factor; /* sqrt(ln((t0 + t_read) / (2 t_read))): read noise right after a pulse */
} am_verify;

/* ------------------------------------------------------------------ bits */
static inline uint64_t am_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double am_from_bits(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }
static inline double am_max(double a, double b) { return a > b ? a : b; }
static inline double am_min(double a, double b) { return a < b ? a : b; }
static inline double am_clip(double v, double lo, double hi) { return am_min(am_max(v, lo), hi); }

/* |k| < 2^51 as a double, with integer operations only (vectorises without AVX-512DQ) */
static inline double am_i64_to_double(int64_t k) {
    return am_from_bits((uint64_t)(0x4338000000000000LL + k)) - 6755399441055744.0;
}

/* ------------------------------------------------------------------ Philox4x32-10 */
/* The 32-bit words are carried in 64-bit variables: vectorised, each round is then one
   32x32->64-bit multiply per product (vpmuludq) with no lane shuffles. */
static inline void am_philox(uint32_t c0_, uint32_t c1_, uint32_t c2_, uint32_t c3_, uint32_t k0_, uint32_t k1_,
                             uint64_t* lo_word, uint64_t* hi_word) {
    const uint64_t m32 = 0xffffffffULL;
    uint64_t c0 = c0_, c1 = c1_, c2 = c2_, c3 = c3_, k0 = k0_, k1 = k1_;
    int r;
    for (r = 0; r < 10; r++) {
        uint64_t p0 = (c0 & m32) * 0xD2511F53ULL;
        uint64_t p1 = (c2 & m32) * 0xCD9E8D57ULL;
        c0 = (p1 >> 32) ^ c1 ^ k0;
        c1 = p1 & m32;
        c2 = (p0 >> 32) ^ c3 ^ k1;
        c3 = p0 & m32;
        k0 = (k0 + 0x9E3779B9ULL) & m32;
        k1 = (k1 + 0xBB67AE85ULL) & m32;
    }
    *lo_word = c0 | c1 << 32; /* output words 0, 1 */
    *hi_word = c2 | c3 << 32; /* output words 2, 3 */
}

/* the Philox block `blk` of the cell at op-local position `cell`: draws 2 blk and 2 blk + 1 */
static inline void am_block(am_key key, uint64_t cell, uint32_t blk, uint64_t* a, uint64_t* b) {
    am_philox((uint32_t)cell, (uint32_t)(cell >> 32), blk, key.c3, key.k0, key.k1, a, b);
}

/* draw d of the cell at op-local position `cell` (64 bits) */
static inline uint64_t am_draw(am_key key, uint64_t cell, uint32_t d) {
    uint64_t a, b;
    am_block(key, cell, d >> 1, &a, &b);
    return (d & 1u) ? b : a;
}

/* Blocks `blk` of the cells at positions cell0 .. cell0 + n - 1, into a[] and b[]: the hot
   loop of every kernel, written with intrinsics (a 32x32->64-bit vpmuludq per product,
   four vectors in flight) where the CPU has AVX-512 or AVX2, chosen at run time. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(AM_NO_CLONES)
#include <immintrin.h>
#define AM_PHILOX_SIMD 1

#define AM_PHILOX_ROUND(V, MUL, SRL, AND, XOR3, c0, c1, c2, c3, K0, K1)                                         \
    do {                                                                                                        \
        V p0_ = MUL(c0, M0), p1_ = MUL(c2, M1);                                                                 \
        c0 = XOR3(SRL(p1_, 32), c1, K0);                                                                        \
        c1 = AND(p1_, m32);                                                                                     \
        c2 = XOR3(SRL(p0_, 32), c3, K1);                                                                        \
        c3 = AND(p0_, m32);                                                                                     \
    } while (0)

#define AM_XOR3_512(a, b, c) _mm512_ternarylogic_epi64(a, b, c, 0x96)
#define AM_XOR3_256(a, b, c) _mm256_xor_si256(_mm256_xor_si256(a, b), c)
#define AM_STORE_512(p, v) _mm512_storeu_si512((void*)(p), v)
#define AM_STORE_256(p, v) _mm256_storeu_si256((__m256i*)(p), v)

/* One definition for both instruction sets: V holds L lanes of 64 bits (a 32-bit word each). */
#define AM_DEFINE_BLOCKS(NAME, TARGET, V, L, SET1, LANES, ADD, AND, SRLI, SLLI, OR, MUL, XOR3, STORE)            \
    __attribute__((target(TARGET))) static void NAME(am_key key, int64_t cell0, int n, uint32_t blk, uint64_t* a, \
                                                     uint64_t* b) {                                            \
        const V M0 = SET1(0xD2511F53LL), M1 = SET1(0xCD9E8D57LL), m32 = SET1(0xffffffffLL), lane = LANES;      \
        const V c2i = SET1(blk), c3i = SET1(key.c3);                                                           \
        V K0[10], K1[10];                                                                                      \
        uint32_t k0 = key.k0, k1 = key.k1;                                                                     \
        int r, i, u;                                                                                           \
        for (r = 0; r < 10; r++, k0 += 0x9E3779B9u, k1 += 0xBB67AE85u) {                                       \
            K0[r] = SET1(k0);                                                                                  \
            K1[r] = SET1(k1);                                                                                  \
        }                                                                                                      \
        for (i = 0; i + 4 * L <= n; i += 4 * L) {                                                              \
            V c0[4], c1[4], c2[4], c3[4];                                                                      \
            for (u = 0; u < 4; u++) {                                                                          \
                V cell = ADD(SET1(cell0 + i + L * u), lane);                                                   \
                c0[u] = AND(cell, m32);                                                                        \
                c1[u] = SRLI(cell, 32);                                                                        \
                c2[u] = c2i;                                                                                   \
                c3[u] = c3i;                                                                                   \
            }                                                                                                  \
            for (r = 0; r < 10; r++)                                                                           \
                for (u = 0; u < 4; u++)                                                                        \
                    AM_PHILOX_ROUND(V, MUL, SRLI, AND, XOR3, c0[u], c1[u], c2[u], c3[u], K0[r], K1[r]);        \
            for (u = 0; u < 4; u++) {                                                                          \
                STORE(a + i + L * u, OR(c0[u], SLLI(c1[u], 32)));                                              \
                STORE(b + i + L * u, OR(c2[u], SLLI(c3[u], 32)));                                              \
            }                                                                                                  \
        }                                                                                                      \
        for (; i < n; i++) am_block(key, (uint64_t)(cell0 + i), blk, &a[i], &b[i]);                            \
    }

AM_DEFINE_BLOCKS(am_blocks_avx512, "avx512f", __m512i, 8, _mm512_set1_epi64, _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                 _mm512_add_epi64, _mm512_and_si512, _mm512_srli_epi64, _mm512_slli_epi64, _mm512_or_si512,
                 _mm512_mul_epu32, AM_XOR3_512, AM_STORE_512)
AM_DEFINE_BLOCKS(am_blocks_avx2, "avx2", __m256i, 4, _mm256_set1_epi64x, _mm256_set_epi64x(3, 2, 1, 0),
                 _mm256_add_epi64, _mm256_and_si256, _mm256_srli_epi64, _mm256_slli_epi64, _mm256_or_si256,
                 _mm256_mul_epu32, AM_XOR3_256, AM_STORE_256)
#endif

static void am_blocks(am_key key, int64_t cell0, int n, uint32_t blk, uint64_t* a, uint64_t* b) {
    int i;
#ifdef AM_PHILOX_SIMD
    static int isa = -1; /* 2: AVX-512F, 1: AVX2, 0: neither (a benign race: every thread finds the same) */
    if (isa < 0) isa = __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") ? 1 : 0);
    if (isa == 2) { am_blocks_avx512(key, cell0, n, blk, a, b); return; }
    if (isa == 1) { am_blocks_avx2(key, cell0, n, blk, a, b); return; }
#endif
    for (i = 0; i < n; i++) am_block(key, (uint64_t)(cell0 + i), blk, &a[i], &b[i]);
}

/* ------------------------------------------------------------------ elementary functions */
#define AM_LN2_HI 6.93147180369123816490e-01
#define AM_LN2_LO 1.90821492927058770002e-10

/* natural log of a positive normal double (fdlibm e_log.c without its special cases) */
static inline double am_log(double x) {
    uint64_t ix = am_bits(x) + (0x3ff0000000000000ULL - 0x3fe6a09e00000000ULL);
    int64_t k = (int64_t)(ix >> 52) - 0x3ff;
    double f = am_from_bits((ix & 0x000fffffffffffffULL) + 0x3fe6a09e00000000ULL) - 1.0;
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01
                     + w * 1.479819860511658591e-01)));
    double R = t2 + t1;
    double dk = am_i64_to_double(k);
    return s * (hfsq + R) + dk * AM_LN2_LO - hfsq + f + dk * AM_LN2_HI;
}

/* e^x for x clamped to [-708, 709]: x = k ln2 + r, |r| <= ln2/2, Taylor to r^13 */
static inline double am_exp(double x) {
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double t, k, r, e;
    int64_t ki;
    x = am_clip(x, -708.0, 709.0);
    t = x * 1.44269504088896338700e+00 + shifter;
    k = t - shifter;
    ki = (int64_t)(am_bits(t) - am_bits(shifter));
    r = (x - k * AM_LN2_HI) - k * AM_LN2_LO;
    e = 1.6059043836821613e-10;                 /* 1/13! */
    e = e * r + 2.08767569878680990e-09;        /* 1/12! */
    e = e * r + 2.50521083854417188e-08;        /* 1/11! */
    e = e * r + 2.75573192239858907e-07;        /* 1/10! */
    e = e * r + 2.75573192239858907e-06;        /* 1/9! */
    e = e * r + 2.48015873015873016e-05;        /* 1/8! */
    e = e * r + 1.98412698412698413e-04;        /* 1/7! */
    e = e * r + 1.38888888888888889e-03;        /* 1/6! */
    e = e * r + 8.33333333333333333e-03;        /* 1/5! */
    e = e * r + 4.16666666666666667e-02;        /* 1/4! */
    e = e * r + 1.66666666666666667e-01;        /* 1/3! */
    e = e * r + 0.5;
    e = e * r + 1.0;
    e = e * r + 1.0;
    return e * am_from_bits((uint64_t)(ki + 1023) << 52);
}

/* ------------------------------------------------------------------ uniforms and normals */
static inline double am_uniform(uint64_t bits) {
    double k = am_from_bits(0x4330000000000000ULL | (bits >> 12)) - 4503599627370496.0; /* exact */
    return (k + 0.5) * 2.220446049250313080847e-16;                                     /* 2^-52 */
}

/* sin and cos of 2 pi u for u in (0, 1): u = (q + g)/4 with q = round(4u), |g| <= 1/2
   (both exact), x = (pi/2) g in [-pi/4, pi/4], Taylor polynomials, quadrant rotation */
static inline void am_sincos2pi(double u, double* s_out, double* c_out) {
    const double shifter = 6755399441055744.0;
    double t = 4.0 * u, k = (t + shifter) - shifter, g = t - k, x = g * 1.57079632679489661923, x2 = x * x;
    int64_t q = (int64_t)(am_bits(t + shifter) - am_bits(shifter)) & 3;
    double s = -7.6471637318198164759e-13;      /* -1/15! */
    double c = 4.7794773323873852974e-14;       /* 1/16! */
    s = s * x2 + 1.6059043836821614599e-10;     /* 1/13! */
    s = s * x2 - 2.5052108385441718775e-08;     /* -1/11! */
    s = s * x2 + 2.7557319223985890653e-06;     /* 1/9! */
    s = s * x2 - 1.9841269841269841270e-04;     /* -1/7! */
    s = s * x2 + 8.3333333333333333333e-03;     /* 1/5! */
    s = s * x2 - 1.6666666666666666667e-01;     /* -1/3! */
    s = x + x * x2 * s;
    c = c * x2 - 1.1470745597729724714e-11;     /* -1/14! */
    c = c * x2 + 2.0876756987868098979e-09;     /* 1/12! */
    c = c * x2 - 2.7557319223985890653e-07;     /* -1/10! */
    c = c * x2 + 2.4801587301587301587e-05;     /* 1/8! */
    c = c * x2 - 1.3888888888888888889e-03;     /* -1/6! */
    c = c * x2 + 4.1666666666666666667e-02;     /* 1/4! */
    c = c * x2 - 0.5;
    c = 1.0 + x2 * c;
    /* rotate by q quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s) */
    *s_out = q == 0 ? s : (q == 1 ? c : (q == 2 ? -s : -c));
    *c_out = q == 0 ? c : (q == 1 ? -s : (q == 2 ? -c : s));
}

/* Box-Muller (1958) on two 64-bit draws: r = sqrt(-2 ln u1), z0 = r cos 2 pi u2, z1 = r sin 2 pi u2 */
static inline void am_box_muller(uint64_t a, uint64_t b, double* z0, double* z1) {
    double r = sqrt(-2.0 * am_log(am_uniform(a))), s, c;
    am_sincos2pi(am_uniform(b), &s, &c);
    *z0 = r * c;
    *z1 = r * s;
}

/* draw d of a cell as a standard normal: component d & 1 of the Box-Muller pair of block d >> 1 */
static inline double am_normal_draw(am_key key, uint64_t cell, uint32_t d) {
    uint64_t a, b;
    double z0, z1;
    am_block(key, cell, d >> 1, &a, &b);
    am_box_muller(a, b, &z0, &z1);
    return (d & 1u) ? z1 : z0;
}

/* a draw of Geometric(p) (support 1, 2, ...) by inversion; inv = 1 / log1p(-p) */
static inline int64_t am_geometric(uint64_t bits, double inv) {
    double v = ceil(am_log(am_uniform(bits)) * inv);
    return (int64_t)am_clip(v, 1.0, 1e9);
}

/* stuck-at state of the cell at address `cell`: 0 healthy, 1 at g_min, 2 at g_max */
static inline int8_t am_stuck(const am_params* p, uint64_t cell) {
    double u = am_uniform(am_draw(p->fault_key, cell, 0));
    return (int8_t)(u < p->p_stuck_lo ? 1 : (u < p->p_stuck_lohi ? 2 : 0));
}

/* ------------------------------------------------------------------ the cell model
 * Written once and instantiated for double (am_params, suffix none) and float (am_fparams,
 * suffix _f), so both precisions apply the same operations in the same order. */
#define AM_DEFINE_MODEL(T, P, SUF, LOG, EXP, SQRT, FABS, MAX, MIN, CLIP, ZERO)                                     \
    static inline T am_poly8##SUF(const T* c, T x) {                                                              \
        T acc = ZERO;                                                                                             \
        int k;                                                                                                    \
        for (k = AM_MAXC - 1; k >= 0; k--) acc = acc * x + c[k];                                                  \
        return acc;                                                                                               \
    }                                                                                                             \
    static inline T am_lnx##SUF(const P* p, T x) { return LOG(MAX(x, p->x_floor)); }                             \
    static inline T am_sigma_prog##SUF(const P* p, T x) { return p->prog_scale * am_poly8##SUF(p->prog_c, x); } \
    static inline T am_write_normal##SUF(const P* p, T gt, T x, T z) {                                           \
        return CLIP(gt + am_sigma_prog##SUF(p, x) * z, p->clip_lo, p->clip_hi);                                   \
    }                                                                                                             \
    /* clip(slope ln x + icpt, lo, hi) below the break (ln x < lxb), the cubic hc in x from it on */             \
    static inline T am_piece##SUF(T lx, T x, T slope, T icpt, T lo, T hi, T lxb, const T* hc) {                 \
        if (lx < lxb) return CLIP(slope * lx + icpt, lo, hi);                                                     \
        return ((hc[3] * x + hc[2]) * x + hc[1]) * x + hc[0];                                                     \
    }                                                                                                             \
    /* ys linear in x between knots xs (n >= 2, increasing), held outside */                                      \
    static inline T am_lerp##SUF(const T* xs, const T* ys, int n, T x) {                                         \
        int k = 0;                                                                                                \
        if (x <= xs[0]) return ys[0];                                                                             \
        if (x >= xs[n - 1]) return ys[n - 1];                                                                     \
        while (k < n - 2 && x >= xs[k + 1]) k++;                                                                  \
        return ys[k] + (x - xs[k]) / (xs[k + 1] - xs[k]) * (ys[k + 1] - ys[k]);                                  \
    }                                                                                                             \
    /* the one-branch laws (every card without breaks or tables): branch-free, so block loops vectorise;  \
       equal, bit for bit, to am_nu / am_q on such cards */                                                       \
    static inline T am_nu_simple##SUF(const P* p, T lx, T z) {                                                    \
        T mu = CLIP(p->mu_slope * lx + p->mu_icpt, p->mu_min, p->mu_max);                                         \
        T sg = CLIP(p->sg_slope * lx + p->sg_icpt, p->sg_min, p->sg_max);                                         \
        return FABS(mu + sg * z);                                                                                 \
    }                                                                                                             \
    static inline T am_q_pow##SUF(const P* p, T lx) { return MIN(p->q_coef * EXP(-p->q_exp * lx), p->q_max); }   \
    static inline T am_read_noise_rel##SUF(T g, T q, T F, T z) { return g + FABS(g) * q * F * z; }              \
    static inline T am_nu##SUF(const P* p, T x, T lx, T z) {                                                      \
        T mu, sg;                                                                                                 \
        if (p->nu_table) {                                                                                        \
            mu = am_lerp##SUF(p->nu_x, p->nu_mu, p->nu_n, x);                                                     \
            sg = am_lerp##SUF(p->nu_x, p->nu_sg, p->nu_n, x);                                                     \
        } else {                                                                                                  \
            mu = am_piece##SUF(lx, x, p->mu_slope, p->mu_icpt, p->mu_min, p->mu_max, p->mu_lxb, p->mu_hc);        \
            sg = am_piece##SUF(lx, x, p->sg_slope, p->sg_icpt, p->sg_min, p->sg_max, p->sg_lxb, p->sg_hc);        \
        }                                                                                                         \
        return FABS(mu + sg * z);                                                                                 \
    }                                                                                                             \
    static inline T am_q##SUF(const P* p, T x, T lx) {                                                            \
        if (p->q_form == 1) return am_piece##SUF(lx, x, p->q_slope, p->q_icpt, p->q_lo, p->q_hi, p->q_lxb, p->q_hc); \
        if (p->q_form == 2) return p->q_coef;                                                                     \
        return MIN(p->q_coef * EXP(-p->q_exp * lx), p->q_max);                                                    \
    }                                                                                                             \
    /* sqrt(max(sigma_tot(x, t)^2 - sigma_P(x)^2, 0)) (S) in segment (a, w) of polynomial rows */                 \
    static inline T am_sigma_relax_poly##SUF(const P* p, T x, int a, T w, int two) {                              \
        T sa = am_poly8##SUF(&p->relax_c[a * AM_MAXC], x), st, sp;                                                \
        if (two) sa = sa + w * (am_poly8##SUF(&p->relax_c[(a + 1) * AM_MAXC], x) - sa);                           \
        st = p->relax_scale * sa;                                                                                 \
        sp = am_sigma_prog##SUF(p, x);                                                                            \
        return SQRT(MAX(st * st - sp * sp, ZERO));                                                                \
    }                                                                                                             \
    static inline T am_drifted##SUF(T g, T nu, T L) { return g * EXP(-nu * L); }                                 \
    static inline T am_read_noise##SUF(const P* p, T g, T q, T F, T z) {                                         \
        if (p->read_log10) return g + q * ((LOG(MAX(FABS(g), p->rn_floor)) - p->ln_uS) * p->inv_ln10) * F * z;  \
        return g + FABS(g) * q * F * z;                                                                           \
    }

AM_DEFINE_MODEL(double, am_params, , am_log, am_exp, sqrt, fabs, am_max, am_min, am_clip, 0.0)

/* time factors of a read `age` seconds after programming */
static inline double am_drift_L(const am_params* p, double age) { return am_log((age + p->t0) / p->t0); }
static inline double am_read_F(const am_params* p, double age) {
    return sqrt(am_max(am_log((age + p->t0_read + p->t_read) / (2.0 * p->t_read)), 0.0));
}

/* segment [a, a+1] of the published relaxation times and weight w of a+1 (linear in ln t, held) */
static inline void am_relax_segment(const am_params* p, double age, int* a, double* w) {
    int k = 0;
    double lt;
    if (p->n_relax_t == 1) { *a = 0; *w = 0.0; return; }
    lt = am_log(am_max(age, 1e-300));
    while (k < p->n_relax_t - 2 && lt >= p->relax_lnt[k + 1]) k++;
    *a = k;
    *w = am_clip((lt - p->relax_lnt[k]) / (p->relax_lnt[k + 1] - p->relax_lnt[k]), 0.0, 1.0);
}

static inline int64_t am_search(const double* xs, int64_t n, double x) {
    /* largest k in [0, n-2] with xs[k] <= x (xs strictly increasing, n >= 2) */
    int64_t lo = 0, hi = n - 1, mid;
    while (hi - lo > 1) {
        mid = (lo + hi) >> 1;
        if (xs[mid] <= x) lo = mid; else hi = mid;
    }
    return lo;
}

static inline double am_table_rows(const am_params* p, const double* rows, int row, double x) {
    const double* r = &rows[row * AM_MAXC];
    int64_t k;
    if (x <= p->relax_x[0]) return r[0];
    if (x >= p->relax_x[p->n_relax_c - 1]) return r[p->n_relax_c - 1];
    k = am_search(p->relax_x, p->n_relax_c, x);
    return r[k] + (x - p->relax_x[k]) / (p->relax_x[k + 1] - p->relax_x[k]) * (r[k + 1] - r[k]);
}

static inline double am_table_x(const am_params* p, int row, double x) { return am_table_rows(p, p->relax_c, row, x); }

static inline double am_sigma_relax(const am_params* p, double x, int a, double w) {
    double sa, st, sp;
    if (!p->relax_table) return am_sigma_relax_poly(p, x, a, w, p->n_relax_t > 1);
    sa = am_table_x(p, a, x);
    if (p->n_relax_t > 1) sa = sa + w * (am_table_x(p, a + 1, x) - sa);
    st = p->relax_scale * sa;
    if (p->relax_add) return st;
    sp = am_sigma_prog(p, x);
    return sqrt(am_max(st * st - sp * sp, 0.0));
}

/* mean shift (S) of tabulated relaxation rows relax_m at x in segment (a, w); 0 without */
static inline double am_relax_mean(const am_params* p, double x, int a, double w) {
    double ma;
    if (!p->relax_mean_on) return 0.0;
    ma = am_table_rows(p, p->relax_m, a, x);
    if (p->n_relax_t > 1) ma = ma + w * (am_table_rows(p, p->relax_m, a + 1, x) - ma);
    return p->relax_scale * ma;
}

/* ln(g/S) of the empirical channel at write input x_in and probability u */
static inline double am_emp_level(const am_params* p, int64_t k, int64_t j, double t) {
    const double* row = p->emp_q + k * p->emp_n_probs;
    return row[j] + t * (row[j + 1] - row[j]);
}

static inline double am_emp_log_g(const am_params* p, double x_in, double u) {
    int64_t j = am_search(p->emp_probs, p->emp_n_probs, u), k;
    double t = (u - p->emp_probs[j]) / (p->emp_probs[j + 1] - p->emp_probs[j]), w, a;
    if (p->emp_n_levels == 1) return am_emp_level(p, 0, j, t);
    k = am_search(p->emp_levels, p->emp_n_levels, x_in);
    w = am_clip((x_in - p->emp_levels[k]) / (p->emp_levels[k + 1] - p->emp_levels[k]), 0.0, 1.0);
    a = am_emp_level(p, k, j, t);
    return a + w * (am_emp_level(p, k + 1, j, t) - a);
}

/* Draw indices: the normal of index d is one component of the Box-Muller pair of the words of
   indices d & ~1 and d | 1, so a uniform must never take a word of a pair a normal uses (the
   normal would then depend on it: e.g. a cell's drift on its empirical write). A uniform takes
   a pair of its own: the index rounded up to even, and the next draw after the pair. */
static inline uint32_t am_uniform_index(uint32_t* d) {
    uint32_t i = (*d + 1u) & ~1u;
    *d = i + 2u;
    return i;
}

/* one write pulse from the next draw (*d advanced): the conductance (S) a cell with input gt takes */
static inline double am_write(const am_params* p, am_key key, uint64_t cell, uint32_t* d, double gt, double x) {
    if (p->emp_on)
        return am_clip(am_exp(am_emp_log_g(p, gt, am_uniform(am_draw(key, cell, am_uniform_index(d))))),
                       p->clip_lo, p->clip_hi);
    return am_write_normal(p, gt, x, am_normal_draw(key, cell, (*d)++));
}

static inline double am_stuck_value(const am_params* p, int8_t st) { return st == 1 ? p->g_min : p->g_max; }

/* ------------------------------------------------------------------ state stores */
/* Per-cell state lives in float64 or float32 arrays (f32 != 0); NULL: the card has no such array. */
static inline void am_store(void* dst, int f32, int64_t i, double v) {
    if (f32) ((float*)dst)[i] = (float)v; else ((double*)dst)[i] = v;
}
static inline double am_load(const void* src, int f32, int64_t i) {
    return f32 ? (double)((const float*)src)[i] : ((const double*)src)[i];
}

typedef struct {
    void *g_eff, *g_prog, *nu, *z_relax, *q_read;
    int f32;
} am_state;

/* ------------------------------------------------------------------ program: one cell, any path */
static int64_t am_verify_tolerance(const am_params* p, const am_verify* vf, am_key key, uint64_t cell, uint32_t* d,
                                   double gt, double x, double q, int8_t st, int8_t* success, double* v_out) {
    double h = vf->tol_abs + vf->tol_rel * fabs(gt), r, v = am_write(p, key, cell, d, gt, x);
    int64_t n_pulses = 1;
    int ok;
    while (1) {
        r = st == 0 ? v : am_stuck_value(p, st);
        if (p->read_on) r = am_read_noise(p, r, q, vf->read_factor, am_normal_draw(key, cell, (*d)++));
        ok = gt - h <= r && r <= gt + h;
        if (ok || n_pulses >= vf->max_pulses) break;
        v = am_write(p, key, cell, d, gt, x);
        n_pulses++;
    }
    *success = (int8_t)ok;
    *v_out = v;
    return n_pulses;
}

static int64_t am_verify_card(const am_params* p, const am_verify* vf, am_key key, uint64_t cell, uint32_t* d,
                              double gt, double x, int8_t st, int8_t* success, double* v_out) {
    /* the cell's response class k ~ weights (one uniform); the pulses it needs T = offset +
       Geometric(p_k) - 1 (one draw); T <= max_pulses: success after T pulses, final value from
       the level's verified-value quantiles (one uniform); else failure after max_pulses, final
       value a single-shot write. A stuck cell draws the same numbers and fails. */
    int64_t L = 0, k = 0, j, n_pulses;
    double u, t, lq;
    for (L = 0; L < p->pr_n_levels; L++)
        if (p->pr_lo[L] <= gt && gt <= p->pr_hi[L]) break;
    if (L == p->pr_n_levels) L = 0;
    u = am_uniform(am_draw(key, cell, am_uniform_index(d)));
    while (k < AM_MAXK - 1 && u >= p->pr_cumw[L * AM_MAXK + k]) k++;
    n_pulses = (int64_t)p->pr_off[L] + am_geometric(am_draw(key, cell, am_uniform_index(d)), p->pr_inv_log1mp[L * AM_MAXK + k]) - 1;
    if (n_pulses <= vf->max_pulses) {
        u = am_uniform(am_draw(key, cell, am_uniform_index(d)));
        j = am_search(p->pr_probs, p->pr_n_probs, u);
        t = (u - p->pr_probs[j]) / (p->pr_probs[j + 1] - p->pr_probs[j]);
        lq = p->pr_q[L * p->pr_n_probs + j];
        lq = lq + t * (p->pr_q[L * p->pr_n_probs + j + 1] - lq);
        *success = st == 0;
        *v_out = am_clip(am_exp(lq), p->clip_lo, p->clip_hi);
        return st == 0 ? n_pulses : vf->max_pulses;
    }
    *success = 0;
    *v_out = am_write(p, key, cell, d, gt, x);
    return vf->max_pulses;
}

/* Program the cells [lo, hi) of the arrays, at op-local positions first + i (draws keyed by position),
   one at a time: every path of the model. */
static void am_program_cells(const am_params* p, const am_verify* vf, am_key key, int64_t first, int64_t lo,
                             int64_t hi, const double* g_target, const int8_t* stuck, am_state s, int32_t* pulses,
                             int8_t* success) {
    int64_t i;
    for (i = lo; i < hi; i++) {
        double gt = g_target[i], x = gt * p->inv_g_max, lx = 0.0, v, q = 0.0, nu = 0.0, zr = 0.0;
        int8_t st = stuck ? stuck[i] : 0, ok = 1;
        int64_t np_ = 1;
        uint64_t cell = (uint64_t)(first + i);
        uint32_t d = 0;
        if (p->drift_on || p->read_on) lx = am_lnx(p, x);
        if (p->read_on) q = st ? p->q_stuck[st] : am_q(p, x, lx);
        if (vf->max_pulses > 0 && vf->card) np_ = am_verify_card(p, vf, key, cell, &d, gt, x, st, &ok, &v);
        else if (vf->max_pulses > 0) np_ = am_verify_tolerance(p, vf, key, cell, &d, gt, x, q, st, &ok, &v);
        else v = am_write(p, key, cell, &d, gt, x);
        if (p->drift_on) nu = am_nu(p, x, lx, am_normal_draw(key, cell, d++));
        if (p->relax_on) zr = am_normal_draw(key, cell, d++);
        if (st) { v = gt = am_stuck_value(p, st); nu = 0.0; zr = 0.0; }
        if (s.g_eff) am_store(s.g_eff, s.f32, i, gt);
        am_store(s.g_prog, s.f32, i, v);
        if (s.nu) am_store(s.nu, s.f32, i, nu);
        if (s.z_relax) am_store(s.z_relax, s.f32, i, zr);
        if (s.q_read) am_store(s.q_read, s.f32, i, q);
        if (pulses) { pulses[i] = (int32_t)np_; success[i] = ok; }
    }
}

/* ------------------------------------------------------------------ program: vectorised blocks */
/* Normals of draws 2 blk and 2 blk + 1 of the cells at positions cell0 .. cell0 + n - 1 */
AM_CLONES static void am_normal_pairs(am_key key, int64_t cell0, int n, uint32_t blk, double* restrict za,
                                      double* restrict zb) {
    uint64_t a[AM_BLOCK], b[AM_BLOCK];
    int i;
    am_blocks(key, cell0, n, blk, a, b);
    for (i = 0; i < n; i++) am_box_muller(a[i], b[i], &za[i], &zb[i]);
}

/* The read noise of a read draws one normal per cell, the cells at positions 2j and 2j + 1
   sharing the Box-Muller pair of block 0 of counter j. */
static inline double am_read_normal(am_key key, uint64_t pos) {
    uint64_t a, b;
    double z0, z1;
    am_block(key, pos >> 1, 0, &a, &b);
    am_box_muller(a, b, &z0, &z1);
    return (pos & 1u) ? z1 : z0;
}

AM_CLONES static void am_read_normals(am_key key, int64_t pos0, int n, double* restrict z) {
    uint64_t a[AM_BLOCK / 2 + 1], b[AM_BLOCK / 2 + 1];
    double z0[AM_BLOCK / 2 + 1], z1[AM_BLOCK / 2 + 1];
    int64_t j0 = pos0 >> 1;
    int np = (int)(((pos0 + n - 1) >> 1) - j0 + 1), j, i, odd = (int)(pos0 & 1);
    am_blocks(key, j0, np, 0, a, b);
    for (j = 0; j < np; j++) am_box_muller(a[j], b[j], &z0[j], &z1[j]);
    for (i = 0; i < n; i++) {
        int k = i + odd;
        z[i] = (k & 1) ? z1[k >> 1] : z0[k >> 1];
    }
}

AM_CLONES static void am_program_math(const am_params* p, int n, const double* restrict g_target,
                                      const double* restrict z1, const double* restrict z2, double* restrict v,
                                      double* restrict nu, double* restrict q) {
    int i;
    for (i = 0; i < n; i++) {
        double gt = g_target[i];
        v[i] = am_write_normal(p, gt, gt * p->inv_g_max, z1[i]);
    }
    if (p->drift_on || p->read_on) {
        double lx[AM_BLOCK];
        for (i = 0; i < n; i++) lx[i] = am_lnx(p, g_target[i] * p->inv_g_max);
        if (p->drift_on && p->nu_simple)
            for (i = 0; i < n; i++) nu[i] = am_nu_simple(p, lx[i], z2[i]);
        else if (p->drift_on)
            for (i = 0; i < n; i++) nu[i] = am_nu(p, g_target[i] * p->inv_g_max, lx[i], z2[i]);
        if (p->read_on && p->q_form == 0)
            for (i = 0; i < n; i++) q[i] = am_q_pow(p, lx[i]);
        else if (p->read_on)
            for (i = 0; i < n; i++) q[i] = am_q(p, g_target[i] * p->inv_g_max, lx[i]);
    }
}

static inline void am_store_block(void* dst, int f32, int64_t lo, int n, const double* v) {
    int i;
    if (!dst) return;
    if (f32) { float* o = (float*)dst + lo; for (i = 0; i < n; i++) o[i] = (float)v[i]; }
    else memcpy((double*)dst + lo, v, (size_t)n * sizeof(double));
}

/* Single-shot program of cells [lo, hi) for polynomial write channels (the common case);
   equal, bit for bit, to am_program_cells without verify. */
static void am_program_fast(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi,
                            const double* g_target,
                            const int8_t* stuck, am_state s) {
    double z1[AM_BLOCK], z2[AM_BLOCK], z3[AM_BLOCK], zs[AM_BLOCK], v[AM_BLOCK], nu[AM_BLOCK], q[AM_BLOCK];
    int64_t b;
    for (b = lo; b < hi; b += AM_BLOCK) {
        int n = (int)(hi - b < AM_BLOCK ? hi - b : AM_BLOCK), i;
        const double* gt = g_target + b;
        /* draws: 0 write, then drift, then relaxation */
        double* zd = p->drift_on ? z2 : z3;
        am_normal_pairs(key, first + b, n, 0, z1, zd);
        if (p->drift_on && p->relax_on) am_normal_pairs(key, first + b, n, 1, z3, zs);
        am_program_math(p, n, gt, z1, z2, v, nu, q);
        if (!p->drift_on) for (i = 0; i < n; i++) nu[i] = 0.0;
        if (!p->relax_on) for (i = 0; i < n; i++) z3[i] = 0.0;
        if (stuck) {
            for (i = 0; i < n; i++) {
                int8_t st = stuck[b + i];
                if (st) { v[i] = am_stuck_value(p, st); nu[i] = 0.0; z3[i] = 0.0; q[i] = p->q_stuck[st]; }
            }
        }
        if (s.g_eff) {
            double ge[AM_BLOCK];
            for (i = 0; i < n; i++) ge[i] = (stuck && stuck[b + i]) ? am_stuck_value(p, stuck[b + i]) : gt[i];
            am_store_block(s.g_eff, s.f32, b, n, ge);
        }
        am_store_block(s.g_prog, s.f32, b, n, v);
        am_store_block(s.nu, s.f32, b, n, nu);
        am_store_block(s.z_relax, s.f32, b, n, z3);
        am_store_block(s.q_read, s.f32, b, n, q);
    }
}

/* ------------------------------------------------------------------ read */
typedef struct {
    double L, F, w; /* drift log-time, read-noise time factor, relaxation segment weight */
    int a;
} am_age;

static inline am_age am_age_factors(const am_params* p, double age) {
    am_age t;
    t.L = p->drift_on ? am_drift_L(p, age) : 0.0;
    t.F = p->read_on ? am_read_F(p, age) : 0.0;
    t.a = 0;
    t.w = 0.0;
    if (p->relax_on) am_relax_segment(p, age, &t.a, &t.w);
    return t;
}

/* one cell read: drift, relaxation, read noise (z: its normal), clip */

/* Read cells [lo, hi) one at a time (per-cell ages when `uniform` is 0; every card). */
static void am_read_cells(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi, am_state s,
                          const double* age,
                          int uniform, void* out, int out_f32) {
    int64_t i;
    am_age t = am_age_factors(p, age[0]);
    for (i = lo; i < hi; i++) {
        double g = am_load(s.g_prog, s.f32, i);
        if (!uniform) t = am_age_factors(p, age[i]);
        if (p->drift_on) g = am_drifted(g, am_load(s.nu, s.f32, i), t.L);
        if (p->relax_on) {
            double xe = am_load(s.g_eff, s.f32, i) * p->inv_g_max;
            g = g + am_relax_mean(p, xe, t.a, t.w) + am_sigma_relax(p, xe, t.a, t.w) * am_load(s.z_relax, s.f32, i);
        }
        if (p->read_on) g = am_read_noise(p, g, am_load(s.q_read, s.f32, i), t.F, am_read_normal(key, (uint64_t)(first + i)));
        am_store(out, out_f32, i, am_clip(g, p->clip_lo, p->clip_hi));
    }
}

static inline void am_load_block(const void* src, int f32, int64_t lo, int n, double* v) {
    int i;
    if (f32) { const float* s = (const float*)src + lo; for (i = 0; i < n; i++) v[i] = (double)s[i]; }
    else memcpy(v, (const double*)src + lo, (size_t)n * sizeof(double));
}

/* The read of a block of cells at one age, in double (m = p) or float (m = the float parameters). */
#define AM_DEFINE_READ_MATH(NAME, T, PT, AGE, SUF, CLIP)                                                          \
    AM_CLONES static void NAME(const am_params* p, const PT* m, AGE t, int n, T* restrict g, const T* restrict nu, \
                               const T* restrict ge, const T* restrict zr, const T* restrict q,                   \
                               const T* restrict z) {                                                             \
        int i;                                                                                                    \
        if (p->drift_on)                                                                                          \
            for (i = 0; i < n; i++) g[i] = am_drifted##SUF(g[i], nu[i], t.L);                                     \
        if (p->relax_on && p->n_relax_t > 1)                                                                      \
            for (i = 0; i < n; i++) g[i] = g[i] + am_sigma_relax_poly##SUF(m, ge[i] * m->inv_g_max, t.a, t.w, 1) * zr[i]; \
        else if (p->relax_on)                                                                                     \
            for (i = 0; i < n; i++) g[i] = g[i] + am_sigma_relax_poly##SUF(m, ge[i] * m->inv_g_max, t.a, t.w, 0) * zr[i]; \
        if (p->read_on && !p->read_log10)                                                                         \
            for (i = 0; i < n; i++) g[i] = am_read_noise_rel##SUF(g[i], q[i], t.F, z[i]);                         \
        else if (p->read_on)                                                                                      \
            for (i = 0; i < n; i++) g[i] = am_read_noise##SUF(m, g[i], q[i], t.F, z[i]);                          \
        for (i = 0; i < n; i++) g[i] = CLIP(g[i], m->clip_lo, m->clip_hi);                                        \
    }

AM_DEFINE_READ_MATH(am_read_math, double, am_params, am_age, , am_clip)

/* Read cells [lo, hi) at one age (no tabulated relaxation); equal, bit for bit, to am_read_cells. */
static void am_read_fast(const am_params* p, am_key key, int64_t first, int64_t lo, int64_t hi, am_state s,
                         double age,
                         void* out, int out_f32) {
    double g[AM_BLOCK], nu[AM_BLOCK], ge[AM_BLOCK], zr[AM_BLOCK], q[AM_BLOCK], z[AM_BLOCK];
    am_age t = am_age_factors(p, age);
    int64_t b;
    for (b = lo; b < hi; b += AM_BLOCK) {
        int n = (int)(hi - b < AM_BLOCK ? hi - b : AM_BLOCK);
        am_load_block(s.g_prog, s.f32, b, n, g);
        if (p->drift_on) am_load_block(s.nu, s.f32, b, n, nu);
        if (p->relax_on) { am_load_block(s.g_eff, s.f32, b, n, ge); am_load_block(s.z_relax, s.f32, b, n, zr); }
        if (p->read_on) { am_load_block(s.q_read, s.f32, b, n, q); am_read_normals(key, first + b, n, z); }
        am_read_math(p, p, t, n, g, nu, ge, zr, q, z);
        am_store_block(out, out_f32, b, n, g);
    }
}

/* ================================================================== float32 arithmetic
 * Benches with float32 state compute single-shot programs of polynomial cards and every
 * read in float32 (16 lanes per AVX-512 vector instead of 8; ~1 ulp float32 functions), and
 * draw 32-bit uniforms: the words (w0, w1) and (w2, w3) of a block each give one Box-Muller
 * pair. A program gives the cells at positions 2j and 2j + 1 the two pairs of counter j
 * (cards with at most two draws per cell) or each cell both pairs of its own counter (three
 * draws); a read draws one normal per cell, the cells at positions 4j .. 4j + 3 sharing
 * block 0 of counter j. Uniforms for the radius have 31 bits (normals reach 6.66 sigma),
 * for the angle 24 bits. */
static inline uint32_t am_fbits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float am_from_fbits(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static inline float am_fmax(float a, float b) { return a > b ? a : b; }
static inline float am_fmin(float a, float b) { return a < b ? a : b; }
static inline float am_fclip(float v, float lo, float hi) { return am_fmin(am_fmax(v, lo), hi); }

/* natural log of a positive normal float (fdlibm e_logf.c as in musl, without special cases) */
static inline float am_logf(float x) {
    uint32_t ix = am_fbits(x) + (0x3f800000u - 0x3f3504f3u);
    int32_t k = (int32_t)(ix >> 23) - 0x7f;
    float f = am_from_fbits((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
    float s = f / (2.0f + f), z = s * s, w = z * z;
    float t1 = w * (0.40000972152f + w * 0.24279078841f);
    float t2 = z * (0.66666662693f + w * 0.28498786688f);
    float R = t2 + t1, hfsq = 0.5f * f * f, dk = (float)k;
    return s * (hfsq + R) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
}

/* e^x for x clamped to [-87, 88]: x = k ln2 + r, |r| <= ln2/2, Taylor to r^7 */
static inline float am_expf(float x) {
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    float t, k, r, e;
    int32_t ki;
    x = am_fclip(x, -87.0f, 88.0f);
    t = x * 1.44269502163e+00f + shifter;
    k = t - shifter;
    ki = (int32_t)(am_fbits(t) - am_fbits(shifter));
    r = (x - k * 6.9314575195e-01f) - k * 1.4286067653e-06f;
    e = 1.98412698e-4f;
    e = e * r + 1.38888889e-3f;
    e = e * r + 8.33333333e-3f;
    e = e * r + 4.16666667e-2f;
    e = e * r + 1.66666667e-1f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    return e * am_from_fbits((uint32_t)(ki + 127) << 23);
}

/* sin and cos of 2 pi u, u in [0, 1): as am_sincos2pi, in float */
static inline void am_sincos2pif(float u, float* s_out, float* c_out) {
    const float shifter = 12582912.0f;
    float t = 4.0f * u, k = (t + shifter) - shifter, g = t - k, x = g * 1.57079632679f, x2 = x * x;
    int32_t q = (int32_t)(am_fbits(t + shifter) - am_fbits(shifter)) & 3;
    float s = 2.75573192e-6f, c = -2.75573192e-7f;
    s = s * x2 - 1.98412698e-4f;
    s = s * x2 + 8.33333333e-3f;
    s = s * x2 - 1.66666667e-1f;
    s = x + x * x2 * s;
    c = c * x2 + 2.48015873e-5f;
    c = c * x2 - 1.38888889e-3f;
    c = c * x2 + 4.16666667e-2f;
    c = c * x2 - 0.5f;
    c = 1.0f + x2 * c;
    *s_out = q == 0 ? s : (q == 1 ? c : (q == 2 ? -s : -c));
    *c_out = q == 0 ? c : (q == 1 ? -s : (q == 2 ? -c : s));
}

/* Box-Muller on two 32-bit words: u1 = (floor(a / 2) + 1/2) / 2^31, u2 = floor(b / 2^8) / 2^24 */
static inline void am_box_mullerf(uint32_t a, uint32_t b, float* z0, float* z1) {
    float u1 = ((float)(int32_t)(a >> 1) + 0.5f) * 4.656612873077392578125e-10f;
    float r = sqrtf(-2.0f * am_logf(u1)), s, c;
    am_sincos2pif((float)(int32_t)(b >> 8) * 5.9604644775390625e-8f, &s, &c);
    *z0 = r * c;
    *z1 = r * s;
}

static inline float am_normal4(uint64_t a, uint64_t b, uint32_t k) {
    float z0, z1;
    if (k < 2) am_box_mullerf((uint32_t)a, (uint32_t)(a >> 32), &z0, &z1);
    else am_box_mullerf((uint32_t)b, (uint32_t)(b >> 32), &z0, &z1);
    return (k & 1u) ? z1 : z0;
}

/* float32 program draw d (0 or 1) of the cell at position `pos` (two draws per cell) */
static inline float am_normal_draw_f(am_key key, uint64_t pos, uint32_t d) {
    uint64_t a, b;
    am_block(key, pos >> 1, 0, &a, &b);
    return am_normal4(a, b, (uint32_t)((pos & 1u) << 1) | (d & 1u));
}

/* float32 read noise of the cell at read position `pos` */
static inline float am_read_normal_f(am_key key, uint64_t pos) {
    uint64_t a, b;
    am_block(key, pos >> 2, 0, &a, &b);
    return am_normal4(a, b, (uint32_t)(pos & 3u));
}

typedef struct {
    float g_min, g_max, inv_g_max, clip_lo, clip_hi, x_floor, prog_scale, mu_slope, mu_icpt, mu_min, mu_max;
    float sg_slope, sg_icpt, sg_min, sg_max, q_coef, q_exp, q_max, relax_scale;
    float mu_lxb, sg_lxb, mu_hc[AM_MAXH], sg_hc[AM_MAXH];
    int nu_table, nu_n, q_form, read_log10;
    float nu_x[AM_MAXN], nu_mu[AM_MAXN], nu_sg[AM_MAXN];
    float q_slope, q_icpt, q_lo, q_hi, q_lxb, q_hc[AM_MAXH], ln_uS, inv_ln10, rn_floor;
    float prog_c[AM_MAXC];
    float relax_c[AM_MAXT * AM_MAXC];
    float q_stuck[3];
} am_fparams;

AM_DEFINE_MODEL(float, am_fparams, _f, am_logf, am_expf, sqrtf, fabsf, am_fmax, am_fmin, am_fclip, 0.0f)

static void am_fparams_of(const am_params* p, am_fparams* f) {
    int i;
    f->g_min = (float)p->g_min; f->g_max = (float)p->g_max; f->inv_g_max = (float)p->inv_g_max;
    f->clip_lo = (float)p->clip_lo; f->clip_hi = (float)p->clip_hi; f->x_floor = (float)p->x_floor;
    f->prog_scale = (float)p->prog_scale;
    f->mu_slope = (float)p->mu_slope; f->mu_icpt = (float)p->mu_icpt; f->mu_min = (float)p->mu_min;
    f->mu_max = (float)p->mu_max; f->sg_slope = (float)p->sg_slope; f->sg_icpt = (float)p->sg_icpt;
    f->sg_min = (float)p->sg_min; f->sg_max = (float)p->sg_max;
    f->q_coef = (float)p->q_coef; f->q_exp = (float)p->q_exp; f->q_max = (float)p->q_max;
    f->relax_scale = (float)p->relax_scale;
    f->mu_lxb = (float)p->mu_lxb; f->sg_lxb = (float)p->sg_lxb;
    for (i = 0; i < AM_MAXH; i++) { f->mu_hc[i] = (float)p->mu_hc[i]; f->sg_hc[i] = (float)p->sg_hc[i]; }
    f->nu_table = p->nu_table; f->nu_n = p->nu_n; f->q_form = p->q_form; f->read_log10 = p->read_log10;
    for (i = 0; i < AM_MAXN; i++) {
        f->nu_x[i] = (float)p->nu_x[i]; f->nu_mu[i] = (float)p->nu_mu[i]; f->nu_sg[i] = (float)p->nu_sg[i];
    }
    f->q_slope = (float)p->q_slope; f->q_icpt = (float)p->q_icpt; f->q_lo = (float)p->q_lo; f->q_hi = (float)p->q_hi;
    f->q_lxb = (float)p->q_lxb;
    for (i = 0; i < AM_MAXH; i++) f->q_hc[i] = (float)p->q_hc[i];
    f->ln_uS = (float)p->ln_uS; f->inv_ln10 = (float)p->inv_ln10; f->rn_floor = (float)p->rn_floor;
    for (i = 0; i < AM_MAXC; i++) f->prog_c[i] = (float)p->prog_c[i];
    for (i = 0; i < AM_MAXT * AM_MAXC; i++) f->relax_c[i] = (float)p->relax_c[i];
    f->q_stuck[0] = 0.0f;
    f->q_stuck[1] = p->read_on ? am_q_f(f, f->g_min * f->inv_g_max, am_lnx_f(f, f->g_min * f->inv_g_max)) : 0.0f;
    f->q_stuck[2] = p->read_on ? am_q_f(f, f->g_max * f->inv_g_max, am_lnx_f(f, f->g_max * f->inv_g_max)) : 0.0f;
}

/* Single-shot program of cells [lo, hi) into float32 state, polynomial write channels.
   Draws: 0 write, then drift, then relaxation. A card with at most two draws per cell (every
   bundled polynomial card) shares a block between the cells at positions 2j and 2j + 1 (pair
   (w0, w1) for the first, (w2, w3) for the second, counter j); with three, each cell has
   its own block (counter = position, pairs (w0, w1) and (w2, w3)). */
AM_CLONES static void am_normals_f32(am_key key, int64_t cell0, int n, float* restrict z0, float* restrict z1,
                                     float* restrict z2, float* restrict z3) {
    uint64_t a[AM_BLOCK], b[AM_BLOCK];
    int i;
    am_blocks(key, cell0, n, 0, a, b);
    for (i = 0; i < n; i++) am_box_mullerf((uint32_t)a[i], (uint32_t)(a[i] >> 32), &z0[i], &z1[i]);
    for (i = 0; i < n; i++) am_box_mullerf((uint32_t)b[i], (uint32_t)(b[i] >> 32), &z2[i], &z3[i]);
}

AM_CLONES static void am_normals_shared_f32(am_key key, int64_t pos0, int n, float* restrict z0,
                                            float* restrict z1) {
    uint64_t a[AM_BLOCK / 2 + 1], b[AM_BLOCK / 2 + 1];
    float pa0[AM_BLOCK / 2 + 1], pa1[AM_BLOCK / 2 + 1], pb0[AM_BLOCK / 2 + 1], pb1[AM_BLOCK / 2 + 1];
    int64_t j0 = pos0 >> 1;
    int nb = (int)(((pos0 + n - 1) >> 1) - j0 + 1), j, i, odd = (int)(pos0 & 1);
    am_blocks(key, j0, nb, 0, a, b);
    for (j = 0; j < nb; j++) am_box_mullerf((uint32_t)a[j], (uint32_t)(a[j] >> 32), &pa0[j], &pa1[j]);
    for (j = 0; j < nb; j++) am_box_mullerf((uint32_t)b[j], (uint32_t)(b[j] >> 32), &pb0[j], &pb1[j]);
    for (i = 0; i < n; i++) {
        int k = i + odd;
        z0[i] = (k & 1) ? pb0[k >> 1] : pa0[k >> 1];
        z1[i] = (k & 1) ? pb1[k >> 1] : pa1[k >> 1];
    }
}

AM_CLONES static void am_program_math_f32(const am_params* p, const am_fparams* f, int n,
                                          const double* restrict g_target, const float* restrict zw,
                                          const float* restrict zd, float* restrict ge, float* restrict v,
                                          float* restrict nu, float* restrict q) {
    int i;
    for (i = 0; i < n; i++) ge[i] = (float)g_target[i];
    for (i = 0; i < n; i++) v[i] = am_write_normal_f(f, ge[i], ge[i] * f->inv_g_max, zw[i]);
    if (p->drift_on || p->read_on) {
        float lx[AM_BLOCK];
        for (i = 0; i < n; i++) lx[i] = am_lnx_f(f, ge[i] * f->inv_g_max);
        if (p->drift_on && p->nu_simple)
            for (i = 0; i < n; i++) nu[i] = am_nu_simple_f(f, lx[i], zd[i]);
        else if (p->drift_on)
            for (i = 0; i < n; i++) nu[i] = am_nu_f(f, ge[i] * f->inv_g_max, lx[i], zd[i]);
        if (p->read_on && p->q_form == 0)
            for (i = 0; i < n; i++) q[i] = am_q_pow_f(f, lx[i]);
        else if (p->read_on)
            for (i = 0; i < n; i++) q[i] = am_q_f(f, ge[i] * f->inv_g_max, lx[i]);
    }
}

static inline void am_fstore(void* dst, int64_t lo, int n, const float* v) {
    if (dst) memcpy((float*)dst + lo, v, (size_t)n * sizeof(float));
}

static void am_program_fast_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                                int64_t hi, const double* g_target, const int8_t* stuck, am_state s) {
    float z0[AM_BLOCK], z1[AM_BLOCK], z2[AM_BLOCK], z3[AM_BLOCK], ge_s[AM_BLOCK], nu_s[AM_BLOCK], q_s[AM_BLOCK];
    float* zr = p->drift_on ? z2 : z1;
    int shared = !(p->drift_on && p->relax_on), i;
    int64_t b;
    for (b = lo; b < hi; b += AM_BLOCK) {
        int n = (int)(hi - b < AM_BLOCK ? hi - b : AM_BLOCK);
        /* the kernels write straight into the state arrays; scratch where the card has none */
        float* ge = s.g_eff ? (float*)s.g_eff + b : ge_s;
        float* v = (float*)s.g_prog + b;
        float* nu = s.nu ? (float*)s.nu + b : nu_s;
        float* q = s.q_read ? (float*)s.q_read + b : q_s;
        if (shared) {
            am_normals_shared_f32(key, first + b, n, z0, z1);
            zr = z1;
        } else {
            am_normals_f32(key, first + b, n, z0, z1, z2, z3);
        }
        am_program_math_f32(p, f, n, g_target + b, z0, z1, ge, v, nu, q);
        if (s.nu && !p->drift_on) for (i = 0; i < n; i++) nu[i] = 0.0f;
        if (stuck) {
            for (i = 0; i < n; i++) {
                int8_t st = stuck[b + i];
                if (st) {
                    v[i] = ge[i] = st == 1 ? f->g_min : f->g_max;
                    nu[i] = 0.0f;
                    zr[i] = 0.0f;
                    q[i] = f->q_stuck[st];
                }
            }
        }
        if (s.z_relax) am_fstore(s.z_relax, b, n, zr);
    }
}

typedef struct {
    float L, F, w;
    int a;
} am_fage;

static inline am_fage am_fage_of(am_age t) {
    am_fage f;
    f.L = (float)t.L; f.F = (float)t.F; f.w = (float)t.w; f.a = t.a;
    return f;
}

/* Read cells [lo, hi) of float32 state one at a time (per-cell ages, tabulated relaxation). */
static void am_read_cells_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                              int64_t hi, am_state s, const double* age, int uniform, float* out) {
    int64_t i;
    const float *gp = (const float*)s.g_prog, *nu = (const float*)s.nu, *ge = (const float*)s.g_eff;
    const float *zr = (const float*)s.z_relax, *q = (const float*)s.q_read;
    am_age td = am_age_factors(p, age[0]);
    am_fage t = am_fage_of(td);
    for (i = lo; i < hi; i++) {
        float g = gp[i];
        if (!uniform) { td = am_age_factors(p, age[i]); t = am_fage_of(td); }
        if (p->drift_on) g = am_drifted_f(g, nu[i], t.L);
        if (p->relax_on) {
            float sig = p->relax_table ? (float)am_sigma_relax(p, (double)ge[i] * p->inv_g_max, td.a, td.w)
                                       : am_sigma_relax_poly_f(f, ge[i] * f->inv_g_max, t.a, t.w, p->n_relax_t > 1);
            float mean = p->relax_mean_on ? (float)am_relax_mean(p, (double)ge[i] * p->inv_g_max, td.a, td.w) : 0.0f;
            g = g + mean + sig * zr[i];
        }
        if (p->read_on) g = am_read_noise_f(f, g, q[i], t.F, am_read_normal_f(key, (uint64_t)(first + i)));
        out[i] = am_fclip(g, f->clip_lo, f->clip_hi);
    }
}

AM_CLONES static void am_read_normals_f32(am_key key, int64_t pos0, int n, float* restrict z) {
    uint64_t a[AM_BLOCK / 4 + 2], b[AM_BLOCK / 4 + 2];
    float zz[4 * (AM_BLOCK / 4 + 2)];
    int64_t j0 = pos0 >> 2;
    int nb = (int)(((pos0 + n - 1) >> 2) - j0 + 1), j, i, off = (int)(pos0 & 3);
    am_blocks(key, j0, nb, 0, a, b);
    for (j = 0; j < nb; j++) {
        am_box_mullerf((uint32_t)a[j], (uint32_t)(a[j] >> 32), &zz[4 * j], &zz[4 * j + 1]);
        am_box_mullerf((uint32_t)b[j], (uint32_t)(b[j] >> 32), &zz[4 * j + 2], &zz[4 * j + 3]);
    }
    for (i = 0; i < n; i++) z[i] = zz[off + i];
}

AM_DEFINE_READ_MATH(am_read_math_f32, float, am_fparams, am_fage, _f, am_fclip)

/* Read cells [lo, hi) of float32 state at one age (no tabulated relaxation); equal, bit
   for bit, to am_read_cells_f32. */
static void am_read_fast_f32(const am_params* p, const am_fparams* f, am_key key, int64_t first, int64_t lo,
                             int64_t hi, am_state s, double age, float* out) {
    float z[AM_BLOCK];
    const float *nu = (const float*)s.nu, *ge = (const float*)s.g_eff, *zr = (const float*)s.z_relax;
    const float *q = (const float*)s.q_read;
    am_fage t = am_fage_of(am_age_factors(p, age));
    int64_t b;
    for (b = lo; b < hi; b += AM_BLOCK) {
        int n = (int)(hi - b < AM_BLOCK ? hi - b : AM_BLOCK);
        memcpy(out + b, (const float*)s.g_prog + b, (size_t)n * sizeof(float));  /* computed in place */
        if (p->read_on) am_read_normals_f32(key, first + b, n, z);
        am_read_math_f32(p, f, t, n, out + b, nu ? nu + b : NULL, ge ? ge + b : NULL, zr ? zr + b : NULL,
                         q ? q + b : NULL, z);
    }
}

/* Stuck-at states of cells: addresses[i] (or first + i without addresses) */
AM_CLONES static void am_stuck_cells(const am_params* p, int64_t first, const int64_t* addresses, int64_t n, int8_t* out) {
    int64_t i;
    if (addresses) { for (i = 0; i < n; i++) out[i] = am_stuck(p, (uint64_t)addresses[i]); }
    else { for (i = 0; i < n; i++) out[i] = am_stuck(p, (uint64_t)(first + i)); }
}

#endif
