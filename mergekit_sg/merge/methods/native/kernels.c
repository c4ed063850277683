/* Fused kernels of the task-vector merge methods (task arithmetic, TIES, DARE, breadcrumbs)
 * and of SLERP.
 *
 * One pass per chunk does what the torch fallback does in ~25 elementwise passes, with the
 * same float32 operations in the same order, so the bytes are the same (tested): IEEE float32,
 * no fast-math, no FMA contraction (-ffp-contract=off). Within a 512-element block, each
 * input is one fused loop (difference, mask, scale, weight), the election one loop per input,
 * each output one loop: the per-element order of operations is the formula's, only the loops
 * are fused (per element nothing is reordered, so fusing changes no bit). With AVX2, up to 4
 * inputs of one dtype (the base's) and one kind (plain, magnitude threshold, DARE with its
 * keep bits) take block8 instead: every input, the election and the outputs of 8 elements in
 * registers, the same operations per element again (the block loops store and reload each
 * step). Inputs are float32 or bfloat16, the output float32 or bfloat16 (bfloat16 rounded to
 * nearest even, NaN to 0xFFFF, as torch's vectorised copy does). Built at first use by
 * mergekit_sg.merge.methods.native; the torch code is the fallback wherever no C compiler is
 * found.
 *
 * Per input i (slot 1..N-1, slot 0 the base), at global flat index g:
 *   d_i = x_i - base
 *   d_i = d_i * mask_i(g)        magnitude: |d_i| >= v before `cut`, > v from `cut` on;
 *                                outliers: keep set minus drop set; DARE: hash(key, g) < T
 *   d_i = d_i * scale_i          (rescale), d_i = d_i * w_i
 * election (TIES): m = (sum_i d_i >= 0 ? +1 : -1), vote_i = d_i * m > 0,
 *   mixed = sum_i vote_i d_i, divisor = sum_i vote_i w_i (floored, see the Python side);
 * else mixed = sum_i d_i, divisor a constant;
 *   out = (normalize ? mixed / divisor : mixed) * lambda + base.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define BLK 512
#define MAXIN 32  /* inputs per merge: the block buffers live on the stack (64 KB) */

enum { DT_F32 = 0, DT_BF16 = 1 };
enum { M_NONE = 0, M_TOP = 1, M_OUTLIERS = 2, M_DARE = 3 };
enum { K_THRESH = 0, K_ALL = 1, K_NONE = 2 };

typedef struct {
    const void *x;
    int32_t dtype;
    int32_t mode;
    int32_t keep_kind, drop_kind;
    float keep_v, drop_v;
    int64_t keep_cut, drop_cut;
    uint64_t dare_key;
    uint64_t dare_t;
    float scale, weight;
    int32_t has_scale, has_weight;
    const uint8_t *bits; /* DARE: the keep mask of the whole tensor as bits, or NULL: hash */
} gta_input;

static inline void load(const void *p, int dt, int64_t off, int n, float *dst) {
    if (dt == DT_F32) {
        memcpy(dst, (const float *)p + off, (size_t)n * 4);
    } else {
        const uint16_t *h = (const uint16_t *)p + off;
        for (int j = 0; j < n; j++) {
            uint32_t u = (uint32_t)h[j] << 16;
            memcpy(dst + j, &u, 4);
        }
    }
}

/* The kernels stream mapped page-cache pages, 4 KB each, and the hardware's stream prefetcher
 * stops at each page's end: the loops over the inputs prefetch PREFETCH_AHEAD bytes ahead,
 * one prefetch per step of 8 elements (spread out: a burst per 512-element block fills the
 * line-fill buffers and gains half as much). A prefetch is a hint: past the end of the data
 * it never faults. */
#define PREFETCH_AHEAD 8192
static inline void prefetch_at(const void *p, int dt, int64_t off) {
    __builtin_prefetch((const char *)p + off * (dt == DT_F32 ? 4 : 2) + PREFETCH_AHEAD);
}

/* One prefetch per cache line of elements [s, s + n) of p, PREFETCH_AHEAD bytes ahead (the
 * base of a block, converted once for all inputs). */
static inline void prefetch_block(const void *p, int dt, int64_t s, int n) {
    const int es = dt == DT_F32 ? 4 : 2;
    for (int k = 0; k < n * es; k += 64)
        __builtin_prefetch((const char *)p + s * es + PREFETCH_AHEAD + k);
}

static inline void store(void *p, int dt, int64_t off, int n, const float *src) {
    if (dt == DT_F32) {
        memcpy((float *)p + off, src, (size_t)n * 4);
    } else {
        uint16_t *h = (uint16_t *)p + off;
        for (int j = 0; j < n; j++) {
            uint32_t u;
            memcpy(&u, src + j, 4);
            uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
            h[j] = (src[j] != src[j]) ? (uint16_t)0xFFFFu : (uint16_t)r;
        }
    }
}

static inline uint32_t lowbias32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}

/* DARE's 32-bit draw of flat element g: two rounds of the lowbias32 integer hash keyed by
 * the 64-bit key (8 lanes at a time with AVX2); element g is kept when draw >> 8 < t. */
static inline uint32_t dare_draw(uint64_t key, uint32_t g_lo, uint32_t g_hi) {
    uint32_t h = lowbias32(g_lo ^ (uint32_t)key);
    return lowbias32(h ^ (uint32_t)(key >> 32) ^ (g_hi * 0x9E3779B9u));
}

/* m[j] = 1.0f / 0.0f: is element g0 + j kept. */
static inline void dare_mask(uint64_t key, int64_t g0, int n, uint64_t t, float *m) {
    uint32_t hi0 = (uint32_t)((uint64_t)g0 >> 32);
    if (hi0 == (uint32_t)((uint64_t)(g0 + n - 1) >> 32)) {
        uint32_t lo0 = (uint32_t)g0, tt = (uint32_t)t;
        if (t > 0xFFFFFFu) {
            for (int j = 0; j < n; j++) m[j] = 1.0f;
            return;
        }
        for (int j = 0; j < n; j++)
            m[j] = (dare_draw(key, lo0 + (uint32_t)j, hi0) >> 8) < tt ? 1.0f : 0.0f;
    } else {
        for (int j = 0; j < n; j++) {
            uint64_t g = (uint64_t)(g0 + j);
            m[j] = (dare_draw(key, (uint32_t)g, (uint32_t)(g >> 32)) >> 8) < t ? 1.0f : 0.0f;
        }
    }
}

/* m[j] = 1.0f / 0.0f: bit g0 + j of bits (LSB first): a keep mask drawn once by
 * gta_dare_sums_n and read back here instead of hashing again. */
static inline void bits_mask(const uint8_t *bits, int64_t g0, int n, float *m) {
    int j = 0;
    if ((g0 & 7) == 0) {
        const uint8_t *b = bits + (g0 >> 3);
#ifdef __AVX2__
        const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; j + 8 <= n; j += 8) {
            __m256i v = _mm256_and_si256(_mm256_set1_epi32(b[j >> 3]), sel);
            __m256 k = _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, sel));
            _mm256_storeu_ps(m + j, _mm256_and_ps(k, one));
        }
#endif
    }
    for (; j < n; j++) {
        int64_t g = g0 + j;
        m[j] = (bits[g >> 3] >> (g & 7)) & 1u ? 1.0f : 0.0f;
    }
}

/* Bits start .. start + n - 1 of out (LSB first) set to m[j] != 0, the others untouched:
 * whole bytes at once from where start + j is a multiple of 8. */
static inline void pack_bits(const float *m, int64_t start, int n, uint8_t *out) {
    int j = 0;
    for (; j < n && ((start + j) & 7); j++) {
        int64_t g = start + j;
        out[g >> 3] = (uint8_t)((out[g >> 3] & ~(1u << (g & 7))) | ((m[j] != 0.0f) << (g & 7)));
    }
    uint8_t *o = out + ((start + j) >> 3);
#ifdef __AVX2__
    for (; j + 8 <= n; j += 8, o++)
        *o = (uint8_t)_mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(m + j), _mm256_setzero_ps(), _CMP_NEQ_UQ));
#endif
    for (; j + 8 <= n; j += 8, o++) {
        unsigned b = 0;
        for (int l = 0; l < 8; l++) b |= (unsigned)(m[j + l] != 0.0f) << l;
        *o = (uint8_t)b;
    }
    for (; j < n; j++) {
        int64_t g = start + j;
        out[g >> 3] = (uint8_t)((out[g >> 3] & ~(1u << (g & 7))) | ((m[j] != 0.0f) << (g & 7)));
    }
}

/* m[j] = membership (1.0f / 0.0f) of elements g0 + j of a top set given |d| in a[]. */
static inline void top_mask(const float *a, int n, int64_t g0, int kind, float v, int64_t cut,
                            float *m) {
    if (kind == K_ALL) {
        for (int j = 0; j < n; j++) m[j] = 1.0f;
        return;
    }
    if (kind == K_NONE) {
        for (int j = 0; j < n; j++) m[j] = 0.0f;
        return;
    }
    int64_t c = cut - g0;
    int j0 = c <= 0 ? 0 : (c >= n ? n : (int)c);
    for (int j = 0; j < j0; j++) m[j] = a[j] >= v ? 1.0f : 0.0f;
    for (int j = j0; j < n; j++) m[j] = a[j] > v ? 1.0f : 0.0f;
}

/* Does a block hold NaN or inf: x - x is NaN for those, 0 otherwise. */
static inline int nonfinite(const float *x, int n) {
    int bad = 0;
    for (int j = 0; j < n; j++) bad |= (x[j] - x[j]) != 0.0f;
    return bad;
}

/* d[j] = ((x[j] - b[j]) * m[j]) * scale * weight for one input over a block, in one pass:
 * x is already in d (converted), m is computed on the fly (top set of |d|, or DARE's draw
 * from dm[]) or is 1. An absent scale or weight is a product by 1.0f, which is exact (no
 * signalling NaN survives the subtraction), so the bytes are those of the separate passes. */
static inline void input_block(const gta_input *q, const float *bb, float *d, const float *dm,
                               int n, int64_t g0) {
    const float sc = q->has_scale ? q->scale : 1.0f, w = q->has_weight ? q->weight : 1.0f;
    if (q->mode == M_TOP && q->keep_kind == K_THRESH) {
        const float v = q->keep_v;
        int64_t c = q->keep_cut - g0;
        const int ck = c <= 0 ? 0 : (c >= n ? n : (int)c);
        /* membership: |d| >= v before the cut, |d| > v from it on */
        for (int j = 0; j < n; j++) {
            float x = d[j] - bb[j];
            float a = fabsf(x);
            float m = (float)((a > v) | ((j < ck) & (a == v)));
            d[j] = ((x * m) * sc) * w;
        }
    } else if (q->mode == M_TOP && q->keep_kind == K_NONE) {
        for (int j = 0; j < n; j++) d[j] = (((d[j] - bb[j]) * 0.0f) * sc) * w;
    } else if (q->mode == M_DARE) {
        for (int j = 0; j < n; j++) d[j] = (((d[j] - bb[j]) * dm[j]) * sc) * w;
    } else { /* no sparsification, or a top set that holds everything: a product by 1 */
        for (int j = 0; j < n; j++) d[j] = ((d[j] - bb[j]) * sc) * w;
    }
}

/* 0: gta_combine takes the block loops only (the tests compare the two paths with it) */
int gta_block8 = 1;

#ifdef __AVX2__
#define FMAX 4 /* inputs block8 holds in registers */

/* Elements off .. off + 7 of x in float32 (x float32 or bfloat16; dt a constant where it is
 * inlined). */
static inline __m256 load8(const void *x, const int dt, int64_t off) {
    if (dt == DT_F32) return _mm256_loadu_ps((const float *)x + off);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)x + off));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* store()'s conversion, 8 at a time: round to nearest even, NaN to 0xFFFF. */
static inline void store8(void *p, int dt, int64_t off, __m256 a) {
    if (dt == DT_F32) {
        _mm256_storeu_ps((float *)p + off, a);
        return;
    }
    __m256i u = _mm256_castps_si256(a);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)),
                                                   odd), 16);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0xFFFF), nan);
    __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128((__m128i *)((uint16_t *)p + off), h);
}

/* The input classes combine_block8 is compiled for, each with all inputs of one class. */
enum { F_PLAIN = 0, F_TOP = 1, F_DARE = 2, F_NONE = -1 };

static int fused_class(const gta_input *q, int32_t dtype) {
    if (q->dtype != dtype) return F_NONE;
    if (q->mode == M_NONE || (q->mode == M_TOP && q->keep_kind == K_ALL)) return F_PLAIN;
    if (q->mode == M_TOP && q->keep_kind == K_THRESH) return F_TOP;
    if (q->mode == M_DARE && q->bits) return F_DARE;
    return F_NONE;
}

/* Which combine_block8 gta_combine's blocks take: 0 (the block loops) unless the base and all
 * inputs are of one dtype (bfloat16 or float32), at most FMAX, all of one class (no
 * breadcrumbs, DARE only where its keep bits are there to read); else 1 + the class +
 * 3 * (n_in - 1) + 12 for float32. */
static int fused_kind(int32_t base_dtype, const gta_input *ins, int32_t n_in) {
    if ((base_dtype != DT_BF16 && base_dtype != DT_F32) || n_in < 1 || n_in > FMAX) return 0;
    const int c = fused_class(ins, base_dtype);
    for (int i = 0; i < n_in; i++)
        if (fused_class(ins + i, base_dtype) != c || c == F_NONE) return 0;
    return 1 + c + 3 * (n_in - 1) + (base_dtype == DT_F32 ? 12 : 0);
}

/* The nonfinite bits (bit 0 the base, bit i + 1 input i) of elements [0, n) of a block, n a
 * multiple of 8: block8's exact check, for the rare block whose sum of task vectors was not
 * finite. */
static uint64_t block_nonfinite8(const int DT, const void *bq, const void *const *xp, int N,
                                 int n) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 bad[FMAX + 1];
    for (int i = 0; i <= N; i++) bad[i] = zero;
    for (int j = 0; j < n; j += 8) {
        const __m256 bb = load8(bq, DT, j);
        bad[0] = _mm256_or_ps(bad[0], _mm256_cmp_ps(_mm256_sub_ps(bb, bb), zero, _CMP_NEQ_UQ));
        for (int i = 0; i < N; i++) {
            const __m256 x = load8(xp[i], DT, j);
            bad[i + 1] =
                _mm256_or_ps(bad[i + 1], _mm256_cmp_ps(_mm256_sub_ps(x, x), zero, _CMP_NEQ_UQ));
        }
    }
    uint64_t seen = 0;
    for (int i = 0; i <= N; i++)
        if (_mm256_movemask_ps(bad[i])) seen |= (uint64_t)1 << i;
    return seen;
}

/* One block of gta_combine (n and g0 multiples of 8), 8 elements a step with every input, the
 * election and the outputs in registers: per element the same float32 operations in the same
 * order as the block loops (input_block, the election, the outputs), so the same bytes. N
 * inputs of class C and dtype DT (the base's too), constants where it is inlined, so that the
 * loops unroll. CUT (class F_TOP): 1 where some input's cut falls inside the block, so that
 * its membership is |d| > v, or |d| == v before the cut, lane by lane; 0 where every cut lies
 * outside it: then membership is one compare, |d| > t with t = v after the cut and t the float
 * below v before it (|d| > that float is |d| >= v: nothing lies between; NaN is in neither).
 * Returns the nonfinite bits (bit 0 the base, bit i + 1 input i) of the block: a NaN or inf
 * anywhere makes the sum of the task vectors d_i NaN or inf (x * 0 of an inf is NaN), so that
 * sum alone is checked and, where it is not finite (an overflow, or a NaN or inf), the block's
 * inputs are checked one by one (block_nonfinite8). */
static inline __attribute__((always_inline)) uint64_t
block8(const int N, const int C, const int DT, const int CUT, const void *base,
       const gta_input *ins, int32_t elect, int32_t normalize, int32_t floor_min_w, float min_w,
       float const_div, int32_t n_out, const int32_t *has_lambda, const float *lambda, int64_t s,
       int n, int64_t g0, void *const *outs, int32_t out_dtype) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 sc[FMAX], w[FMAX], wr[FMAX], kv[FMAX], badsum = zero;
    __m256i ck[FMAX];
    const void *xp[FMAX];
    const uint8_t *bp[FMAX];
    for (int i = 0; i < N; i++) {
        const gta_input *q = ins + i;
        sc[i] = _mm256_set1_ps(q->has_scale ? q->scale : 1.0f);
        w[i] = _mm256_set1_ps(q->has_weight ? q->weight : 1.0f);
        wr[i] = _mm256_set1_ps(q->weight); /* the election's divisor takes the field as is */
        int64_t c = q->keep_cut - g0;
        const int cb = c <= 0 ? 0 : (c >= n ? n : (int)c);
        ck[i] = _mm256_set1_epi32(cb);
        /* CUT 0: the threshold of the one compare (the block lies before the cut or after) */
        kv[i] = _mm256_set1_ps(CUT || cb < n ? q->keep_v : nextafterf(q->keep_v, -INFINITY));
        xp[i] = (const char *)q->x + s * (DT == DT_F32 ? 4 : 2);
        bp[i] = C == F_DARE ? q->bits + (g0 >> 3) : NULL;
    }
    const void *bq = (const char *)base + s * (DT == DT_F32 ? 4 : 2);
    for (int j = 0; j < n; j += 8) {
        prefetch_at(bq, DT, j);
        const __m256 bb = load8(bq, DT, j);
        __m256 d[FMAX];
        for (int i = 0; i < N; i++) {
            prefetch_at(xp[i], DT, j);
            __m256 x = _mm256_sub_ps(load8(xp[i], DT, j), bb);
            if (C == F_TOP && !CUT) { /* |d| > t: see above */
                __m256 m = _mm256_cmp_ps(_mm256_and_ps(x, absm), kv[i], _CMP_GT_OQ);
                x = _mm256_mul_ps(x, _mm256_and_ps(m, one));
            } else if (C == F_TOP) { /* |d| > v, or |d| == v before the cut */
                __m256 a = _mm256_and_ps(x, absm);
                __m256 before = _mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(ck[i], _mm256_add_epi32(lane, _mm256_set1_epi32(j))));
                __m256 m = _mm256_or_ps(_mm256_cmp_ps(a, kv[i], _CMP_GT_OQ),
                                        _mm256_and_ps(before, _mm256_cmp_ps(a, kv[i], _CMP_EQ_OQ)));
                x = _mm256_mul_ps(x, _mm256_and_ps(m, one));
            } else if (C == F_DARE) {
                __m256i b = _mm256_and_si256(_mm256_set1_epi32(bp[i][j >> 3]), sel);
                x = _mm256_mul_ps(x, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, sel)),
                                                   one));
            }
            d[i] = _mm256_mul_ps(_mm256_mul_ps(x, sc[i]), w[i]);
        }
        __m256 mixed = N > 1 ? _mm256_add_ps(d[0], d[1]) : d[0];
        for (int i = 2; i < N; i++) mixed = _mm256_add_ps(mixed, d[i]);
        badsum =
            _mm256_or_ps(badsum, _mm256_cmp_ps(_mm256_sub_ps(mixed, mixed), zero, _CMP_NEQ_UQ));
        if (elect) { /* mixed holds the sum: its sign is the majority's */
            const __m256 maj = _mm256_sub_ps(
                _mm256_mul_ps(_mm256_and_ps(_mm256_cmp_ps(mixed, zero, _CMP_GE_OQ), one),
                              _mm256_set1_ps(2.0f)),
                one);
            __m256 v = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(d[0], maj), zero, _CMP_GT_OQ),
                                     one);
            mixed = _mm256_add_ps(zero, _mm256_mul_ps(d[0], v));
            __m256 div = _mm256_mul_ps(v, wr[0]);
            for (int i = 1; i < N; i++) {
                v = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(d[i], maj), zero, _CMP_GT_OQ),
                                  one);
                mixed = _mm256_add_ps(mixed, _mm256_mul_ps(d[i], v));
                div = _mm256_add_ps(div, _mm256_mul_ps(v, wr[i]));
            }
            if (normalize) {
                if (floor_min_w) {
                    const __m256 mw = _mm256_set1_ps(min_w);
                    div = _mm256_blendv_ps(div, mw, _mm256_cmp_ps(div, mw, _CMP_LT_OQ));
                } else {
                    div = _mm256_add_ps(
                        div, _mm256_and_ps(_mm256_cmp_ps(div, zero, _CMP_EQ_OQ), one));
                }
                mixed = _mm256_div_ps(mixed, div);
            }
        } else if (normalize) {
            mixed = _mm256_div_ps(mixed, _mm256_set1_ps(const_div));
        }
        for (int k = 0; k < n_out; k++) {
            __m256 a = has_lambda[k] ? _mm256_mul_ps(mixed, _mm256_set1_ps(lambda[k])) : mixed;
            store8(outs[k], out_dtype, s + j, _mm256_add_ps(a, bb));
        }
    }
    return _mm256_movemask_ps(badsum) ? block_nonfinite8(DT, bq, xp, N, n) : 0;
}

#define BLOCK8_ARGS                                                                             \
    base, ins, elect, normalize, floor_min_w, min_w, const_div, n_out, has_lambda, lambda, s, n, \
        g0, outs, out_dtype
#define BLOCK8_CASES(N, DT, K)                                                                  \
    case 1 + F_PLAIN + 3 * (N - 1) + K: return block8(N, F_PLAIN, DT, 0, BLOCK8_ARGS);          \
    case 1 + F_TOP + 3 * (N - 1) + K:                                                           \
        return cut_inside(ins, N, g0, n) ? block8(N, F_TOP, DT, 1, BLOCK8_ARGS)                 \
                                         : block8(N, F_TOP, DT, 0, BLOCK8_ARGS);                \
    case 1 + F_DARE + 3 * (N - 1) + K: return block8(N, F_DARE, DT, 0, BLOCK8_ARGS);

/* Does some input's cut (the end of its kept ties) fall inside the block [g0, g0 + n)? */
static inline int cut_inside(const gta_input *ins, int n_in, int64_t g0, int n) {
    for (int i = 0; i < n_in; i++)
        if (ins[i].keep_cut > g0 && ins[i].keep_cut < g0 + n) return 1;
    return 0;
}

/* block8 for the kind fused_kind chose. */
static uint64_t combine_block8(int kind, const void *base, const gta_input *ins, int32_t elect,
                               int32_t normalize, int32_t floor_min_w, float min_w,
                               float const_div, int32_t n_out, const int32_t *has_lambda,
                               const float *lambda, int64_t s, int n, int64_t g0,
                               void *const *outs, int32_t out_dtype) {
    switch (kind) {
        BLOCK8_CASES(1, DT_BF16, 0)
        BLOCK8_CASES(2, DT_BF16, 0)
        BLOCK8_CASES(3, DT_BF16, 0)
        BLOCK8_CASES(4, DT_BF16, 0)
        BLOCK8_CASES(1, DT_F32, 12)
        BLOCK8_CASES(2, DT_F32, 12)
        BLOCK8_CASES(3, DT_F32, 12)
        BLOCK8_CASES(4, DT_F32, 12)
    }
    return 0;
}
#endif

int gta_combine(const void *base, int32_t base_dtype, const gta_input *ins, int32_t n_in,
                int32_t elect, int32_t normalize, int32_t floor_min_w, float min_w,
                float const_div, int32_t n_out, const int32_t *has_lambda, const float *lambda,
                int64_t start, int64_t count, void *const *outs, int32_t out_dtype,
                uint64_t *bad) {
    if (n_in < 1 || n_in > MAXIN) return -1;
    uint64_t seen = 0; /* bit 0: the base holds NaN or inf, bit i + 1: input i */
    float bb[BLK], d[MAXIN][BLK], a[BLK], m[BLK], m2[BLK];
    float mixed[BLK], div[BLK], maj[BLK];
#ifdef __AVX2__
    const int fused = gta_block8 ? fused_kind(base_dtype, ins, n_in) : 0;
#endif
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        int64_t g0 = start + s;
#ifdef __AVX2__
        if (fused && !(n & 7) && !(g0 & 7)) {
            seen |= combine_block8(fused, base, ins, elect, normalize, floor_min_w, min_w,
                                   const_div, n_out, has_lambda, lambda, s, n, g0, outs,
                                   out_dtype);
            continue;
        }
#endif
        load(base, base_dtype, s, n, bb);
        if (!(seen & 1u) && nonfinite(bb, n)) seen |= 1u;
        for (int i = 0; i < n_in; i++) {
            const gta_input *q = ins + i;
            float *di = d[i];
            load(q->x, q->dtype, s, n, di);
            if (nonfinite(di, n)) seen |= (uint64_t)1 << (i + 1);
            if (q->mode == M_OUTLIERS) { /* breadcrumbs: the separate passes */
                for (int j = 0; j < n; j++) di[j] = di[j] - bb[j];
                for (int j = 0; j < n; j++) a[j] = fabsf(di[j]);
                top_mask(a, n, g0, q->keep_kind, q->keep_v, q->keep_cut, m);
                top_mask(a, n, g0, q->drop_kind, q->drop_v, q->drop_cut, m2);
                for (int j = 0; j < n; j++) m[j] = m[j] - m2[j];
                for (int j = 0; j < n; j++) di[j] = di[j] * m[j];
                if (q->has_scale)
                    for (int j = 0; j < n; j++) di[j] = di[j] * q->scale;
                if (q->has_weight)
                    for (int j = 0; j < n; j++) di[j] = di[j] * q->weight;
                continue;
            }
            if (q->mode == M_DARE) {
                if (q->bits)
                    bits_mask(q->bits, g0, n, m);
                else
                    dare_mask(q->dare_key, g0, n, q->dare_t, m);
            }
            input_block(q, bb, di, m, n, g0);
        }
        if (elect) {
            /* m = sign of the sum (>= 0: +1), the votes d_i * m > 0, their sum and weight */
            if (n_in > 1)
                for (int j = 0; j < n; j++) maj[j] = d[0][j] + d[1][j];
            else
                for (int j = 0; j < n; j++) maj[j] = d[0][j];
            for (int i = 2; i < n_in; i++)
                for (int j = 0; j < n; j++) maj[j] = maj[j] + d[i][j];
            {
                const float *d0 = d[0];
                const float w0 = ins[0].weight;
                for (int j = 0; j < n; j++) {
                    float mj = (float)(maj[j] >= 0.0f) * 2.0f - 1.0f; /* +1 / -1 */
                    maj[j] = mj;
                    float v = (float)(d0[j] * mj > 0.0f);
                    mixed[j] = 0.0f + d0[j] * v;
                    div[j] = v * w0;
                }
            }
            for (int i = 1; i < n_in; i++) {
                const float *di = d[i];
                const float w = ins[i].weight;
                for (int j = 0; j < n; j++) {
                    float v = (float)(di[j] * maj[j] > 0.0f);
                    mixed[j] = mixed[j] + di[j] * v;
                    div[j] = div[j] + v * w;
                }
            }
            if (normalize) {
                if (floor_min_w)
                    for (int j = 0; j < n; j++)
                        mixed[j] = mixed[j] / (div[j] < min_w ? min_w : div[j]);
                else
                    for (int j = 0; j < n; j++)
                        mixed[j] = mixed[j] / (div[j] + (div[j] == 0.0f ? 1.0f : 0.0f));
            }
        } else {
            if (n_in > 1)
                for (int j = 0; j < n; j++) mixed[j] = d[0][j] + d[1][j];
            else
                for (int j = 0; j < n; j++) mixed[j] = d[0][j];
            for (int i = 2; i < n_in; i++)
                for (int j = 0; j < n; j++) mixed[j] = mixed[j] + d[i][j];
            if (normalize)
                for (int j = 0; j < n; j++) mixed[j] = mixed[j] / const_div;
        }
        /* one output per lambda: everything above is shared by them (a lambda grid) */
        for (int k = 0; k < n_out; k++) {
            const float lam = lambda[k];
            if (has_lambda[k])
                for (int j = 0; j < n; j++) a[j] = mixed[j] * lam + bb[j];
            else
                for (int j = 0; j < n; j++) a[j] = mixed[j] + bb[j];
            store(outs[k], out_dtype, s, n, a);
        }
    }
    *bad = seen;
    return 0;
}

/* The magnitude statistics pass of one input over one piece: a[j] = |x[j] - base[j]|. */
void gta_absdiff(const void *base, int32_t base_dtype, const void *x, int32_t x_dtype,
                 int64_t count, float *a) {
    float bb[BLK];
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        float *as = a + s;
        load(base, base_dtype, s, n, bb);
        load(x, x_dtype, s, n, as);
        for (int j = 0; j < n; j++) as[j] = fabsf(as[j] - bb[j]);
    }
}

/* One pass of the bracket select over a[0:count]: counts[0] = #(a < lo), counts[1] =
 * #(a > hi), and the elements with lo <= a <= hi, values and indices in order (at most cap
 * stored). Returns how many there are. NaN is in none of the three. */
int64_t gta_bracket(const float *a, int64_t count, float lo, float hi, float *vals,
                    int64_t *idx, int64_t cap, int64_t *counts) {
    int64_t below = 0, above = 0, found = 0, j = 0;
#ifdef __AVX2__
    /* 8 at a time: two compares give the counts by popcount, and the candidates (~2% of
     * the elements) are taken from the bits of the in-bracket mask */
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    for (; j + 8 <= count; j += 8) {
        __m256 x = _mm256_loadu_ps(a + j);
        __m256 lt = _mm256_cmp_ps(x, vlo, _CMP_LT_OQ), gt = _mm256_cmp_ps(x, vhi, _CMP_GT_OQ);
        __m256 in = _mm256_and_ps(_mm256_cmp_ps(x, vlo, _CMP_GE_OQ),
                                  _mm256_cmp_ps(x, vhi, _CMP_LE_OQ));
        below += __builtin_popcount((unsigned)_mm256_movemask_ps(lt));
        above += __builtin_popcount((unsigned)_mm256_movemask_ps(gt));
        unsigned mi = (unsigned)_mm256_movemask_ps(in);
        while (mi) {
            int t = __builtin_ctz(mi);
            if (found < cap) {
                vals[found] = a[j + t];
                idx[found] = j + t;
            }
            found++;
            mi &= mi - 1;
        }
    }
#endif
    for (; j < count; j++) {
        float x = a[j];
        below += x < lo;
        above += x > hi;
        if (x >= lo && x <= hi) {
            if (found < cap) {
                vals[found] = x;
                idx[found] = j;
            }
            found++;
        }
    }
    counts[0] = below;
    counts[1] = above;
    return found;
}

/* DARE's keep mask (0/1 bytes) of flat elements start .. start+count. */
void gta_dare_mask(int64_t start, int64_t count, uint64_t key, uint64_t t, uint8_t *out) {
    float m[BLK];
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        dare_mask(key, start + s, n, t, m);
        for (int j = 0; j < n; j++) out[s + j] = (uint8_t)(m[j] != 0.0f);
    }
}

/* SLERP's statistics over one piece: sums[0] += a.a, sums[1] += b.b, sums[2] += a.b, in
 * double, in 8 interleaved partial sums per piece added in lane order. */
void geo_dots(const void *a, int32_t a_dtype, const void *b, int32_t b_dtype, int64_t count,
              double *sums) {
    float fa[BLK], fb[BLK];
    double aa[8] = {0}, bb[8] = {0}, ab[8] = {0};
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        load(a, a_dtype, s, n, fa);
        load(b, b_dtype, s, n, fb);
        int j = 0;
        for (; j + 8 <= n; j += 8)
            for (int l = 0; l < 8; l++) {
                double x = fa[j + l], y = fb[j + l];
                aa[l] += x * x;
                bb[l] += y * y;
                ab[l] += x * y;
            }
        for (; j < n; j++) {
            double x = fa[j], y = fb[j];
            aa[j & 7] += x * x;
            bb[j & 7] += y * y;
            ab[j & 7] += x * y;
        }
    }
    for (int l = 0; l < 8; l++) {
        sums[0] += aa[l];
        sums[1] += bb[l];
        sums[2] += ab[l];
    }
}

/* out = fma(b, cb, a * ca) in float32: torch's a.mul_(ca).add_(b, alpha=cb), bit for bit. */
void geo_lin2(const void *a, int32_t a_dtype, const void *b, int32_t b_dtype, float ca, float cb,
              int64_t count, void *out, int32_t out_dtype) {
    float fa[BLK], fb[BLK];
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        load(a, a_dtype, s, n, fa);
        load(b, b_dtype, s, n, fb);
        for (int j = 0; j < n; j++) fa[j] = fmaf(fb[j], cb, fa[j] * ca);
        store(out, out_dtype, s, n, fa);
    }
}

/* The j-th smallest (0-based) of m non-negative, non-NaN floats (the bracket's candidates:
 * |d| values, whose bit patterns order as the values do), by a two-level radix count: the
 * high 16 bits, then the low 16 bits within the one high bin that holds rank j. Two passes
 * over the values and no reordering (numpy's partition: ~25 ns an element here, this ~1).
 * *greater and *equal: how many are above it and equal to it. Returns 0, or -1 with no
 * memory. */
int gta_kth(const float *vals, int64_t m, int64_t j, float *v, int64_t *greater,
            int64_t *equal) {
    int64_t *h = (int64_t *)calloc(65536, sizeof(int64_t));
    if (h == NULL) return -1;
    const uint32_t *u = (const uint32_t *)vals;
    for (int64_t i = 0; i < m; i++) h[u[i] >> 16]++;
    int64_t below = 0, above = 0;
    uint32_t hb = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        if (below + h[b] > j) {
            hb = b;
            break;
        }
        below += h[b];
    }
    for (uint32_t b = hb + 1; b < 65536; b++) above += h[b];
    memset(h, 0, 65536 * sizeof(int64_t));
    for (int64_t i = 0; i < m; i++)
        if ((u[i] >> 16) == hb) h[u[i] & 0xFFFFu]++;
    int64_t r = j - below;
    uint32_t lb = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        if (h[b] > r) {
            lb = b;
            break;
        }
        r -= h[b];
    }
    for (uint32_t b = lb + 1; b < 65536; b++) above += h[b];
    uint32_t bits = (hb << 16) | lb;
    memcpy(v, &bits, 4);
    *greater = above;
    *equal = h[lb];
    free(h);
    return 0;
}

/* ---- The statistics pass of several inputs over one base ----------------------------
 * TIES' per-input magnitude threshold needs, per input i, the counts of |x_i - base| below
 * lo_i and above hi_i and the values in [lo_i, hi_i] with their flat indices (the bracket
 * select, select.py). One pass over the base serves every input: each block of the base is
 * read and converted once, then each input's block is converted, differenced and scanned
 * while the base block is in L1, |x_i - base| never stored. Per input the results are those
 * of gta_bracket over gta_absdiff's buffer (the same float32 |x - base|, counts and
 * candidates, in flat-index order). */
typedef struct {
    const void *x;
    int32_t dtype;
    int32_t idx32; /* idx holds int32 (the tensor has fewer than 2^31 elements), else int64 */
    float lo, hi;
    float *vals;   /* room for cap values (the kernel stores at most cap) */
    void *idx;     /* and their flat indices */
    int64_t cap;
    int64_t below, above, found; /* out: #(< lo), #(> hi), #(in [lo, hi]); NaN in none */
} gta_scan;

/* One element of the scan, for the tails and machines without AVX2. */
static inline void scan_one(gta_scan *s, float x, int64_t g) {
    s->below += x < s->lo;
    s->above += x > s->hi;
    if (x >= s->lo && x <= s->hi) {
        if (s->found < s->cap) {
            s->vals[s->found] = x;
            if (s->idx32)
                ((int32_t *)s->idx)[s->found] = (int32_t)g;
            else
                ((int64_t *)s->idx)[s->found] = g;
        }
        s->found++;
    }
}

#ifdef __AVX2__
/* COMPRESS[mask]: the lanes of mask's set bits, lowest first (a compressing permute's
 * indices); filled when the library is loaded. */
static int32_t COMPRESS[256][8];
__attribute__((constructor)) static void compress_init(void) {
    for (int mask = 0; mask < 256; mask++) {
        int k = 0;
        for (int b = 0; b < 8; b++)
            if (mask >> b & 1) COMPRESS[mask][k++] = b;
        while (k < 8) COMPRESS[mask][k++] = 0;
    }
}

/* The scan of elements [off, off + n) of one input (n a multiple of 8) against the converted
 * base block bb. Branch-free: the counts accumulate in vector lanes, and the candidates
 * (~2% of the elements, scattered) are stored by a compressing permute, 8 lanes at a time
 * while there is room for 8 more (a branch per 8 elements on "any candidate?" is
 * mispredicted about one time in seven, which cost more than the rest of the loop). */
static inline void scan_block8(gta_scan *s, const void *x, const int dt, const int idx32,
                               int64_t off, int n, const float *bb) {
    const __m256 vlo = _mm256_set1_ps(s->lo), vhi = _mm256_set1_ps(s->hi);
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256i cb = _mm256_setzero_si256(), ca = _mm256_setzero_si256();
    int64_t found = s->found;
    const int64_t cap = s->cap;
    for (int j = 0; j < n; j += 8) {
        prefetch_at(x, dt, off + j);
        __m256 v = _mm256_and_ps(_mm256_sub_ps(load8(x, dt, off + j), _mm256_loadu_ps(bb + j)),
                                 sign); /* fabsf */
        __m256 lt = _mm256_cmp_ps(v, vlo, _CMP_LT_OQ), gt = _mm256_cmp_ps(v, vhi, _CMP_GT_OQ);
        cb = _mm256_sub_epi32(cb, _mm256_castps_si256(lt)); /* a true lane is -1 */
        ca = _mm256_sub_epi32(ca, _mm256_castps_si256(gt));
        __m256 in =
            _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GE_OQ), _mm256_cmp_ps(v, vhi, _CMP_LE_OQ));
        unsigned mi = (unsigned)_mm256_movemask_ps(in);
        if (found + 8 <= cap) {
            __m256i perm = _mm256_loadu_si256((const __m256i *)COMPRESS[mi]);
            _mm256_storeu_ps(s->vals + found, _mm256_permutevar8x32_ps(v, perm));
            if (idx32) {
                __m256i g = _mm256_add_epi32(perm, _mm256_set1_epi32((int32_t)(off + j)));
                _mm256_storeu_si256((__m256i *)((int32_t *)s->idx + found), g);
            } else {
                __m256i g = _mm256_set1_epi64x(off + j);
                int64_t *ix = (int64_t *)s->idx + found;
                _mm256_storeu_si256(
                    (__m256i *)ix,
                    _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(perm)), g));
                _mm256_storeu_si256(
                    (__m256i *)(ix + 4),
                    _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(perm, 1)),
                                     g));
            }
            found += __builtin_popcount(mi);
        } else { /* near or past cap: count, store what fits */
            float a[8];
            _mm256_storeu_ps(a, v);
            while (mi) {
                int t = __builtin_ctz(mi);
                if (found < cap) {
                    s->vals[found] = a[t];
                    if (idx32)
                        ((int32_t *)s->idx)[found] = (int32_t)(off + j + t);
                    else
                        ((int64_t *)s->idx)[found] = off + j + t;
                }
                found++;
                mi &= mi - 1;
            }
        }
    }
    int32_t l[8], m[8];
    _mm256_storeu_si256((__m256i *)l, cb);
    _mm256_storeu_si256((__m256i *)m, ca);
    for (int k = 0; k < 8; k++) {
        s->below += l[k];
        s->above += m[k];
    }
    s->found = found;
}
#endif

/* The bracket pass of n_x inputs over one base, elements [0, count) (the flat indices
 * stored are those), in one read of the base. */
void gta_absdiff_bracket_n(const void *base, int32_t base_dtype, gta_scan *sc, int32_t n_x,
                           int64_t count) {
    float bb[BLK];
    for (int i = 0; i < n_x; i++) sc[i].below = sc[i].above = sc[i].found = 0;
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        prefetch_block(base, base_dtype, s, n);
        load(base, base_dtype, s, n, bb);
        for (int i = 0; i < n_x; i++) {
            gta_scan *q = sc + i;
            int j = 0;
#ifdef __AVX2__
            int n8 = n & ~7;
            /* specialised per dtype and index width (constant arguments of an inline) */
            if (q->dtype == DT_BF16 && q->idx32)
                scan_block8(q, q->x, DT_BF16, 1, s, n8, bb);
            else if (q->dtype == DT_BF16)
                scan_block8(q, q->x, DT_BF16, 0, s, n8, bb);
            else if (q->idx32)
                scan_block8(q, q->x, DT_F32, 1, s, n8, bb);
            else
                scan_block8(q, q->x, DT_F32, 0, s, n8, bb);
            j = n8;
#endif
            for (; j < n; j++) {
                float v;
                load(q->x, q->dtype, s + j, 1, &v);
                scan_one(q, fabsf(v - bb[j]), s + j);
            }
        }
    }
}

#define STRIDED_AHEAD 128 /* samples prefetched ahead */
/* The bracket select's samples of n_x inputs: out[i * m + k] = |x_i[k * step] - base[k *
 * step]| for k < m, the base element read once for all. */
void gta_absdiff_strided_n(const void *base, int32_t base_dtype, const void *const *xs,
                           const int32_t *x_dtypes, int32_t n_x, int64_t m, int64_t step,
                           float *out) {
    /* Each sample is a cache line of its own (the stride is 8 to 1000 elements): without
     * the prefetches, one memory latency after another (0.4 CPU-s of a 1.1B TIES). */
    const size_t bs = base_dtype == DT_F32 ? 4 : 2;
    for (int64_t k = 0; k < m; k++) {
        if (k + STRIDED_AHEAD < m) {
            const int64_t ahead = (k + STRIDED_AHEAD) * step;
            __builtin_prefetch((const char *)base + ahead * bs);
            for (int i = 0; i < n_x; i++)
                __builtin_prefetch((const char *)xs[i] + ahead * (x_dtypes[i] == DT_F32 ? 4 : 2));
        }
        float b;
        load(base, base_dtype, k * step, 1, &b);
        for (int i = 0; i < n_x; i++) {
            float v;
            load(xs[i], x_dtypes[i], k * step, 1, &v);
            out[i * m + k] = fabsf(v - b);
        }
    }
}

/* The value of rank r (the r-th smallest, 0-based) of m non-negative floats, for each of
 * n_r ranks: gta_kth's radix count (the high 16 bits, then the low 16 within the one high
 * bin that holds the rank) with the first count shared by all the ranks. For the bracket
 * select's sample: the two quantiles in 3 passes over it instead of numpy's partition.
 * Returns 0, -1 with no memory, or -2 where a value is NaN or negative (those bit patterns do
 * not order as the values do: the caller partitions). */
int gta_ranks(const float *vals, int64_t m, const int64_t *ranks, int32_t n_r, float *out) {
    const uint32_t *u = (const uint32_t *)vals;
    for (int32_t k = 0; k < n_r; k++)
        if (ranks[k] < 0 || ranks[k] >= m) return -2;
    int64_t *h = (int64_t *)calloc(65536, sizeof(int64_t));
    int64_t *l = (int64_t *)malloc(65536 * sizeof(int64_t));
    if (h == NULL || l == NULL) {
        free(h);
        free(l);
        return -1;
    }
    uint32_t worst = 0;
    for (int64_t i = 0; i < m; i++) {
        h[u[i] >> 16]++;
        worst = u[i] > worst ? u[i] : worst;
    }
    if (worst > 0x7F800000u) { /* NaN, or a set sign bit */
        free(h);
        free(l);
        return -2;
    }
    for (int32_t k = 0; k < n_r; k++) {
        int64_t below = 0, r = ranks[k];
        uint32_t hb = 0;
        for (uint32_t b = 0; b < 65536; b++) {
            if (below + h[b] > r) {
                hb = b;
                break;
            }
            below += h[b];
        }
        memset(l, 0, 65536 * sizeof(int64_t));
        for (int64_t i = 0; i < m; i++)
            if ((u[i] >> 16) == hb) l[u[i] & 0xFFFFu]++;
        r -= below;
        uint32_t lb = 0;
        for (uint32_t b = 0; b < 65536; b++) {
            if (l[b] > r) {
                lb = b;
                break;
            }
            r -= l[b];
        }
        uint32_t bits = (hb << 16) | lb;
        memcpy(out + k, &bits, 4);
    }
    free(h);
    free(l);
    return 0;
}

/* The flat index of the r-th (0-based) of the m candidates equal to v (idx: int32 when
 * idx32, else int64), or -1 when there are not that many: where a top set's tied elements
 * end (its cut). */
int64_t gta_nth_equal(const float *vals, const void *idx, int32_t idx32, int64_t m, float v,
                      int64_t r) {
    for (int64_t i = 0; i < m; i++)
        if (vals[i] == v && r-- == 0)
            return idx32 ? (int64_t)((const int32_t *)idx)[i] : ((const int64_t *)idx)[i];
    return -1;
}

/* Adds |d| and |d| * keep of one block to the 8 lanes of an input's double sums (lane l
 * takes elements l, l + 8, ...), the conversion to double exact and each lane's additions in
 * element order (the order of the one-input pass this replaced, to the bit). */
static inline void dare_acc(const float *dd, const float *m, int n, double *p1, double *p2) {
    int j = 0;
#ifdef __AVX2__
    __m256d s1a = _mm256_loadu_pd(p1), s1b = _mm256_loadu_pd(p1 + 4);
    __m256d s2a = _mm256_loadu_pd(p2), s2b = _mm256_loadu_pd(p2 + 4);
    for (; j + 8 <= n; j += 8) {
        __m256 d = _mm256_loadu_ps(dd + j), k = _mm256_loadu_ps(m + j);
        s1a = _mm256_add_pd(s1a, _mm256_cvtps_pd(_mm256_castps256_ps128(d)));
        s1b = _mm256_add_pd(s1b, _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)));
        s2a = _mm256_add_pd(s2a, _mm256_cvtps_pd(_mm256_castps256_ps128(k)));
        s2b = _mm256_add_pd(s2b, _mm256_cvtps_pd(_mm256_extractf128_ps(k, 1)));
    }
    _mm256_storeu_pd(p1, s1a);
    _mm256_storeu_pd(p1 + 4, s1b);
    _mm256_storeu_pd(p2, s2a);
    _mm256_storeu_pd(p2 + 4, s2b);
#endif
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            p1[l] += dd[j + l];
            p2[l] += m[j + l];
        }
    for (; j < n; j++) {
        p1[j & 7] += dd[j];
        p2[j & 7] += m[j];
    }
}

#ifdef __AVX2__
static inline __m256i lowbias32_8(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x7FEB352Du));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846CA68Bu));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

/* One input's block of gta_dare_sums_n in one loop, 8 elements a step: |x - base|, the draw,
 * the product by the 0/1 keep, the double sums (lanes as dare_acc), the bits. The same
 * operations per element as the separate passes, so the same sums and bits. Returns 0 (the
 * caller takes the separate passes) unless g0 is a multiple of 8, n of 8, the block within
 * one 2^32 range of g and t < 2^24 (a threshold that can drop). dt (x's, bfloat16 or
 * float32) is a constant where it is inlined. */
static inline __attribute__((always_inline)) int
dare_sums_fused(const float *bb, const void *x, const int dt, int64_t off, int n, int64_t g0,
                uint64_t key, uint64_t t, double *p1, double *p2, uint8_t *bits) {
    uint32_t hi0 = (uint32_t)((uint64_t)g0 >> 32);
    if ((g0 & 7) || (n & 7) || t > 0xFFFFFFu || hi0 != (uint32_t)((uint64_t)(g0 + n - 1) >> 32))
        return 0;
    const __m256i klo = _mm256_set1_epi32((int)(uint32_t)key);
    const __m256i khi = _mm256_set1_epi32((int)((uint32_t)(key >> 32) ^ (hi0 * 0x9E3779B9u)));
    const __m256i tt = _mm256_set1_epi32((int)(uint32_t)t), step = _mm256_set1_epi32(8);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256i g = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)g0),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256d s1a = _mm256_loadu_pd(p1), s1b = _mm256_loadu_pd(p1 + 4);
    __m256d s2a = _mm256_loadu_pd(p2), s2b = _mm256_loadu_pd(p2 + 4);
    uint8_t *o = bits ? bits + (g0 >> 3) : NULL;
    for (int j = 0; j < n; j += 8) {
        prefetch_at(x, dt, off + j);
        __m256 d = _mm256_and_ps(_mm256_sub_ps(load8(x, dt, off + j), _mm256_loadu_ps(bb + j)),
                                 absm);
        __m256i r = lowbias32_8(_mm256_xor_si256(lowbias32_8(_mm256_xor_si256(g, klo)), khi));
        /* draw >> 8 < t: both below 2^24, so the signed compare is the unsigned one */
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(tt, _mm256_srli_epi32(r, 8)));
        __m256 k = _mm256_mul_ps(d, _mm256_and_ps(keep, one));
        if (o) *o++ = (uint8_t)_mm256_movemask_ps(keep);
        s1a = _mm256_add_pd(s1a, _mm256_cvtps_pd(_mm256_castps256_ps128(d)));
        s1b = _mm256_add_pd(s1b, _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)));
        s2a = _mm256_add_pd(s2a, _mm256_cvtps_pd(_mm256_castps256_ps128(k)));
        s2b = _mm256_add_pd(s2b, _mm256_cvtps_pd(_mm256_extractf128_ps(k, 1)));
        g = _mm256_add_epi32(g, step);
    }
    _mm256_storeu_pd(p1, s1a);
    _mm256_storeu_pd(p1 + 4, s1b);
    _mm256_storeu_pd(p2, s2a);
    _mm256_storeu_pd(p2 + 4, s2b);
    return 1;
}
#endif

/* DARE's rescale sums of n_x inputs over one piece, in one read of the base: for input i,
 * sums[2i] += sum |d_i| and sums[2i + 1] += sum |d_i| * keep_i (keep_i drawn with keys[i],
 * ts[i]), each in double in 8 interleaved partial sums (lane j % 8 of the piece, each lane's
 * additions in element order) added in lane order at the end: per input, the sums of the
 * one-input pass this replaced, to the bit. With bits (not NULL), input i's keep mask goes
 * to bits[i] (where not NULL) too, bit start + j, so that gta_combine reads it instead of
 * drawing it again. */
void gta_dare_sums_n(const void *base, int32_t base_dtype, const void *const *xs,
                     const int32_t *x_dtypes, const uint64_t *keys, const uint64_t *ts,
                     int32_t n_x, int64_t count, int64_t start, double *sums,
                     uint8_t *const *bits) {
    float bb[BLK], dd[BLK], m[BLK];
    double a1[MAXIN][8], a2[MAXIN][8];
    if (n_x < 1 || n_x > MAXIN) return;
    memset(a1, 0, sizeof a1);
    memset(a2, 0, sizeof a2);
    for (int64_t s = 0; s < count; s += BLK) {
        int n = (int)(count - s < BLK ? count - s : BLK);
        prefetch_block(base, base_dtype, s, n);
        load(base, base_dtype, s, n, bb);
        for (int i = 0; i < n_x; i++) {
#ifdef __AVX2__
            uint8_t *bi = bits ? bits[i] : NULL;
            if (x_dtypes[i] == DT_BF16
                    ? dare_sums_fused(bb, xs[i], DT_BF16, s, n, start + s, keys[i], ts[i], a1[i],
                                      a2[i], bi)
                    : dare_sums_fused(bb, xs[i], DT_F32, s, n, start + s, keys[i], ts[i], a1[i],
                                      a2[i], bi))
                continue;
#endif
            load(xs[i], x_dtypes[i], s, n, dd);
            for (int j = 0; j < n; j++) dd[j] = fabsf(dd[j] - bb[j]);
            dare_mask(keys[i], start + s, n, ts[i], m);
            if (bits && bits[i]) pack_bits(m, start + s, n, bits[i]);
            for (int j = 0; j < n; j++) m[j] = dd[j] * m[j];
            dare_acc(dd, m, n, a1[i], a2[i]);
        }
    }
    for (int i = 0; i < n_x; i++) {
        double s1 = 0.0, s2 = 0.0;
        for (int l = 0; l < 8; l++) {
            s1 += a1[i][l];
            s2 += a2[i][l];
        }
        sums[2 * i] += s1;
        sums[2 * i + 1] += s2;
    }
}
