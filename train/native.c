/* The native CPU kernels of edge-students, compiled on first use by train/native.py.
 *
 * Why this exists: a small net's CPU training step at batch 64 takes 5-10 ms, and after its
 * convolutions every distinct PyTorch op runs cache-cold at 20-75 us. Two parts of the step are
 * chains of such small ops, and each is one call here:
 *
 * 1. posd_vin_d2: POSD's V_IN for the power kernel with d = 2 (train/losses/posd.py, _VInD2,
 *    nine PyTorch ops):
 *      G_p   = {p} + the k nearest neighbours of p in the batch (squared Euclidean distance,
 *              p itself always a member, ties broken by the lower index),
 *      V     = sum_p sum_{a,b in G_p} -||y_a - y_b||^2 = -sum_p 2|G| sum_{a in G_p} ||y_a - m_p||^2,
 *              m_p the mean of G_p (the centred form: no cancellation when groups are tight),
 *      dV/dy_j = -4|G| sum_{p : j in G_p} (y_j - m_p).
 *    grad[0 .. n*d) receives scale * dV/dy and *value receives scale * V.
 *
 * 2. augment_u8: gather a batch from the uint8 training images, crop/flip/turn each sample and
 *    normalise it (train/data/augment.py, about twenty PyTorch ops), bit-identical to them.
 *
 * Single-threaded and deterministic. Plain C with GCC/Clang vector extensions; on x86-64 an
 * AVX2 Gram kernel is chosen at run time when the CPU has it. Built with -ffp-contract=off, so
 * no multiply-add is fused and the normalisation rounds exactly as PyTorch and NumPy do.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NATIVE_ABI 2

int native_abi(void) { return NATIVE_ABI; }

typedef float v4 __attribute__((vector_size(16)));
#define BLOCK_COLS 16 /* the Gram matrix is stored with rows padded to a multiple of this */

/* gram[p * np + j] = <y_p, y_j> for p < n, j < np, from yt = y^T zero-padded to [d, np].
 * Register block: 4 rows of y times two vectors of columns (8 accumulators), the reduction
 * over d innermost. W * 2 must divide BLOCK_COLS. */
#define GRAM_KERNEL(NAME, VT, W, ATTR)                                                        \
    ATTR static void NAME(const float *y, const float *yt, int64_t n, int64_t np, int64_t d, \
                          float *gram) {                                                      \
        for (int64_t p0 = 0; p0 < n; p0 += 4) {                                               \
            int64_t rows = n - p0 < 4 ? n - p0 : 4;                                           \
            const float *r0 = y + p0 * d;                                                     \
            const float *r1 = rows > 1 ? r0 + d : r0;                                         \
            const float *r2 = rows > 2 ? r0 + 2 * d : r0;                                     \
            const float *r3 = rows > 3 ? r0 + 3 * d : r0;                                     \
            for (int64_t j0 = 0; j0 < np; j0 += 2 * W) {                                      \
                VT a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                    \
                VT b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};                                    \
                const float *col = yt + j0;                                                   \
                for (int64_t t = 0; t < d; ++t, col += np) {                                  \
                    VT c, e;                                                                  \
                    memcpy(&c, col, sizeof c);                                                \
                    memcpy(&e, col + W, sizeof e);                                            \
                    a0 += r0[t] * c; b0 += r0[t] * e;                                         \
                    a1 += r1[t] * c; b1 += r1[t] * e;                                         \
                    a2 += r2[t] * c; b2 += r2[t] * e;                                         \
                    a3 += r3[t] * c; b3 += r3[t] * e;                                         \
                }                                                                             \
                float *o = gram + p0 * np + j0;                                               \
                memcpy(o, &a0, sizeof a0); memcpy(o + W, &b0, sizeof b0);                     \
                if (rows > 1) { o += np; memcpy(o, &a1, sizeof a1); memcpy(o + W, &b1, sizeof b1); } \
                if (rows > 2) { o += np; memcpy(o, &a2, sizeof a2); memcpy(o + W, &b2, sizeof b2); } \
                if (rows > 3) { o += np; memcpy(o, &a3, sizeof a3); memcpy(o + W, &b3, sizeof b3); } \
            }                                                                                 \
        }                                                                                     \
    }

GRAM_KERNEL(gram_generic, v4, 4, )

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
typedef float v8 __attribute__((vector_size(32)));
GRAM_KERNEL(gram_avx2, v8, 8, __attribute__((target("avx2,fma"))))
static int has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

static int use_avx2 = -1; /* -1: not chosen yet */

/* Which Gram kernel runs: which = -1 picks the best this CPU has, 0 the generic one, 1 AVX2+FMA.
 * Returns the kernel now in use (0 or 1), or -1 when the one asked for is not available. */
int posd_select_kernel(int which) {
    int best = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    best = has_avx2_fma();
#endif
    if (which < 0) which = best;
    if (which > best) return -1;
    use_avx2 = which;
    return use_avx2;
}

static void gram(const float *y, const float *yt, int64_t n, int64_t np, int64_t d, float *out) {
    if (use_avx2 < 0) posd_select_kernel(-1);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (use_avx2) {
        gram_avx2(y, yt, n, np, d, out);
        return;
    }
#endif
    gram_generic(y, yt, n, np, d, out);
}

static int64_t padded(int64_t n) { return (n + BLOCK_COLS - 1) / BLOCK_COLS * BLOCK_COLS; }

/* Scratch bytes posd_vin_d2 needs for this problem (k clamped as there), or -1 if too large. */
int64_t posd_workspace_bytes(int64_t n, int64_t d, int64_t k) {
    if (n < 1 || d < 1 || k < 0 || n > (INT64_C(1) << 24) || d > (INT64_C(1) << 24)) return -1;
    if (k > n - 1) k = n - 1;
    const int64_t np = padded(n);
    return (int64_t)sizeof(int64_t) * n * (k + 1) + (int64_t)sizeof(float) * (d * np + n * np + n + d + k + 1);
}

/* Returns 0 on success, 1 for bad arguments, 2 when out of memory, 3 when work is too small.
 * y: [n, d] float32, C-contiguous; k: neighbours per sample (k >= 0; clamped to n - 1);
 * scale: multiplies V and its gradient; grad: n*d floats; value: 1 float; members: NULL or
 * n*(k'+1) int64 (k' the clamped k) receiving each group, column 0 being p itself;
 * work: NULL (then the scratch is malloc'ed) or work_bytes >= posd_workspace_bytes(n, d, k)
 * bytes aligned for int64. */
int posd_vin_d2(const float *y, int64_t n, int64_t d, int64_t k, double scale, float *grad,
                float *value, int64_t *members, void *work, int64_t work_bytes) {
    const int64_t need = posd_workspace_bytes(n, d, k);
    if (!y || !grad || !value || need < 0) return 1;
    if (work && work_bytes < need) return 3;
    if (k > n - 1) k = n - 1;
    const int64_t g1 = k + 1, np = padded(n);
    void *own = work ? NULL : malloc((size_t)need);
    if (!work && !own) return 2;
    int64_t *mem = (int64_t *)(work ? work : own);
    float *yt = (float *)(mem + n * g1);
    if (members) mem = members;
    float *g = yt + d * np, *sq = g + n * np, *mean = sq + n, *best = mean + d;

    for (int64_t t = 0; t < d; ++t) {
        float *row = yt + t * np;
        for (int64_t p = 0; p < n; ++p) row[p] = y[p * d + t];
        for (int64_t p = n; p < np; ++p) row[p] = 0.0f;
    }
    gram(y, yt, n, np, d, g);
    for (int64_t p = 0; p < n; ++p) sq[p] = g[p * np + p];

    /* neighbours: the k smallest of ||y_j||^2 - 2 <y_p, y_j> (= ||y_p - y_j||^2 - ||y_p||^2), j != p */
    for (int64_t p = 0; p < n; ++p) {
        const float *dot = g + p * np;
        int64_t *m = mem + p * g1, cnt = 0;
        m[0] = p;
        for (int64_t j = 0; j < n && k > 0; ++j) {
            if (j == p) continue;
            float s = sq[j] - 2.0f * dot[j];
            if (cnt < k || s < best[k - 1]) {   /* NaN scores never displace a member */
                int64_t i = cnt < k ? cnt++ : k - 1;
                while (i > 0 && best[i - 1] > s) {
                    best[i] = best[i - 1];
                    m[1 + i] = m[i];
                    --i;
                }
                best[i] = s;
                m[1 + i] = j;
            }
        }
    }

    /* value and gradient, group by group, in the centred form */
    memset(grad, 0, sizeof(float) * (size_t)(n * d));
    double v = 0.0;
    for (int64_t p = 0; p < n; ++p) {
        const int64_t *m = mem + p * g1;
        for (int64_t t = 0; t < d; ++t) mean[t] = 0.0f;
        for (int64_t a = 0; a < g1; ++a) {
            const float *ya = y + m[a] * d;
            for (int64_t t = 0; t < d; ++t) mean[t] += ya[t];
        }
        for (int64_t t = 0; t < d; ++t) mean[t] /= (float)g1;
        double spread = 0.0;
        for (int64_t a = 0; a < g1; ++a) {
            const float *ya = y + m[a] * d;
            float *oa = grad + m[a] * d;
            float part = 0.0f;
            for (int64_t t = 0; t < d; ++t) {
                float c = ya[t] - mean[t];
                oa[t] += c;
                part += c * c;
            }
            spread += part;
        }
        v += spread;
    }
    const float f = (float)(-4.0 * (double)g1 * scale);
    for (int64_t i = 0; i < n * d; ++i) grad[i] *= f;
    *value = (float)(-2.0 * (double)g1 * v * scale);

    free(own);
    return 0;
}

/* out[s, ch, i, j] = normalise(x[idx[s], ch, a, b]) with (a, b) from (i, j) by, in this order of
 * application to the image: a crop at (oy[s], ox[s]) of the image zero-padded by pad, a flip of
 * the width (flip_w[s]), of the height (flip_h[s]), and a transpose (turn[s], square images only).
 * Any of oy/ox (both or neither), flip_w, flip_h, turn may be NULL: that step is skipped.
 * normalise(v) = (v * (1/255) - mean[ch]) * inv_std[ch] in float32. Returns 0, or 1 for bad
 * arguments (an index out of [0, n), an offset out of [0, 2 pad], a turn of a non-square image). */
int augment_u8(const uint8_t *x, int64_t n, int64_t c, int64_t h, int64_t w, const int64_t *idx,
               int64_t b, int64_t pad, const int64_t *oy, const int64_t *ox, const uint8_t *flip_w,
               const uint8_t *flip_h, const uint8_t *turn, const float *mean, const float *inv_std,
               float *out) {
    if (!x || !idx || !mean || !inv_std || !out || n < 1 || c < 1 || h < 1 || w < 1 || b < 0 ||
        pad < 0 || (!oy) != (!ox))
        return 1;
    for (int64_t s = 0; s < b; ++s) {
        if (idx[s] < 0 || idx[s] >= n) return 1;
        if (oy && (oy[s] < 0 || oy[s] > 2 * pad || ox[s] < 0 || ox[s] > 2 * pad)) return 1;
        if (turn && turn[s] && h != w) return 1;
    }
    const float inv255 = (float)(1.0 / 255.0);
    const int64_t plane = h * w;
    for (int64_t s = 0; s < b; ++s) {
        const uint8_t *img = x + idx[s] * c * plane;
        const int64_t dy = oy ? oy[s] - pad : 0, dx = ox ? ox[s] - pad : 0;
        const int fw = flip_w && flip_w[s], fh = flip_h && flip_h[s], tr = turn && turn[s];
        for (int64_t ch = 0; ch < c; ++ch) {
            const uint8_t *src = img + ch * plane;
            float *dst = out + (s * c + ch) * plane;
            const float m = mean[ch], is = inv_std[ch];
            const float zero = (0.0f * inv255 - m) * is;
            if (tr) {   /* square: out[i, j] = flipped[j, i], a strided walk (aerial data only) */
                for (int64_t i = 0; i < h; ++i)
                    for (int64_t j = 0; j < w; ++j) {
                        int64_t a = fh ? h - 1 - j : j, bb = fw ? w - 1 - i : i;
                        a += dy;
                        bb += dx;
                        dst[i * w + j] = (a < 0 || a >= h || bb < 0 || bb >= w)
                                             ? zero : ((float)src[a * w + bb] * inv255 - m) * is;
                    }
                continue;
            }
            /* rows: output j reads source column (fw ? w-1-j : j) + dx, valid for j in [j0, j1) */
            int64_t j0, j1;
            if (!fw) {
                j0 = dx < 0 ? -dx : 0;
                j1 = w - (dx > 0 ? dx : 0);
            } else {
                j0 = dx > 0 ? dx : 0;
                j1 = w + (dx < 0 ? dx : 0);
            }
            if (j1 < j0) j1 = j0;
            for (int64_t i = 0; i < h; ++i) {
                float *drow = dst + i * w;
                const int64_t a = (fh ? h - 1 - i : i) + dy;
                if (a < 0 || a >= h) {
                    for (int64_t j = 0; j < w; ++j) drow[j] = zero;
                    continue;
                }
                for (int64_t j = 0; j < j0; ++j) drow[j] = zero;
                for (int64_t j = j1; j < w; ++j) drow[j] = zero;
                const uint8_t *srow = src + a * w;   /* in bounds: columns j0..j1 map into [0, w) */
                if (!fw) {
                    for (int64_t j = j0; j < j1; ++j) drow[j] = ((float)srow[j + dx] * inv255 - m) * is;
                } else {
                    const int64_t last = w - 1 + dx;
                    for (int64_t j = j0; j < j1; ++j) drow[j] = ((float)srow[last - j] * inv255 - m) * is;
                }
            }
        }
    }
    return 0;
}
