/* Hot loops of the storage layer in C (included by ext/_codec.pyx).
 *
 * am_mmse_rows: the posterior mean of n weights from their reads in relative units, as
 * analogmem.storage.encoders.MMSE.decode computes it with matrix products: per weight the
 * per-group statistics (sum y^2, sum y, count of reads above the clip lo; count at or below
 * it), the log-posterior of each of K candidates as log_prior + statistics . coefficients,
 * and sum_k e^(ll_k - max) w_k / sum_k e^(ll_k - max) over the candidates within 40 of the
 * max (the others weigh less than 4e-18 each). Loops run over candidates
 * innermost (contiguous), with am_exp (branch-free), so they vectorise; the clones give the
 * same bits (no contraction). */
#ifndef AM_CODEC_H
#define AM_CODEC_H

#include "am_kernels.h"

/* x where keep is 1, +0.0 where keep is 0 (x >= 0 or any finite x), by a bit mask: a multiply
 * by (double)keep is turned back into a branch by the compiler, mispredicted at random on data
 * such as a weight's sign */
static inline double am_keep(double x, int64_t keep) {
    uint64_t u;
    memcpy(&u, &x, 8);
    u &= (uint64_t)0 - (uint64_t)keep;
    memcpy(&x, &u, 8);
    return x;
}

#define AM_CODEC_MAXG 8    /* coefficient groups (distinct cells of one copy), at most */
#define AM_CODEC_MAXK 512  /* candidates, at most */

/* y: (n, C) relative reads; group: (C,) group of each cell; coef: (4G, K) row-major;
 * log_prior, w_k: (K,); out: (n,). */
AM_CLONES static void am_mmse_rows(int64_t n, int C, int G, int K, const double* restrict y,
                                   const int64_t* restrict group, const double* restrict coef, double lo,
                                   const double* restrict log_prior, const double* restrict w_k,
                                   double* restrict out) {
    double st[4 * AM_CODEC_MAXG];
    double ll[AM_CODEC_MAXK];
    double e[AM_CODEC_MAXK];
    const double thr = lo + 1e-12;
    int64_t i;
    int j, k, klo, khi;
    for (i = 0; i < n; i++) {
        const double* yi = y + i * C;
        double best, num, den, n4[4] = {0.0, 0.0, 0.0, 0.0}, d4[4] = {0.0, 0.0, 0.0, 0.0};
        double m4[4] = {-HUGE_VAL, -HUGE_VAL, -HUGE_VAL, -HUGE_VAL};
        for (j = 0; j < 4 * G; j++) st[j] = 0.0;
        for (j = 0; j < C; j++) {
            double v = yi[j];
            int g = (int)group[j];
            if (v <= thr) {
                st[3 * G + g] += 1.0;
            } else {
                st[g] += v * v;
                st[G + g] += v;
                st[2 * G + g] += 1.0;
            }
        }
        for (k = 0; k < K; k++) ll[k] = log_prior[k];
        for (j = 0; j < 4 * G; j++) {
            const double s = st[j];
            const double* cj = coef + (int64_t)j * K;
            if (s == 0.0) continue;
            for (k = 0; k < K; k++) ll[k] += s * cj[k];
        }
        /* four partial maxima and sums in a fixed order: vectorisable, the same bits on every clone */
        for (k = 0; k + 4 <= K; k += 4) {
            m4[0] = ll[k] > m4[0] ? ll[k] : m4[0];
            m4[1] = ll[k + 1] > m4[1] ? ll[k + 1] : m4[1];
            m4[2] = ll[k + 2] > m4[2] ? ll[k + 2] : m4[2];
            m4[3] = ll[k + 3] > m4[3] ? ll[k + 3] : m4[3];
        }
        for (; k < K; k++) m4[0] = ll[k] > m4[0] ? ll[k] : m4[0];
        best = m4[0] > m4[1] ? m4[0] : m4[1];
        best = m4[2] > best ? m4[2] : best;
        best = m4[3] > best ? m4[3] : best;
        /* candidates below best - 40 weigh less than 4e-18 of the best: the sums run over the
           contiguous range of those above it (relative error below K * 4e-18) */
        klo = 0;
        while (ll[klo] <= best - 40.0) klo++;
        khi = K - 1;
        while (ll[khi] <= best - 40.0) khi--;
        for (k = klo; k <= khi; k++) e[k] = am_exp(ll[k] - best);
        for (k = klo; k + 4 <= khi + 1; k += 4) {
            n4[0] += e[k] * w_k[k];
            n4[1] += e[k + 1] * w_k[k + 1];
            n4[2] += e[k + 2] * w_k[k + 2];
            n4[3] += e[k + 3] * w_k[k + 3];
            d4[0] += e[k];
            d4[1] += e[k + 1];
            d4[2] += e[k + 2];
            d4[3] += e[k + 3];
        }
        for (; k <= khi; k++) {
            n4[0] += e[k] * w_k[k];
            d4[0] += e[k];
        }
        num = (n4[0] + n4[1]) + (n4[2] + n4[3]);
        den = (d4[0] + d4[1]) + (d4[2] + d4[3]);
        out[i] = num / den;
    }
}

/* Posterior means of n weights by interpolation on a padded table of them (see
 * analogmem.storage._codec.mmse_table): c = 1 or 2 reads per weight (S, g[q*c + j]) to grid
 * coordinates u = ((g - g_min)/span - y0)/h; node N of each read is its censored table (a read
 * at or below thr, relative units, takes node N with fraction 0). t: (c == 2 ? N+2 : 1) rows of
 * N + 2. Written without data-dependent branches (integer clamps, selects by multiplication):
 * censored reads are half the cells of a differential pair, and a branch on them is
 * mispredicted at random. */
#define AM_TABLE_LOOP(NAME, GT, WT)                                                                       \
static void NAME(int64_t n, int c, const GT* restrict g, double g_min, double inv_span, double y0,       \
                 double inv_h, double thr, int64_t N, const double* restrict t, WT* restrict out) {       \
    const int64_t W = N + 2, top = N - 2;                                                                 \
    for (int64_t q = 0; q < n; q++) {                                                                     \
        double y1 = ((double)g[q * c] - g_min) * inv_span, u1 = (y1 - y0) * inv_h;                        \
        int64_t i1 = (int64_t)u1, cen1 = y1 <= thr;                                                       \
        i1 = i1 < 0 ? 0 : i1;                                                                             \
        i1 = i1 > top ? top : i1;                                                                         \
        double f1 = u1 - (double)i1;                                                           \
        f1 = am_keep(f1, (f1 > 0.0) & (cen1 == 0));                                               \
        f1 = f1 > 1.0 ? 1.0 : f1;                              \
        i1 += cen1 * (N - i1);                                                                            \
        if (c == 1) {                                                                                     \
            out[q] = (WT)(t[i1] * (1.0 - f1) + t[i1 + 1] * f1);                                           \
            continue;                                                                                     \
        }                                                                                                 \
        double y2 = ((double)g[q * c + 1] - g_min) * inv_span, u2 = (y2 - y0) * inv_h;                    \
        int64_t i2 = (int64_t)u2, cen2 = y2 <= thr;                                                       \
        i2 = i2 < 0 ? 0 : i2;                                                                             \
        i2 = i2 > top ? top : i2;                                                                         \
        double f2 = u2 - (double)i2;                                                           \
        f2 = am_keep(f2, (f2 > 0.0) & (cen2 == 0));                                               \
        f2 = f2 > 1.0 ? 1.0 : f2;                              \
        i2 += cen2 * (N - i2);                                                                            \
        const double* r0 = t + i1 * W + i2;                                                               \
        const double* r1 = r0 + W;                                                                        \
        out[q] = (WT)((r0[0] * (1.0 - f2) + r0[1] * f2) * (1.0 - f1) + (r1[0] * (1.0 - f2) + r1[1] * f2) * f1); \
    }                                                                                                     \
}
AM_TABLE_LOOP(am_table_ff, float, float)
AM_TABLE_LOOP(am_table_fd, float, double)
AM_TABLE_LOOP(am_table_df, double, float)
AM_TABLE_LOOP(am_table_dd, double, double)

#endif
