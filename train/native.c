/* The native CPU kernels of edge-students, compiled on first use by train/native.py.
 *
 * Why this exists: a small net's CPU training step at batch 64 takes 5-10 ms, and after its
 * convolutions every distinct PyTorch op runs cache-cold at 20-75 us. Parts of the step are
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
 * 3. augment_robust_u8: the same with the robustness steps of "aerial-robust" (tone, saturation,
 *    zoom, blur, noise, JPEG; train/data/robust.py), bit-identical to its PyTorch ops.
 *
 * Deterministic. Plain C with GCC/Clang vector extensions; on x86-64 an AVX2 Gram kernel (and
 * AVX2 builds of the robustness steps) are chosen at run time when the CPU has them. Only
 * augment_robust_u8 uses threads: its samples are independent and shared among as many threads
 * as PyTorch uses. Built with -ffp-contract=off, so no multiply-add is fused and the
 * normalisation rounds exactly as PyTorch and NumPy do.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NATIVE_ABI 3

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

/* ---------------------------------------------------------------------------------------------
 * augment_robust_u8: the "aerial-robust" policy (train/data/robust.py) in one call, bit-identical
 * to the PyTorch ops there. Every step maps uint8 to uint8 with integer arithmetic, or with
 * float32 operations whose results are exact integers or single correctly rounded operations
 * (the DCT: integers below 2^24, see DCT_BITS in robust.py), so the order of a sum does not
 * matter and the loops below are free to run in whatever order vectorises. Per sample: tone
 * table, saturation, zoom, blur, noise, JPEG; then flips, turn and normalisation (augment_u8).
 * The per-sample work is compiled twice, generic and AVX2 (no FMA), chosen as the Gram kernel.
 */

/* the columns of params, in train/data/robust.py's PARAMS order */
enum { P_SAT, P_ZSTEP_Y, P_ZSTEP_X, P_ZBASE_Y, P_ZBASE_X, P_BLUR_KIND, P_BLUR_SIZE, P_BLUR_DIR,
       P_NOISE_S16, P_NOISE_Y, P_NOISE_X, P_JPEG_Q, N_PARAMS };
#define NOISE_N 256
#define MAX_BLUR 3   /* the largest blur radius: defocus 3, motion 7 px */
#define RND_MAGIC 12582912.0f   /* 1.5 * 2^23: (v + M) - M rounds |v| < 2^22 half to even */
#define RB static inline __attribute__((always_inline))

static inline int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }
static inline int32_t clamp255(int32_t v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static int64_t reflect101(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * (n - 1);
    int64_t r = i % period;
    if (r < 0) r += period;
    return r >= n ? period - r : r;
}

/* scratch of one call, carved from one allocation */
typedef struct {
    uint8_t *a, *b;               /* two images c*h*w */
    uint16_t *rows;               /* blur: the plane padded by MAX_BLUR columns; zoom: one row */
    int32_t *tab;                 /* zoom tables: 3 (h + w) */
    int32_t *line;                /* row scratch (blur, noise, chroma upsampling): 2 (w + 2 MAX_BLUR) + 3 wp */
    float *planes;                /* JPEG: 4 hp wp (hp, wp: h, w rounded up to 16) */
} Scratch;

/* tone table per channel, then saturation about the BT.601 luma (3 channels, sat != 256) */
RB void rb_tone(const uint8_t *restrict src, int64_t c, int64_t plane, const uint8_t *restrict lut,
                int32_t sat, uint8_t *restrict dst) {
    for (int64_t ch = 0; ch < c; ++ch) {
        const uint8_t *restrict s = src + ch * plane;
        const uint8_t *restrict t = lut + ch * 256;
        uint8_t *restrict d = dst + ch * plane;
        for (int64_t p = 0; p < plane; ++p) d[p] = t[s[p]];
    }
    if (c != 3 || sat == 256) return;   /* 256: y + (256 (x - y) + 128) >> 8 == x */
    uint8_t *restrict r = dst, *restrict g = dst + plane, *restrict b = dst + 2 * plane;
    for (int64_t p = 0; p < plane; ++p) {
        const int32_t R = r[p], G = g[p], B = b[p];
        const int32_t y = (77 * R + 150 * G + 29 * B + 128) >> 8;
        r[p] = (uint8_t)clamp255(y + ((sat * (R - y) + 128) >> 8));
        g[p] = (uint8_t)clamp255(y + ((sat * (G - y) + 128) >> 8));
        b[p] = (uint8_t)clamp255(y + ((sat * (B - y) + 128) >> 8));
    }
}

/* bilinear zoom in 1/256 px, separable (the weighted sum is an exact integer in either order):
 * rows blended first into 16 bits (<= 256 * 255), then the columns gathered */
RB void rb_zoom(const uint8_t *restrict src, int64_t c, int64_t h, int64_t w, const int32_t *prm,
                Scratch *sc, uint8_t *restrict dst) {
    int32_t *restrict ya = sc->tab, *restrict yb = ya + h, *restrict fy = yb + h;
    int32_t *restrict xa = fy + h, *restrict xb = xa + w, *restrict fx = xb + w;
    uint16_t *restrict row = sc->rows;
    for (int64_t i = 0; i < h; ++i) {
        const int64_t q = prm[P_ZBASE_Y] + i * (int64_t)prm[P_ZSTEP_Y];
        ya[i] = (int32_t)reflect101(q >> 8, h);
        yb[i] = (int32_t)reflect101((q >> 8) + 1, h);
        fy[i] = (int32_t)(q & 255);
    }
    for (int64_t j = 0; j < w; ++j) {
        const int64_t q = prm[P_ZBASE_X] + j * (int64_t)prm[P_ZSTEP_X];
        xa[j] = (int32_t)reflect101(q >> 8, w);
        xb[j] = (int32_t)reflect101((q >> 8) + 1, w);
        fx[j] = (int32_t)(q & 255);
    }
    for (int64_t ch = 0; ch < c; ++ch) {
        const uint8_t *restrict s = src + ch * h * w;
        uint8_t *restrict d = dst + ch * h * w;
        for (int64_t i = 0; i < h; ++i) {
            const uint8_t *restrict r0 = s + ya[i] * w, *restrict r1 = s + yb[i] * w;
            const uint16_t w1 = (uint16_t)fy[i], w0 = (uint16_t)(256 - fy[i]);
            for (int64_t j = 0; j < w; ++j) row[j] = (uint16_t)(w0 * r0[j] + w1 * r1[j]);
            for (int64_t j = 0; j < w; ++j)
                d[i * w + j] = (uint8_t)(((256 - fx[j]) * (int32_t)row[xa[j]] + fx[j] * (int32_t)row[xb[j]] + 32768) >> 16);
        }
    }
}

/* the plane with r columns repeated at each side: rows of stride w + 2r (16-bit) */
RB void rb_pad_cols(const uint8_t *restrict s, int64_t h, int64_t w, int r, uint16_t *restrict out) {
    const int64_t st = w + 2 * r;
    for (int64_t i = 0; i < h; ++i) {
        uint16_t *restrict o = out + i * st;
        const uint8_t *restrict si = s + i * w;
        for (int t = 0; t < r; ++t) { o[t] = si[0]; o[r + w + t] = si[w - 1]; }
        for (int64_t j = 0; j < w; ++j) o[r + j] = si[j];
    }
}

/* separable binomial kernel of radius R (sum 4^R per axis), edges repeated: columns first into
 * 16 bits (<= 64 * 255), then rows in 32 bits. R is a constant at each call (unrolled taps). */
RB void rb_defocus_r(const uint8_t *restrict src, int64_t c, int64_t h, int64_t w, const int R,
                     const int32_t *k, Scratch *sc, uint8_t *restrict dst) {
    const int shift = 4 * R;
    const int32_t half = 1 << (shift - 1);
    const int64_t st = w + 2 * R;
    uint16_t *restrict pad = sc->rows;
    uint16_t *restrict acc = (uint16_t *)sc->line;
    const uint16_t *pr[2 * MAX_BLUR + 1];
    for (int64_t ch = 0; ch < c; ++ch) {
        rb_pad_cols(src + ch * h * w, h, w, R, pad);
        uint8_t *restrict d = dst + ch * h * w;
        for (int64_t i = 0; i < h; ++i) {
            for (int t = 0; t <= 2 * R; ++t) pr[t] = pad + clampi(i + t - R, 0, h - 1) * st;
            for (int64_t j = 0; j < st; ++j) {
                uint16_t v = 0;
                for (int t = 0; t <= 2 * R; ++t) v += (uint16_t)(k[t] * pr[t][j]);
                acc[j] = v;
            }
            for (int64_t j = 0; j < w; ++j) {
                int32_t v = 0;
                for (int t = 0; t <= 2 * R; ++t) v += k[t] * (int32_t)acc[j + t];
                d[i * w + j] = (uint8_t)((v + half) >> shift);
            }
        }
    }
}

RB void rb_defocus(const uint8_t *restrict src, int64_t c, int64_t h, int64_t w, int r,
                   Scratch *sc, uint8_t *restrict dst) {
    static const int32_t k1[] = {1, 2, 1}, k2[] = {1, 4, 6, 4, 1}, k3[] = {1, 6, 15, 20, 15, 6, 1};
    switch (r) {
    case 1: rb_defocus_r(src, c, h, w, 1, k1, sc, dst); break;
    case 2: rb_defocus_r(src, c, h, w, 2, k2, sc, dst); break;
    default: rb_defocus_r(src, c, h, w, 3, k3, sc, dst);
    }
}

/* the rounded mean of LEN pixels along (dy, dx) through each pixel, coordinates clamped; LEN is
 * a constant at each call (unrolled taps, division by a constant), the sums fit 16 bits */
RB void rb_motion_n(const uint8_t *restrict src, int64_t c, int64_t h, int64_t w, const int LEN,
                    int dy, int dx, Scratch *sc, uint8_t *restrict dst) {
    const int r = LEN / 2;
    const int64_t st = w + 2 * r;
    uint16_t *restrict pad = sc->rows;
    const uint16_t *pr[2 * MAX_BLUR + 1];
    for (int64_t ch = 0; ch < c; ++ch) {
        rb_pad_cols(src + ch * h * w, h, w, r, pad);
        uint8_t *restrict d = dst + ch * h * w;
        for (int64_t i = 0; i < h; ++i) {
            for (int t = -r; t <= r; ++t) pr[t + r] = pad + clampi(i + t * dy, 0, h - 1) * st + r + t * dx;
            for (int64_t j = 0; j < w; ++j) {
                uint16_t v = (uint16_t)r;
                for (int t = 0; t < LEN; ++t) v += pr[t][j];
                d[i * w + j] = (uint8_t)(v / LEN);
            }
        }
    }
}

RB void rb_motion(const uint8_t *restrict src, int64_t c, int64_t h, int64_t w, int len, int dir,
                  Scratch *sc, uint8_t *restrict dst) {
    static const int dys[] = {0, 1, 1, 1}, dxs[] = {1, 0, 1, -1};
    const int dy = dys[dir], dx = dxs[dir];
    switch (len) {   /* 3, 5 or 7 (robust_params_ok) */
    case 3: rb_motion_n(src, c, h, w, 3, dy, dx, sc, dst); break;
    case 5: rb_motion_n(src, c, h, w, 5, dy, dx, sc, dst); break;
    default: rb_motion_n(src, c, h, w, 7, dy, dx, sc, dst);
    }
}

/* luma noise: (field * sigma16 + 512) >> 10 grey levels added to every channel, clamped; the
 * field's row is read in (at most) two runs that wrap around */
RB void rb_noise(uint8_t *restrict img, int64_t c, int64_t h, int64_t w, const int16_t *restrict field,
                 const int32_t *prm, Scratch *sc) {
    const int32_t s16 = prm[P_NOISE_S16], x0 = prm[P_NOISE_X];
    int16_t *restrict n = (int16_t *)sc->line;
    for (int64_t i = 0; i < h; ++i) {
        const int16_t *restrict row = field + ((prm[P_NOISE_Y] + i) & (NOISE_N - 1)) * NOISE_N;
        for (int64_t j0 = 0; j0 < w; j0 += NOISE_N) {
            const int64_t end = j0 + NOISE_N < w ? j0 + NOISE_N : w, split = j0 + NOISE_N - x0;
            const int64_t mid = split < end ? split : end;
            for (int64_t j = j0; j < mid; ++j) n[j] = (int16_t)((row[x0 + j - j0] * s16 + 512) >> 10);
            for (int64_t j = mid; j < end; ++j) n[j] = (int16_t)((row[j - mid] * s16 + 512) >> 10);
        }
        for (int64_t ch = 0; ch < c; ++ch) {
            uint8_t *restrict p = img + ch * h * w + i * w;
            for (int64_t j = 0; j < w; ++j) p[j] = (uint8_t)clamp255(p[j] + n[j]);
        }
    }
}

typedef float v8f __attribute__((vector_size(32)));

/* out[k][0..8) = sum_j a[k][j] * b[j][0..8) for k < 8 (8x8 row-major): every DCT pass. The sums
 * are exact integers, so their order does not matter; the rows of b are vectors, a's entries
 * scalars read from memory (no lane extraction: cheap to compile and to run) */
RB void mat8(const float *restrict a, const float *restrict b, float *restrict out) {
    v8f rows[8];
    memcpy(rows, b, sizeof rows);
    for (int k = 0; k < 8; ++k) {
        v8f acc = rows[0] * a[k * 8];
        for (int j = 1; j < 8; ++j) acc += rows[j] * a[k * 8 + j];
        memcpy(out + 8 * k, &acc, sizeof acc);
    }
}

static inline float rnd(float v) { return (v + RND_MAGIC) - RND_MAGIC; }

/* one plane (hp x wp, multiples of 8, integer values 0..255 as floats) through the 8x8 DCT,
 * quantisation (q, qinv: 64 entries, row-major over vertical, horizontal frequency) and back;
 * m: the DCT matrix (row = frequency), mt its transpose. With X a block and M = m:
 * T = round(X M^T / 2^11), F = M T, G = round(F qinv) q, S = round(G^T ... ) as robust.py does:
 * forward rows then columns, inverse columns then rows, each rescaled and rounded half to even. */
RB void jpeg_plane_body(float *restrict plane, int64_t hp, int64_t wp, const float *restrict m,
                        const float *restrict mt, const int32_t *restrict q, const float *restrict qinv) {
    float x[64], t[64], f[64], qf[64];
    for (int i = 0; i < 64; ++i) qf[i] = (float)q[i];
    for (int64_t by = 0; by < hp; by += 8)
        for (int64_t bx = 0; bx < wp; bx += 8) {
            for (int y = 0; y < 8; ++y)
                for (int i = 0; i < 8; ++i) x[y * 8 + i] = plane[(by + y) * wp + bx + i] - 128.0f;
            mat8(x, mt, t);                                   /* t[y][u] = sum_i x[y][i] m[u][i] */
            for (int i = 0; i < 64; ++i) t[i] = rnd(t[i] * (1.0f / 2048.0f));
            mat8(m, t, f);                                    /* f[v][u] = sum_y m[v][y] t[y][u] */
            for (int i = 0; i < 64; ++i) f[i] = rnd(f[i] * qinv[i]) * qf[i];
            mat8(mt, f, t);                                   /* t[y][u] = sum_v m[v][y] f[v][u] */
            for (int i = 0; i < 64; ++i) t[i] = rnd(t[i] * (1.0f / 2048.0f));
            mat8(t, m, x);                                    /* x[y][i] = sum_u t[y][u] m[u][i] */
            for (int y = 0; y < 8; ++y)
                for (int i = 0; i < 8; ++i) {
                    const float v = rnd(x[y * 8 + i] * (1.0f / 2048.0f)) + 128.0f;
                    plane[(by + y) * wp + bx + i] = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
                }
        }
}

#define JPEG_PLANE_ARGS float *restrict plane, int64_t hp, int64_t wp, const float *restrict m, \
    const float *restrict mt, const int32_t *restrict q, const float *restrict qinv
/* not inlined: called for up to three planes, it is compiled once per target */
__attribute__((noinline)) static void jpeg_plane_generic(JPEG_PLANE_ARGS) {
    jpeg_plane_body(plane, hp, wp, m, mt, q, qinv);
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_CLONE 1
__attribute__((noinline, target("avx2"))) static void jpeg_plane_avx2(JPEG_PLANE_ARGS) {
    jpeg_plane_body(plane, hp, wp, m, mt, q, qinv);
}
#else
#define HAVE_AVX2_CLONE 0
#define jpeg_plane_avx2 jpeg_plane_generic
#endif

RB void rb_jpeg_plane(int avx2, JPEG_PLANE_ARGS) {
    if (avx2) jpeg_plane_avx2(plane, hp, wp, m, mt, q, qinv);
    else jpeg_plane_generic(plane, hp, wp, m, mt, q, qinv);
}

/* chroma 4:2:0 as libjpeg: 2x2 sums + 1 or 2 (by column parity) >> 2 */
RB void rb_jpeg_down2(const float *restrict src, int64_t hp, int64_t wp, float *restrict dst) {
    const int64_t wh = wp / 2;
    for (int64_t i = 0; i < hp / 2; ++i) {
        const float *restrict s0 = src + 2 * i * wp, *restrict s1 = s0 + wp;
        for (int64_t j = 0; j < wh; ++j) {
            const int32_t sum = (int32_t)s0[2 * j] + (int32_t)s0[2 * j + 1] + (int32_t)s1[2 * j] + (int32_t)s1[2 * j + 1];
            dst[i * wh + j] = (float)((sum + 1 + (int32_t)(j & 1)) >> 2);
        }
    }
}

/* libjpeg's "fancy" 2x upsampling of full-resolution row i from a half plane hh x wh: out[0..w) */
RB void rb_jpeg_up2_row(const float *restrict p, int64_t hh, int64_t wh, int64_t i, int64_t w,
                        int32_t *restrict cs, int32_t *restrict out) {
    const int64_t ci = i >> 1, oi = clampi(ci + ((i & 1) ? 1 : -1), 0, hh - 1);
    const float *restrict near = p + ci * wh, *restrict far = p + oi * wh;
    for (int64_t j = 0; j < wh; ++j) cs[j + 1] = 3 * (int32_t)near[j] + (int32_t)far[j];
    cs[0] = cs[1];
    cs[wh + 1] = cs[wh];
    for (int64_t jj = 0; jj < w / 2; ++jj) {
        out[2 * jj] = (3 * cs[jj + 1] + cs[jj] + 8) >> 4;
        out[2 * jj + 1] = (3 * cs[jj + 1] + cs[jj + 2] + 7) >> 4;
    }
    if (w & 1) out[w - 1] = (3 * cs[w / 2 + 1] + cs[w / 2] + 8) >> 4;
}

/* JPEG-like coding of one image in place: JFIF YCbCr 4:2:0 for 3 channels, else each channel as
 * luma; planes padded by repetition to multiples of 16 */
RB void rb_jpeg(int avx2, uint8_t *restrict img, int64_t c, int64_t h, int64_t w,
                const float *restrict m, const float *restrict mt, const int32_t *restrict q,
                const float *restrict qinv, Scratch *sc) {
    const int64_t hp = (h + 15) / 16 * 16, wp = (w + 15) / 16 * 16, hh = hp / 2, wh = wp / 2;
    const int64_t plane = h * w;
    float *restrict yp = sc->planes;
    if (c != 3) {
        for (int64_t ch = 0; ch < c; ++ch) {
            uint8_t *restrict s = img + ch * plane;
            for (int64_t i = 0; i < hp; ++i)
                for (int64_t j = 0; j < wp; ++j)
                    yp[i * wp + j] = s[clampi(i, 0, h - 1) * w + clampi(j, 0, w - 1)];
            rb_jpeg_plane(avx2, yp, hp, wp, m, mt, q, qinv);
            for (int64_t i = 0; i < h; ++i)
                for (int64_t j = 0; j < w; ++j) s[i * w + j] = (uint8_t)yp[i * wp + j];
        }
        return;
    }
    float *restrict cbf = yp + hp * wp, *restrict crf = cbf + hp * wp;
    float *restrict cb = crf + hp * wp, *restrict cr = cb + hh * wh;
    for (int64_t i = 0; i < hp; ++i) {
        const int64_t si = clampi(i, 0, h - 1) * w;
        const uint8_t *restrict R = img + si, *restrict G = img + plane + si, *restrict B = img + 2 * plane + si;
        for (int64_t j = 0; j < wp; ++j) {
            const int64_t sj = j < w ? j : w - 1;
            const int32_t r = R[sj], g = G[sj], b = B[sj];
            yp[i * wp + j] = (float)((19595 * r + 38470 * g + 7471 * b + 32768) >> 16);
            cbf[i * wp + j] = (float)((-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16);
            crf[i * wp + j] = (float)((32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16);
        }
    }
    rb_jpeg_down2(cbf, hp, wp, cb);
    rb_jpeg_down2(crf, hp, wp, cr);
    rb_jpeg_plane(avx2, yp, hp, wp, m, mt, q, qinv);
    rb_jpeg_plane(avx2, cb, hh, wh, m, mt, q + 64, qinv + 64);
    rb_jpeg_plane(avx2, cr, hh, wh, m, mt, q + 64, qinv + 64);
    int32_t *restrict cs = sc->line, *restrict u = cs + wh + 2, *restrict v = u + w;
    for (int64_t i = 0; i < h; ++i) {
        rb_jpeg_up2_row(cb, hh, wh, i, w, cs, u);
        rb_jpeg_up2_row(cr, hh, wh, i, w, cs, v);
        const float *restrict yr = yp + i * wp;
        uint8_t *restrict R = img + i * w, *restrict G = R + plane, *restrict B = G + plane;
        for (int64_t j = 0; j < w; ++j) {
            const int32_t y = (int32_t)yr[j], cu = u[j] - 128, cv = v[j] - 128;
            R[j] = (uint8_t)clamp255(y + ((91881 * cv + 32768) >> 16));
            G[j] = (uint8_t)clamp255(y + ((-22554 * cu - 46802 * cv + 32768) >> 16));
            B[j] = (uint8_t)clamp255(y + ((116130 * cu + 32768) >> 16));
        }
    }
}

/* the robustness steps of one sample, from src into a or b of sc; returns the result */
RB const uint8_t *rb_sample(int avx2, const uint8_t *src, int64_t c, int64_t h, int64_t w, const int32_t *prm,
                            const uint8_t *lut, const int32_t *q, const float *qinv,
                            const int16_t *noise, const float *m, const float *mt, Scratch *sc) {
    uint8_t *cur = sc->a, *other = sc->b, *swap;
    rb_tone(src, c, h * w, lut, prm[P_SAT], cur);
    if (prm[P_ZSTEP_Y] != 256 || prm[P_ZSTEP_X] != 256 || prm[P_ZBASE_Y] != 0 || prm[P_ZBASE_X] != 0) {
        rb_zoom(cur, c, h, w, prm, sc, other);
        swap = cur; cur = other; other = swap;
    }
    if (prm[P_BLUR_KIND]) {
        if (prm[P_BLUR_KIND] == 1) rb_defocus(cur, c, h, w, prm[P_BLUR_SIZE], sc, other);
        else rb_motion(cur, c, h, w, prm[P_BLUR_SIZE], prm[P_BLUR_DIR], sc, other);
        swap = cur; cur = other; other = swap;
    }
    if (prm[P_NOISE_S16]) rb_noise(cur, c, h, w, noise, prm, sc);
    if (prm[P_JPEG_Q]) rb_jpeg(avx2, cur, c, h, w, m, mt, q, qinv, sc);
    return cur;
}

#define RB_SAMPLE_ARGS const uint8_t *src, int64_t c, int64_t h, int64_t w, const int32_t *prm, \
    const uint8_t *lut, const int32_t *q, const float *qinv, const int16_t *noise, const float *m, \
    const float *mt, Scratch *sc
#define RB_SAMPLE_CALL src, c, h, w, prm, lut, q, qinv, noise, m, mt, sc
static const uint8_t *rb_sample_generic(RB_SAMPLE_ARGS) { return rb_sample(0, RB_SAMPLE_CALL); }
#if HAVE_AVX2_CLONE
__attribute__((target("avx2"))) static const uint8_t *rb_sample_avx2(RB_SAMPLE_ARGS) {
    return rb_sample(1, RB_SAMPLE_CALL);
}
#endif

static int robust_params_ok(const int32_t *p, int64_t h, int64_t w, int turn) {
    if (p[P_SAT] < 0 || p[P_SAT] > 1024 || p[P_ZSTEP_Y] < 1 || p[P_ZSTEP_X] < 1 ||
        p[P_ZSTEP_Y] > 4096 || p[P_ZSTEP_X] > 4096 || p[P_NOISE_S16] < 0 || p[P_NOISE_S16] > 4096 ||
        p[P_NOISE_Y] < 0 || p[P_NOISE_Y] >= NOISE_N || p[P_NOISE_X] < 0 || p[P_NOISE_X] >= NOISE_N ||
        p[P_JPEG_Q] < 0 || p[P_JPEG_Q] > 100 || (turn && h != w))
        return 0;
    switch (p[P_BLUR_KIND]) {
    case 0: return 1;
    case 1: return p[P_BLUR_SIZE] >= 1 && p[P_BLUR_SIZE] <= 3;
    case 2: return (p[P_BLUR_SIZE] == 3 || p[P_BLUR_SIZE] == 5 || p[P_BLUR_SIZE] == 7) &&
                   p[P_BLUR_DIR] >= 0 && p[P_BLUR_DIR] <= 3;
    default: return 0;
    }
}

/* one thread's share of a batch: samples [s0, s1) */
typedef struct {
    const uint8_t *x, *flip_w, *flip_h, *turn, *lut;
    const int64_t *idx;
    const int32_t *params, *qtab;
    const int16_t *noise;
    const float *qinv, *dct, *mt, *mean, *inv_std;
    float *out;
    int64_t c, h, w, s0, s1;
    int rc;
} RobustJob;

static int robust_samples(const RobustJob *j) {
    const int64_t c = j->c, h = j->h, w = j->w, plane = h * w;
    const int64_t hp = (h + 15) / 16 * 16, wp = (w + 15) / 16 * 16;
    const int64_t wide = w + 2 * MAX_BLUR, nline = 2 * wide + 3 * wp;
    const size_t nplanes = (size_t)(4 * hp * wp), nimg = (size_t)(c * plane);
    const size_t nrows = (size_t)((h + 2 * MAX_BLUR) * wide), ntab = (size_t)(3 * (h + w));
    char *mem = malloc(sizeof(float) * nplanes + sizeof(int32_t) * (ntab + (size_t)nline) +
                       sizeof(uint16_t) * nrows + 2 * nimg);
    if (!mem) return 2;
    Scratch sc;
    sc.planes = (float *)mem;
    sc.tab = (int32_t *)(sc.planes + nplanes);
    sc.line = sc.tab + ntab;
    sc.rows = (uint16_t *)(sc.line + nline);
    sc.a = (uint8_t *)(sc.rows + nrows);
    sc.b = sc.a + nimg;
    const int64_t zero = 0;
    int rc = 0;
    for (int64_t s = j->s0; s < j->s1 && rc == 0; ++s) {
        const int32_t *prm = j->params + s * N_PARAMS, *q = j->qtab + s * 128;
        const uint8_t *src = j->x + j->idx[s] * (int64_t)nimg, *lt = j->lut + s * c * 256;
        const float *qi = j->qinv + s * 128;
        const uint8_t *img;
#if HAVE_AVX2_CLONE
        if (use_avx2) img = rb_sample_avx2(src, c, h, w, prm, lt, q, qi, j->noise, j->dct, j->mt, &sc);
        else
#endif
            img = rb_sample_generic(src, c, h, w, prm, lt, q, qi, j->noise, j->dct, j->mt, &sc);
        rc = augment_u8(img, 1, c, h, w, &zero, 1, 0, NULL, NULL, j->flip_w ? j->flip_w + s : NULL,
                        j->flip_h ? j->flip_h + s : NULL, j->turn ? j->turn + s : NULL, j->mean,
                        j->inv_std, j->out + s * (int64_t)nimg);
    }
    free(mem);
    return rc;
}

static void *robust_worker(void *arg) {
    RobustJob *j = (RobustJob *)arg;
    j->rc = robust_samples(j);
    return NULL;
}

#define MAX_THREADS 64

/* out[s] = normalise(turn(flips(robust(x[idx[s]])))) as float32 [b, c, h, w]. flip_w/flip_h/turn:
 * NULL or b flags; params: b x nparams int32 (nparams must be N_PARAMS); lut: b x c x 256;
 * qtab/qinv: b x 2 x 64 (luma, chroma); noise: 256 x 256 int16; dct: the 8x8 matrix
 * round(2^11 D), row = frequency. threads: how many threads share the samples (each sample is
 * computed alone, so the result does not depend on it). Returns 0, 1 for bad arguments, 2 when
 * out of memory. */
int augment_robust_u8(const uint8_t *x, int64_t n, int64_t c, int64_t h, int64_t w,
                      const int64_t *idx, int64_t b, const uint8_t *flip_w, const uint8_t *flip_h,
                      const uint8_t *turn, const int32_t *params, int64_t nparams,
                      const uint8_t *lut, const int32_t *qtab, const float *qinv,
                      const int16_t *noise, const float *dct, const float *mean,
                      const float *inv_std, int64_t threads, float *out) {
    if (!x || !idx || !params || !lut || !qtab || !qinv || !noise || !dct || !mean || !inv_std ||
        !out || n < 1 || c < 1 || h < 1 || w < 1 || b < 0 || nparams != N_PARAMS ||
        h > (1 << 15) || w > (1 << 15))
        return 1;
    for (int64_t s = 0; s < b; ++s)
        if (idx[s] < 0 || idx[s] >= n || !robust_params_ok(params + s * N_PARAMS, h, w, turn && turn[s]))
            return 1;
    float mt[64];
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) mt[i * 8 + j] = dct[j * 8 + i];
    if (use_avx2 < 0) posd_select_kernel(-1);    /* chosen before any thread reads it */
    const int64_t nt = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads > b ? (b > 0 ? b : 1) : threads;
    RobustJob jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 0; t < nt; ++t) {
        jobs[t] = (RobustJob){x, flip_w, flip_h, turn, lut, idx, params, qtab, noise, qinv, dct, mt,
                              mean, inv_std, out, c, h, w, b * t / nt, b * (t + 1) / nt, 0};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, robust_worker, &jobs[t]) == 0;
    }
    robust_worker(&jobs[0]);
    int rc = jobs[0].rc;
    for (int64_t t = 1; t < nt; ++t) {
        if (started[t]) pthread_join(tid[t], NULL);
        else robust_worker(&jobs[t]);            /* no thread to be had: do its share here */
        if (rc == 0) rc = jobs[t].rc;
    }
    return rc;
}
