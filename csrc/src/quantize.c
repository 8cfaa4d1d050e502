/*
 * Encoder-side quantization (clause 9.3 reconstruction rules; the search
 * itself is the encoder's choice, made here exactly as the reference encoder
 * NNCodec makes it so that the stored integers are identical):
 *
 * - dependent scalar quantization (DQ): an 8-state trellis (Viterbi) search
 *   over the reconstruction points of the two quantizers, minimising squared
 *   error (lambda = 0) or squared error plus lambda times an estimated rate
 *   (lambda > 0, rate-distortion optimised);
 * - uniform reconstruction quantization (URQ): rounding (lambda = 0) or a
 *   sequential rate-distortion decision per value (lambda > 0).
 *
 * Candidate order, state order, tie-breaking, the rate model and the int32
 * overflow guard are those of the reference encoder.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "deepcabac.h"
#include "tensor.h"

/* The DQ trellis's forward pass (both lambda cases) has an AVX-512 version,
 * chosen at run time; it makes the portable version's decisions. */

/* ---- int32 overflow guard ----------------------------------------------
 * Before quantizing, the reference encoder checks that every scaled value
 * rounds into the int32 range (with a margin for DQ); if one does not, it
 * picks a coarser QP.  We report that as DCABAC_E_OVERFLOW.  Non-finite
 * weights are reported as DCABAC_E_RANGE instead (a coarser step cannot help),
 * so the guard's failure path scans the whole tensor for them. */

static int guard_failure(const float *weights, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(weights[i])) return DCABAC_E_RANGE;
    return DCABAC_E_OVERFLOW;
}

/* DQ (both lambda cases) and URQ with lambda = 0 scale in float32; the
 * test is round(float32(1/step) * w) in [lo, hi] (lo, hi integers),
 * i.e. lo - 0.5 < x < hi + 0.5 (rounding halves away from zero), which
 * is exact in double and false for NaN. */
static inline int guard_float_ok(float inv, float w, double lo, double hi)
{
    double x = (double)(inv * w);
    return (x < hi + 0.5) & (x > lo - 0.5);
}

#define DQ_GUARD_HI 2147483645.0  /* 2^31 - 3 */
#define DQ_GUARD_LO -2147483646.0 /* -(2^31 - 2) */
#define URQ_GUARD_HI 2147483647.0
#define URQ_GUARD_LO -2147483648.0

/* The whole tensor at once (a separate pass keeps the search loops lean). */
static int guard_float(const float *weights, int64_t count, float inv, double lo, double hi)
{
    int ok = 1;
    for (int64_t i = 0; i < count; i++) ok &= guard_float_ok(inv, weights[i], lo, hi);
    return ok ? DCABAC_OK : guard_failure(weights, count);
}

/* URQ with lambda > 0 scales in double: round(w * (1.0 / step)). */
static int guard_double(const float *weights, int64_t count, double q)
{
    int ok = 1;
    for (int64_t i = 0; i < count; i++) {
        double x = (double)weights[i] * q;
        ok &= (x < URQ_GUARD_HI + 0.5) & (x > URQ_GUARD_LO - 0.5);
    }
    return ok ? DCABAC_OK : guard_failure(weights, count);
}

/* Round half away from zero, exact for any float (|x| + 0.5 is exact in
 * double); 0 for values the URQ guard refuses, -2^31 for x = -2^31. */
static inline int32_t round_float(float x)
{
    double a = fabs((double)x) + 0.5;
    uint32_t m = (uint32_t)(a <= 2147483648.5 ? a : 0.0); /* conversion truncates; false for NaN */
    return (int32_t)(x < 0 ? 0u - m : m);
}

/* ---- DQ trellis: shared parts --------------------------------------------
 * Per value (clause 9.3: Q0 reconstructs to even, Q1 to odd multiples of the
 * step or zero), with o = |w| / step, the candidates are the four half-step
 * indices c = m .. m+3 around o (m = max(1, trunc(o) - 1)), kept in slot
 * c & 3, and zero in slot 4.  Even c are points of Q0, odd c of Q1; the
 * level (the value the entropy coder sees) of c is (c + 1) >> 1. */

typedef struct dq_branches {
    int p[8][3];    /* predecessor state of branch k into state t */
    int slot[8][3]; /* candidate slot it offers */
} dq_branches;

/* Branches into each state, in the reference's evaluation order:
 * predecessors in increasing order; a parity-0 link offers the nonzero
 * candidate of its quantizer, then zero; a parity-1 link one candidate. */
static void dq_branches_init(dq_branches *b)
{
    for (int t = 0; t < 8; t++) {
        int n = 0;
        for (int p = 0; p < 8; p++) {
            if (dcabac_dq_next[p][0] == t) {
                b->p[t][n] = p, b->slot[t][n++] = 3 * (p & 1);
                b->p[t][n] = p, b->slot[t][n++] = 4;
            }
            if (dcabac_dq_next[p][1] == t) b->p[t][n] = p, b->slot[t][n++] = 2 - (p & 1);
        }
    }
}

/* |w| / step and the first candidate index m (o < 2^31 after the guard). */
static inline double dq_scaled(double q, double w, int64_t *m)
{
    double o = q * w * (w < 0 ? -1.0 : 1.0);
    int64_t t = (int64_t)o - 1; /* o >= 0: the conversion truncates */
    *m = t < 1 ? 1 : t;
    return o;
}

/* decision per position and state: predecessor (bits 0..2) and slot (bits 3..5) */
#define DQ_DECISION(p, slot) ((uint8_t)((p) | ((slot) << 3)))

/* Follow the decisions back from the cheapest end state (lowest index on
 * ties) and write reconstruction indices 2k - sgn(k)*(p & 1), p being the
 * state the level k is coded in.  The guard's float32 scaling can admit an
 * o a little above 2^31 (where the reference's int32 arithmetic breaks);
 * such an index is refused with DCABAC_E_RANGE. */
static int dq_backtrack(const float *weights, int64_t count, const int64_t *order, double q, const double cost[8],
                         const uint8_t *decisions, int32_t *out)
{
    int s = 0;
    for (int t = 1; t < 8; t++)
        if (cost[t] < cost[s]) s = t;
    for (int64_t i = count - 1; i >= 0; i--) {
        int64_t pos = order ? order[i] : i;
        uint8_t d = decisions[i * 8 + s];
        int p = d & 7, slot = d >> 3;
        int32_t t = 0;
        if (slot != 4) {
            double w = (double)weights[pos];
            int64_t m;
            int64_t c, level;
            dq_scaled(q, w, &m);
            c = m + ((slot - (m & 3)) & 3); /* the candidate of that slot */
            level = (c + 1) >> 1;
            if (2 * level - (p & 1) > INT32_MAX) return DCABAC_E_RANGE;
            t = (int32_t)(w < 0 ? -(2 * level - (p & 1)) : 2 * level - (p & 1));
        }
        out[pos] = t;
        s = p;
    }
    return DCABAC_OK;
}

static int quant_args_ok(const float *weights, int64_t count, float step, const int32_t *out)
{
    if ((!weights || !out) && count > 0) return 0;
    return count >= 0 && step > 0.0f && isfinite(step);
}

/* ---- DQ, lambda = 0: squared error only ---------------------------------- */

/* The forward pass (decisions, end costs), portable version. */
static void dq_forward(const float *weights, int64_t count, const int64_t *order, double q, const dq_branches *brp,
                       uint8_t *decisions, double cost[8])
{
    const dq_branches br = *brp;
    double next_cost[8];

    for (int64_t i = 0; i < count; i++) {
        int64_t pos = order ? order[i] : i;
        double w = (double)weights[pos];
        double dist[5], o;
        int64_t m, c;
        o = dq_scaled(q, w, &m);
        dist[4] = o * o;
        for (c = m; c < m + 4; c++) dist[c & 3] = (o - (double)c) * (o - (double)c);
        for (int t = 0; t < 8; t++) {
            double best = cost[br.p[t][0]] + dist[br.slot[t][0]];
            uint8_t choice = DQ_DECISION(br.p[t][0], br.slot[t][0]);
            for (int k = 1; k < 3; k++) {
                double j = cost[br.p[t][k]] + dist[br.slot[t][k]];
                if (j < best) {
                    best = j;
                    choice = DQ_DECISION(br.p[t][k], br.slot[t][k]);
                }
            }
            next_cost[t] = best;
            decisions[i * 8 + t] = choice;
        }
        for (int s = 0; s < 8; s++) cost[s] = next_cost[s];
    }
}

#if DCABAC_HAVE_AVX512
static void dq_forward_avx512(const float *weights, int64_t count, const int64_t *order, double q,
                              const dq_branches *br, uint8_t *decisions, double cost[8]);
#endif

/* The start shared by both trellises: the input guard, the branch tables,
 * the decision buffer (8 per value; the caller frees it) and the start costs
 * (only state 0 reachable). */
static int dq_begin(const float *weights, int64_t count, float step, dq_branches *br, uint8_t **decisions,
                    double cost[8])
{
    int rc;

    if ((rc = guard_float(weights, count, 1.0f / step, DQ_GUARD_LO, DQ_GUARD_HI))) return rc;
    dq_branches_init(br);
    *decisions = (uint8_t *)malloc((size_t)count * 8);
    if (!*decisions) return DCABAC_E_NOMEM;
    cost[0] = 0.0;
    for (int s = 1; s < 8; s++) cost[s] = 0.5 * DBL_MAX;
    return DCABAC_OK;
}

static int dq_quantize(const float *weights, int64_t count, const int64_t *order, float step, int32_t *out, int simd)
{
    double q = 1.0 / (double)step, cost[8];
    uint8_t *decisions;
    dq_branches br;
    int rc;

    if (!quant_args_ok(weights, count, step, out)) return DCABAC_E_ARG;
    if (count == 0) return DCABAC_OK;
    if ((rc = dq_begin(weights, count, step, &br, &decisions, cost))) return rc;
#if DCABAC_HAVE_AVX512
    if (simd)
        dq_forward_avx512(weights, count, order, q, &br, decisions, cost);
    else
#endif
        dq_forward(weights, count, order, q, &br, decisions, cost);
    (void)simd;
    rc = dq_backtrack(weights, count, order, q, cost, decisions, out);
    free(decisions);
    return rc;
}

int dcabac_dq_quantize(const float *weights, int64_t count, const int64_t *order, float step, int32_t *out)
{
    return dq_quantize(weights, count, order, step, out, dcabac_cpu_avx512());
}

/* ---- rate model (lambda > 0) ----------------------------------------------
 * The rate R(v) of a value is what DeepCABAC would spend on it (clause 10):
 * the estimated cost of each context-coded bin in its current context state
 * (1/32768 bit, table dcabac_est_bits) plus one bit per bypass bin.  The
 * model is a profile-0 context set of the clause 10.4 layout with n
 * greater-than flags, every context at initialisation set 0, and the
 * previously coded value as neighbour.  The reference encoder builds it with
 * n = cabac_unary_length_minus1 (one flag fewer than the coder uses), and
 * always codes the first greater-than flag even when n = 0 (its remainder
 * contexts then start at the first greater-than context); both are kept for
 * identical decisions.  Binarization: unlimited (no codebook), remainder
 * prefix always terminated. */

DCABAC_INLINE uint32_t est_bits(const dcabac_ctx *c, unsigned bin)
{
    return dcabac_est_bits[512 + (ctx_sum(c) >> 3)][bin];
}

/* Cost of the remainder r: Exp-Golomb prefix in contexts, suffix in bypass. */
DCABAC_INLINE uint32_t rate_remainder(const dcabac_ctx *ctx, int n, uint64_t r)
{
    uint32_t bits = 0;
    int k = 0;
    while (r >= ((uint64_t)2 << k) - 1) bits += est_bits(&ctx[CTX_REM(n) + k++], 1);
    return bits + est_bits(&ctx[CTX_REM(n) + k], 0) + ((uint32_t)k << 15);
}

/* Costs of the values of magnitude a and a + 1 (a >= 1) with sign `neg` in
 * DQ state `state`; the two share their significance, sign and leading
 * greater-than bins. */
DCABAC_INLINE void rate_pair(const dcabac_ctx *ctx, int n, int state, int prev_class, int neg, int64_t a,
                             uint32_t *cost_a, uint32_t *cost_a1)
{
    const int64_t nf = n > 0 ? n : 1; /* greater-than flags coded at most */
    const int64_t ones = a - 1 < nf ? a - 1 : nf;
    uint32_t common = est_bits(&ctx[sig_ctx_index(state, prev_class, 0, 0)], 1) +
                      est_bits(&ctx[sign_ctx_index(prev_class, 0)], (unsigned)neg);
    for (int j = 0; j < ones; j++) common += est_bits(&ctx[gt_ctx_index(n, j, neg, 0)], 1);
    if (a <= nf) {
        const dcabac_ctx *last = &ctx[gt_ctx_index(n, (int)a - 1, neg, 0)];
        *cost_a = common + est_bits(last, 0);
        common += est_bits(last, 1);
        *cost_a1 = a < nf ? common + est_bits(&ctx[gt_ctx_index(n, (int)a, neg, 0)], 0)
                          : common + rate_remainder(ctx, n, 0);
    } else {
        *cost_a = common + rate_remainder(ctx, n, (uint64_t)(a - nf - 1));
        *cost_a1 = common + rate_remainder(ctx, n, (uint64_t)(a - nf));
    }
}

/* Cost of value v (state 0 and the model's neighbour: URQ). */
DCABAC_INLINE uint32_t rate_single(const dcabac_ctx *ctx, int n, int prev_class, int64_t v)
{
    uint32_t lo, hi;
    if (v == 0) return est_bits(&ctx[sig_ctx_index(0, prev_class, 0, 0)], 0);
    rate_pair(ctx, n, 0, prev_class, v < 0, v < 0 ? -v : v, &lo, &hi);
    return lo;
}

/* Adapt the contexts to the bins of value v coded in DQ state `state`. */
static inline void rate_code(dcabac_ctx *ctx, int n, int state, int prev_class, int64_t v)
{
    ctx_update(&ctx[sig_ctx_index(state, prev_class, 0, 0)], v != 0);
    if (v != 0) {
        const int neg = v < 0;
        uint64_t r = (uint64_t)(neg ? -v : v) - 1; /* |v| - 1 */
        int j;
        ctx_update(&ctx[sign_ctx_index(prev_class, 0)], (unsigned)neg);
        ctx_update(&ctx[gt_ctx_index(n, 0, neg, 0)], r != 0);
        for (j = 1; r != 0 && j < n; j++) {
            r--;
            ctx_update(&ctx[gt_ctx_index(n, j, neg, 0)], r != 0);
        }
        if (r != 0) {
            int k = 0;
            r--;
            while (r >= ((uint64_t)2 << k) - 1) ctx_update(&ctx[CTX_REM(n) + k++], 1);
            ctx_update(&ctx[CTX_REM(n) + k], 0);
        }
    }
}

static void rate_ctx_init(dcabac_ctx *ctx, int n)
{
    for (int i = 0; i < CTX_COUNT(n); i++) ctx_init(&ctx[i], 0);
}

/* Context states of `src` into `dst`: only the contexts the model uses. */
static inline void rate_ctx_copy(dcabac_ctx *dst, const dcabac_ctx *src, int n)
{
    const int gt_end = CTX_GT + 2 * (n > 0 ? n : 1);
    memcpy(dst + CTX_SIG, src + CTX_SIG, 24 * sizeof(dcabac_ctx));
    memcpy(dst + CTX_SIGN, src + CTX_SIGN, (size_t)(gt_end - CTX_SIGN) * sizeof(dcabac_ctx));
    memcpy(dst + CTX_REM(n), src + CTX_REM(n), 32 * sizeof(dcabac_ctx));
}

static int rate_args_ok(double lambda_scale, int32_t rate_gt_flags)
{
    return lambda_scale >= 0.0 && isfinite(lambda_scale) && rate_gt_flags >= 0 &&
           rate_gt_flags < DCABAC_MAX_GT_FLAGS;
}

/* ---- DQ, lambda > 0 --------------------------------------------------------
 * J = D * (o - c)^2 + R with D = 2^15 / lambda', lambda' = lambda_scale *
 * 4 * ln(2)/6 * 0.7 (the reference's constants; R is in 1/2^15 bit).
 * Every trellis state owns a rate model; the rate of a branch from state p
 * is taken from p's model with DQ state p.  After the decision for state t,
 * t's model takes the context states (not the neighbour) of the chosen
 * predecessor's model and codes the chosen level with DQ state t and its own
 * neighbour.  The reference keeps two banks of state models and swaps them
 * every position, so "its own neighbour" is the level that bank's state t
 * received two positions earlier; reproduced here with two banks.
 *
 * Context states live in 16 buffers; a bank slot refers to one.  A state's
 * new contexts are its predecessor's buffer itself when it is the first to
 * take it (no copy), else a copy into a free buffer. */

/* The forward pass (rate models, decisions, end costs), portable version. */
static int dq_rd_forward(const float *weights, int64_t count, const int64_t *order, double q, double D, int n,
                         const dq_branches *brp, uint8_t *decisions, double cost[8])
{
    const dq_branches br = *brp;
    dcabac_ctx *ctx_mem, *buf[16];
    uint8_t bank_buf[2][8];     /* buffer of each bank slot */
    int32_t bank_prev[2][8];    /* neighbour of each bank slot */

    ctx_mem = (dcabac_ctx *)malloc((size_t)16 * CTX_COUNT(n) * sizeof(dcabac_ctx));
    if (!ctx_mem) return DCABAC_E_NOMEM;
    for (int b = 0; b < 16; b++) {
        buf[b] = ctx_mem + (size_t)b * CTX_COUNT(n);
        rate_ctx_init(buf[b], n);
        bank_buf[b >> 3][b & 7] = (uint8_t)b;
        bank_prev[b >> 3][b & 7] = 0;
    }
    for (int64_t i = 0; i < count; i++) {
        const int64_t pos = order ? order[i] : i;
        const double w = (double)weights[pos];
        const int neg = w < 0;
        const int pb = (int)(i & 1) ^ 1, cb = (int)(i & 1); /* previous and current bank */
        double dist[5], o, next_cost[8];
        int64_t m, c, level[5];
        uint32_t rate[8][5];
        int pred[8], slot_of[8], taken = 0, nfree = 0;
        uint8_t new_buf[8], free_buf[8];

        o = dq_scaled(q, w, &m);
        dist[4] = D * (o * o);
        level[4] = 0;
        for (c = m; c < m + 4; c++) {
            dist[c & 3] = D * ((o - (double)c) * (o - (double)c));
            level[c & 3] = (c + 1) >> 1; /* magnitude */
        }
        /* rates of each predecessor's three candidates (zero and the two
         * nonzero points of its quantizer, of adjacent magnitudes) */
        for (int p = 0; p < 8; p++) {
            const dcabac_ctx *ctx = buf[bank_buf[pb][p]];
            const int pc = neighbour_class(bank_prev[pb][p]);
            const int sa = 3 * (p & 1), sb = 2 - (p & 1);
            const int lo = level[sa] < level[sb] ? sa : sb, hi = lo == sa ? sb : sa;
            rate[p][4] = est_bits(&ctx[sig_ctx_index(p, pc, 0, 0)], 0);
            rate_pair(ctx, n, p, pc, neg, level[lo], &rate[p][lo], &rate[p][hi]);
        }
        for (int t = 0; t < 8; t++) {
            double best = DBL_MAX;
            int k_best = 0;
            for (int k = 0; k < 3; k++) {
                const int p = br.p[t][k], slot = br.slot[t][k];
                double j = cost[p] + dist[slot] + (double)rate[p][slot];
                if (j < best) {
                    best = j;
                    k_best = k;
                }
            }
            next_cost[t] = best;
            pred[t] = br.p[t][k_best];
            slot_of[t] = br.slot[t][k_best];
            decisions[i * 8 + t] = DQ_DECISION(pred[t], slot_of[t]);
        }
        /* New context buffers: all copies before any update. */
        for (int b = 0; b < 8; b++) free_buf[b] = bank_buf[cb][b];
        for (int t = 0; t < 8; t++) {
            const int p = pred[t];
            if (!(taken & (1 << p))) {
                taken |= 1 << p;
                new_buf[t] = bank_buf[pb][p];
            } else {
                new_buf[t] = free_buf[nfree++];
                rate_ctx_copy(buf[new_buf[t]], buf[bank_buf[pb][p]], n);
            }
        }
        /* the previous bank (next position's current one) keeps the rest:
         * the current bank's unused buffers and those nobody took */
        {
            uint8_t rest[8];
            int r = 0;
            for (int b = nfree; b < 8; b++) rest[r++] = free_buf[b];
            for (int p = 0; p < 8; p++)
                if (!(taken & (1 << p))) rest[r++] = bank_buf[pb][p];
            memcpy(bank_buf[pb], rest, sizeof rest);
        }
        for (int t = 0; t < 8; t++) {
            const int64_t v = neg ? -level[slot_of[t]] : level[slot_of[t]];
            bank_buf[cb][t] = new_buf[t];
            rate_code(buf[new_buf[t]], n, t, neighbour_class(bank_prev[cb][t]), v);
            bank_prev[cb][t] = (int32_t)v;
            cost[t] = next_cost[t];
        }
    }
    free(ctx_mem);
    return DCABAC_OK;
}

/* ---- DQ, lambda > 0, AVX-512 ------------------------------------------------
 * The same search with the eight state models side by side.  Context row r
 * of the model set is a vector of eight 32-bit lanes, lane t holding state
 * t's fast estimate s0 (low half) and slow estimate s1 (high half); both fit
 * 16 bits (s0 in [-2^7, 2^7), s1 in [-2^11, 2^11): the adaptation curve's
 * index stays in 0..31), and so does s1 + 16 * s0.  "State t
 * takes the contexts of predecessor p" is one lane permutation per row,
 * applied only to the rows ever adapted (the others hold the initial state
 * in every lane).  Rates: the two nonzero candidates of a predecessor have
 * adjacent magnitudes a and a + 1 (a is the same for all even and for all
 * odd states), so the greater-than and remainder bins of all eight are
 * priced row by row with one gather of (bin 0, bin 1) costs per row and lane
 * masks saying which bin each lane's binarization has there.  The 24 branch
 * costs are formed and compared in double lanes in the portable version's
 * order (first strict minimum wins), without branches.  Adaptation to the
 * chosen levels goes row by row too, masked to the lanes that code a bin in
 * that row; significance and sign, one row per lane, by gather and scatter.
 * Results are those of the portable version (tests compare them). */

#if DCABAC_HAVE_AVX512
#if defined(__clang__)
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512cd"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512cd")
#include <immintrin.h>
#endif

typedef struct dq_simd {
    __m256i c_lo, c_hi; /* adaptation curve, entries 0..15 and 16..31 */
    __m256i prec;       /* precision shift per 16-bit half: 3 (s0), 7 (s1) */
    __m256i window;     /* window shifts of init set 0 per half: sh0, sh1 */
} dq_simd;

/* ctx_update of every lane, m = 0 in lanes coding a one, -1 a zero */
DCABAC_INLINE __m256i dq_simd_adapt(const dq_simd *k, __m256i s, __m256i m)
{
    __m256i gs = _mm256_sub_epi16(_mm256_xor_si256(s, m), m);
    __m256i idx = _mm256_add_epi16(_mm256_srav_epi16(gs, k->prec), _mm256_set1_epi16(16));
    __m256i d = _mm256_srav_epi16(_mm256_permutex2var_epi16(k->c_lo, idx, k->c_hi), k->window);
    return _mm256_add_epi16(s, _mm256_sub_epi16(_mm256_xor_si256(d, m), m));
}

DCABAC_INLINE __m256i dq_simd_binmask(__mmask8 ones) { return _mm256_maskz_mov_epi32((__mmask8)~ones, _mm256_set1_epi32(-1)); }

/* Bit costs of bin 0 (low dword) and bin 1 (high dword) of eight contexts. */
DCABAC_INLINE __m512i dq_simd_est(__m256i x)
{
    __m256i sum = _mm256_add_epi32(_mm256_srai_epi32(x, 16), _mm256_srai_epi32(_mm256_slli_epi32(x, 16), 12));
    return _mm512_i32gather_epi64(_mm256_srai_epi32(sum, 3), (const void *)dcabac_est_bits[512], 8);
}

DCABAC_INLINE __m256i dq_simd_bin0(__m512i e) { return _mm512_cvtepi64_epi32(e); }
DCABAC_INLINE __m256i dq_simd_bin1(__m512i e) { return _mm512_cvtepi64_epi32(_mm512_srli_epi64(e, 32)); }

/* Adapt a row: lanes in `upd` code a bin, a one where `ones`. */
DCABAC_INLINE void dq_simd_code_row(const dq_simd *k, int32_t *row, __mmask8 upd, __mmask8 ones)
{
    __m256i r = _mm256_loadu_si256((const __m256i *)row);
    _mm256_storeu_si256((__m256i *)row, _mm256_mask_mov_epi32(r, upd, dq_simd_adapt(k, r, dq_simd_binmask(ones))));
}

/* floor(log2(r + 1)) per lane: the remainder prefix length of r */
DCABAC_INLINE __m256i dq_simd_prefix_len(__m256i r)
{
    return _mm256_sub_epi32(_mm256_set1_epi32(31), _mm256_lzcnt_epi32(_mm256_add_epi32(r, _mm256_set1_epi32(1))));
}

DCABAC_INLINE int dq_simd_max(__m256i v)
{
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
    return _mm_cvtsi128_si32(m);
}

/* neighbour class per lane: 0 zero, 1 negative, 2 positive */
DCABAC_INLINE __m256i dq_simd_class(__m256i prev)
{
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
    return _mm256_add_epi32(_mm256_maskz_mov_epi32(_mm256_cmpneq_epi32_mask(prev, zero), one),
                            _mm256_maskz_mov_epi32(_mm256_cmpgt_epi32_mask(prev, zero), one));
}

static int dq_rd_forward_avx512(const float *weights, int64_t count, const int64_t *order, double q, double D, int n,
                                const dq_branches *br, uint8_t *decisions, double cost_out[8])
{
    const int nf = n > 0 ? n : 1; /* greater-than flags coded at most */
    const int gt_end = CTX_GT + 2 * nf;
    const int rem0 = CTX_REM(n);
    const int rem_lo = gt_end > rem0 ? gt_end : rem0; /* remainder rows not among the greater-than rows */
    const int rows = rem0 + 32;
    const uint8_t sh0 = dcabac_init_sets[0].sh0, sh1 = dcabac_init_sets[0].sh1;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i nfv = _mm256_set1_epi32(nf), one = _mm256_set1_epi32(1);
    const __m256i sig_base = _mm256_mullo_epi32(lane, _mm256_set1_epi32(3 * 8 + 1));  /* (3t) * 8 + t */
    const __m256i sign_base = _mm256_add_epi32(lane, _mm256_set1_epi32(CTX_SIGN * 8)); /* (48) * 8 + t */
    int rem_hi = rem_lo; /* remainder rows [rem_lo, rem_hi) have been adapted */
    __m256i prev[2];     /* neighbour of each slot of the two banks */
    __m256i bp[3], bs[3], bdec[3];  /* branch k of each state: predecessor, slot, decision */
    __m512i bp64[3], bs64[3];
    __mmask8 b_zero[3], b_q0[3];     /* branch k offers zero / the parity-0 candidate */
    __m512d cost;
    int32_t(*R)[8];
    dq_simd k;

    R = (int32_t(*)[8])malloc((size_t)rows * sizeof *R);
    if (!R) return DCABAC_E_NOMEM;
    {
        const int32_t init = (int32_t)(((uint32_t)(uint16_t)dcabac_init_sets[0].s1 << 16) | (uint16_t)dcabac_init_sets[0].s0);
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < 8; t++) R[r][t] = init;
    }
    for (int kk = 0; kk < 3; kk++) {
        int32_t p[8], s[8], d[8];
        __mmask8 z = 0, q0 = 0;
        for (int t = 0; t < 8; t++) {
            p[t] = br->p[t][kk];
            s[t] = br->slot[t][kk];
            d[t] = DQ_DECISION(p[t], s[t]);
            if (s[t] == 4) z |= (__mmask8)(1 << t);
            else if (s[t] == 3 * (p[t] & 1)) q0 |= (__mmask8)(1 << t);
        }
        bp[kk] = _mm256_loadu_si256((const __m256i *)p);
        bs[kk] = _mm256_loadu_si256((const __m256i *)s);
        bdec[kk] = _mm256_loadu_si256((const __m256i *)d);
        bp64[kk] = _mm512_cvtepi32_epi64(bp[kk]);
        bs64[kk] = _mm512_cvtepi32_epi64(bs[kk]);
        b_zero[kk] = z;
        b_q0[kk] = q0;
    }
    prev[0] = prev[1] = _mm256_setzero_si256();
    cost = _mm512_loadu_pd(cost_out);
    k.c_lo = _mm256_loadu_si256((const __m256i *)dcabac_curve);
    k.c_hi = _mm256_loadu_si256((const __m256i *)(dcabac_curve + 16));
    k.prec = _mm256_set1_epi32((7 << 16) | 3);
    k.window = _mm256_set1_epi32((sh1 << 16) | sh0);

    for (int64_t i = 0; i < count; i++) {
        const int64_t pos = order ? order[i] : i;
        const double w = (double)weights[pos];
        const int neg = w < 0;
        const int pb = (int)(i & 1) ^ 1, cb = (int)(i & 1); /* previous and current bank */
        double dist[8], o;
        int64_t m, c;
        int32_t level[8];
        int32_t a_even, a_odd, amax;
        __m256i a, am1, sa, sa1, cls, x, zr, rq0, rq1, pred, slot, mag, levels;
        __m512i e;
        __m512d dists, best;
        __mmask8 q0lo, m1, m2;

        o = dq_scaled(q, w, &m);
        dist[4] = D * (o * o);
        level[4] = 0;
        for (c = m; c < m + 4; c++) {
            dist[c & 3] = D * ((o - (double)c) * (o - (double)c));
            level[c & 3] = (int32_t)((c + 1) >> 1); /* magnitude */
        }
        dist[5] = dist[6] = dist[7] = 0.0;
        level[5] = level[6] = level[7] = 0;
        /* significance (both bins) and sign of each predecessor */
        cls = dq_simd_class(prev[pb]);
        x = _mm256_i32gather_epi32((const int *)R, _mm256_add_epi32(sig_base, _mm256_slli_epi32(cls, 3)), 4);
        e = dq_simd_est(x);
        zr = dq_simd_bin0(e);
        sa = dq_simd_bin1(e);
        x = _mm256_i32gather_epi32((const int *)R, _mm256_add_epi32(sign_base, _mm256_slli_epi32(cls, 3)), 4);
        e = dq_simd_est(x);
        sa = _mm256_add_epi32(sa, neg ? dq_simd_bin1(e) : dq_simd_bin0(e));
        sa1 = sa;
        /* magnitudes a (lower nonzero candidate of each quantizer) */
        a_even = level[0] < level[2] ? level[0] : level[2];
        a_odd = level[3] < level[1] ? level[3] : level[1];
        amax = a_even > a_odd ? a_even : a_odd;
        a = _mm256_setr_epi32(a_even, a_odd, a_even, a_odd, a_even, a_odd, a_even, a_odd);
        am1 = _mm256_sub_epi32(a, one);
        /* greater-than flags j < min(nf, a + 1): a codes ones below a - 1
         * and a zero at a - 1; a + 1 ones up to a - 1 and a zero at a */
        {
            const int J = amax + 1 < nf ? amax + 1 : nf;
            for (int j = 0; j < J; j++) {
                const __m256i jv = _mm256_set1_epi32(j);
                const __mmask8 ones = _mm256_cmpgt_epi32_mask(am1, jv), last = _mm256_cmpeq_epi32_mask(am1, jv);
                __m256i e0, e1;
                e = dq_simd_est(_mm256_loadu_si256((const __m256i *)R[gt_ctx_index(n, j, neg, 0)]));
                e0 = dq_simd_bin0(e);
                e1 = dq_simd_bin1(e);
                sa = _mm256_mask_add_epi32(sa, ones, sa, e1);
                sa = _mm256_mask_add_epi32(sa, last, sa, e0);
                sa1 = _mm256_mask_add_epi32(sa1, ones | last, sa1, e1);
                sa1 = _mm256_mask_add_epi32(sa1, _mm256_cmpeq_epi32_mask(a, jv), sa1, e0);
            }
        }
        /* remainders: a - nf - 1 for a > nf, a - nf for a >= nf */
        if (amax >= nf) {
            const __mmask8 has_a = _mm256_cmpgt_epi32_mask(a, nfv), has_a1 = has_a | _mm256_cmpeq_epi32_mask(a, nfv);
            const __m256i r1 = _mm256_sub_epi32(a, nfv);
            const __m256i none = _mm256_set1_epi32(-1);
            const __m256i ka = _mm256_mask_mov_epi32(none, has_a, dq_simd_prefix_len(_mm256_sub_epi32(r1, one)));
            const __m256i ka1 = _mm256_mask_mov_epi32(none, has_a1, dq_simd_prefix_len(r1));
            const int kmax = dq_simd_max(_mm256_max_epi32(ka, ka1));
            for (int kb = 0; kb <= kmax; kb++) {
                const __m256i kv = _mm256_set1_epi32(kb);
                __m256i e0, e1;
                e = dq_simd_est(_mm256_loadu_si256((const __m256i *)R[rem0 + kb]));
                e0 = dq_simd_bin0(e);
                e1 = dq_simd_bin1(e);
                sa = _mm256_mask_add_epi32(sa, _mm256_cmpgt_epi32_mask(ka, kv), sa, e1);
                sa = _mm256_mask_add_epi32(sa, _mm256_cmpeq_epi32_mask(ka, kv), sa, e0);
                sa1 = _mm256_mask_add_epi32(sa1, _mm256_cmpgt_epi32_mask(ka1, kv), sa1, e1);
                sa1 = _mm256_mask_add_epi32(sa1, _mm256_cmpeq_epi32_mask(ka1, kv), sa1, e0);
            }
            /* one bypass bin per prefix one (the suffix) */
            sa = _mm256_mask_add_epi32(sa, has_a, sa, _mm256_slli_epi32(ka, 15));
            sa1 = _mm256_mask_add_epi32(sa1, has_a1, sa1, _mm256_slli_epi32(ka1, 15));
        }
        /* rates of each predecessor's parity-0 (slot 3 * (p & 1)) and
         * parity-1 (slot 2 - (p & 1)) nonzero candidates */
        q0lo = (__mmask8)((level[0] < level[2] ? 0x55 : 0) | (level[3] < level[1] ? 0xaa : 0));
        rq0 = _mm256_mask_blend_epi32(q0lo, sa1, sa);
        rq1 = _mm256_mask_blend_epi32(q0lo, sa, sa1);
        /* J = cost[p] + dist[slot] + rate[p][slot] of the three branches into each state */
        dists = _mm512_loadu_pd(dist);
        {
            __m512d j[3];
            for (int kk = 0; kk < 3; kk++) {
                __m256i r = _mm256_mask_blend_epi32(b_q0[kk], _mm256_permutexvar_epi32(bp[kk], rq1), _mm256_permutexvar_epi32(bp[kk], rq0));
                r = _mm256_mask_blend_epi32(b_zero[kk], r, _mm256_permutexvar_epi32(bp[kk], zr));
                j[kk] = _mm512_add_pd(_mm512_add_pd(_mm512_permutexvar_pd(bp64[kk], cost), _mm512_permutexvar_pd(bs64[kk], dists)),
                                      _mm512_cvtepu32_pd(r));
            }
            best = j[0];
            m1 = _mm512_cmp_pd_mask(j[1], best, _CMP_LT_OQ);
            best = _mm512_mask_mov_pd(best, m1, j[1]);
            m2 = _mm512_cmp_pd_mask(j[2], best, _CMP_LT_OQ);
            best = _mm512_mask_mov_pd(best, m2, j[2]);
        }
        cost = best;
        pred = _mm256_mask_mov_epi32(_mm256_mask_mov_epi32(bp[0], m1, bp[1]), m2, bp[2]);
        slot = _mm256_mask_mov_epi32(_mm256_mask_mov_epi32(bs[0], m1, bs[1]), m2, bs[2]);
        _mm_storel_epi64((__m128i *)(decisions + i * 8),
                         _mm256_cvtepi32_epi8(_mm256_mask_mov_epi32(_mm256_mask_mov_epi32(bdec[0], m1, bdec[1]), m2, bdec[2])));
        levels = _mm256_loadu_si256((const __m256i *)level);
        mag = _mm256_permutexvar_epi32(slot, levels);
        /* state t takes predecessor pred[t]'s contexts */
        if (_mm256_cmpneq_epi32_mask(pred, lane)) {
#define DQ_PERMUTE(lo_, hi_)                 \
    for (int r = (lo_); r < (hi_); r++)      \
        _mm256_storeu_si256((__m256i *)R[r], _mm256_permutexvar_epi32(pred, _mm256_loadu_si256((const __m256i *)R[r])));
            DQ_PERMUTE(CTX_SIG, CTX_SIG + 24)
            DQ_PERMUTE(CTX_SIGN, CTX_SIGN + 3)
            DQ_PERMUTE(CTX_GT, gt_end)
            DQ_PERMUTE(rem_lo, rem_hi)
#undef DQ_PERMUTE
        }
        /* then codes its level: significance and sign (one row per lane) */
        {
            const __mmask8 nz = _mm256_cmpneq_epi32_mask(mag, _mm256_setzero_si256());
            __m256i idx;
            cls = dq_simd_class(prev[cb]);
            idx = _mm256_add_epi32(sig_base, _mm256_slli_epi32(cls, 3));
            x = _mm256_i32gather_epi32((const int *)R, idx, 4);
            _mm256_i32scatter_epi32((int *)R, idx, dq_simd_adapt(&k, x, dq_simd_binmask(nz)), 4);
            if (nz) {
                idx = _mm256_add_epi32(sign_base, _mm256_slli_epi32(cls, 3));
                x = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), nz, idx, (const int *)R, 4);
                _mm256_mask_i32scatter_epi32((int *)R, nz, idx, dq_simd_adapt(&k, x, dq_simd_binmask(neg ? 0xff : 0)), 4);
            }
            prev[cb] = neg ? _mm256_sub_epi32(_mm256_setzero_si256(), mag) : mag;
        }
        /* greater-than flag j (j < nf) is coded by magnitudes above j, as a one above j + 1 */
        {
            const int vmax = dq_simd_max(mag);
            if (vmax > 0) {
                const int G = vmax < nf ? vmax : nf;
                for (int j = 0; j < G; j++)
                    dq_simd_code_row(&k, R[gt_ctx_index(n, j, neg, 0)], _mm256_cmpgt_epi32_mask(mag, _mm256_set1_epi32(j)),
                                     _mm256_cmpgt_epi32_mask(mag, _mm256_set1_epi32(j + 1)));
            }
            if (vmax > nf) {
                /* remainder |v| - nf - 1: prefix ones below its length, a zero at it */
                const __mmask8 has = _mm256_cmpgt_epi32_mask(mag, nfv);
                const __m256i len = _mm256_maskz_mov_epi32(has, dq_simd_prefix_len(_mm256_sub_epi32(_mm256_sub_epi32(mag, nfv), one)));
                const int kmax = dq_simd_max(len);
                for (int kb = 0; kb <= kmax; kb++) {
                    const __m256i kv = _mm256_set1_epi32(kb);
                    dq_simd_code_row(&k, R[rem0 + kb], has & ~_mm256_cmplt_epi32_mask(len, kv), _mm256_cmpgt_epi32_mask(len, kv));
                }
                if (rem0 + kmax + 1 > rem_hi) rem_hi = rem0 + kmax + 1;
            }
        }
    }
    _mm512_storeu_pd(cost_out, cost);
    free(R);
    return DCABAC_OK;
}


/* lambda = 0: the branch costs cost[p] + dist[slot] formed and compared in
 * double lanes like those of lambda > 0. */
static void dq_forward_avx512(const float *weights, int64_t count, const int64_t *order, double q,
                              const dq_branches *br, uint8_t *decisions, double cost_out[8])
{
    __m512i bp64[3], bs64[3], bdec[3];
    __m512d cost = _mm512_loadu_pd(cost_out);

    for (int kk = 0; kk < 3; kk++) {
        int64_t p[8], s[8], d[8];
        for (int t = 0; t < 8; t++) {
            p[t] = br->p[t][kk];
            s[t] = br->slot[t][kk];
            d[t] = DQ_DECISION(p[t], s[t]);
        }
        bp64[kk] = _mm512_loadu_si512(p);
        bs64[kk] = _mm512_loadu_si512(s);
        bdec[kk] = _mm512_loadu_si512(d);
    }
    for (int64_t i = 0; i < count; i++) {
        const int64_t pos = order ? order[i] : i;
        const double w = (double)weights[pos];
        double dist[8], o;
        int64_t m, c;
        __m512d dists, j1, j2, best;
        __mmask8 m1, m2;
        o = dq_scaled(q, w, &m);
        dist[4] = o * o;
        for (c = m; c < m + 4; c++) dist[c & 3] = (o - (double)c) * (o - (double)c);
        dist[5] = dist[6] = dist[7] = 0.0;
        dists = _mm512_loadu_pd(dist);
        best = _mm512_add_pd(_mm512_permutexvar_pd(bp64[0], cost), _mm512_permutexvar_pd(bs64[0], dists));
        j1 = _mm512_add_pd(_mm512_permutexvar_pd(bp64[1], cost), _mm512_permutexvar_pd(bs64[1], dists));
        j2 = _mm512_add_pd(_mm512_permutexvar_pd(bp64[2], cost), _mm512_permutexvar_pd(bs64[2], dists));
        m1 = _mm512_cmp_pd_mask(j1, best, _CMP_LT_OQ);
        best = _mm512_mask_mov_pd(best, m1, j1);
        m2 = _mm512_cmp_pd_mask(j2, best, _CMP_LT_OQ);
        cost = _mm512_mask_mov_pd(best, m2, j2);
        _mm_storel_epi64((__m128i *)(decisions + i * 8),
                         _mm512_cvtepi64_epi8(_mm512_mask_mov_epi64(_mm512_mask_mov_epi64(bdec[0], m1, bdec[1]), m2, bdec[2])));
    }
    _mm512_storeu_pd(cost_out, cost);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

static int dq_quantize_rd(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                          int32_t rate_gt_flags, int32_t *out, int simd)
{
    double q = 1.0 / (double)step, D, cost[8];
    uint8_t *decisions;
    dq_branches br;
    int rc;

    if (!quant_args_ok(weights, count, step, out) || !rate_args_ok(lambda_scale, rate_gt_flags))
        return DCABAC_E_ARG;
    if (lambda_scale == 0.0) return dq_quantize(weights, count, order, step, out, simd);
    if (count == 0) return DCABAC_OK;
    if ((rc = dq_begin(weights, count, step, &br, &decisions, cost))) return rc;
    D = (double)(1 << 15) / (lambda_scale * 4.0 * (log(2.0) / 6.0) * 0.7);
#if DCABAC_HAVE_AVX512
    if (simd)
        rc = dq_rd_forward_avx512(weights, count, order, q, D, rate_gt_flags, &br, decisions, cost);
    else
#endif
        rc = dq_rd_forward(weights, count, order, q, D, rate_gt_flags, &br, decisions, cost);
    (void)simd;
    if (rc == DCABAC_OK) rc = dq_backtrack(weights, count, order, q, cost, decisions, out);
    free(decisions);
    return rc;
}

int dcabac_dq_quantize_rd(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                          int32_t rate_gt_flags, int32_t *out)
{
    return dq_quantize_rd(weights, count, order, step, lambda_scale, rate_gt_flags, out, dcabac_cpu_avx512());
}

int dcabac_dq_quantize_rd_portable(const float *weights, int64_t count, const int64_t *order, float step,
                                   double lambda_scale, int32_t rate_gt_flags, int32_t *out)
{
    return dq_quantize_rd(weights, count, order, step, lambda_scale, rate_gt_flags, out, 0);
}

/* ---- URQ --------------------------------------------------------------------
 * lambda = 0: t = round(float32(1/step) * w), halves away from zero.
 * lambda > 0: per value in coding order, with a = |w| / step (double), the
 * level among 0, max(1, round(a) - 1) .. round(a) minimising
 * D * (a - c)^2 + R(c), D = 2^15 / (lambda_scale * ln(2)/6); R is the rate
 * of the positive level c in the single rate model (DQ state 0), which then
 * codes the signed choice.  Ties keep the smaller level.  The guard admits
 * -2^31 here but not +2^31. */

int dcabac_urq_quantize(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                        int32_t rate_gt_flags, int32_t *out)
{
    const int n = rate_gt_flags;
    double q, D;
    dcabac_ctx *ctx;
    int32_t prev = 0; /* neighbour */
    int rc;

    if (!quant_args_ok(weights, count, step, out) || !rate_args_ok(lambda_scale, rate_gt_flags))
        return DCABAC_E_ARG;
    if (lambda_scale == 0.0) {
        const float inv = 1.0f / step;
        int ok = 1;
        for (int64_t i = 0; i < count; i++) {
            ok &= guard_float_ok(inv, weights[i], URQ_GUARD_LO, URQ_GUARD_HI);
            out[i] = round_float(inv * weights[i]);
        }
        return ok ? DCABAC_OK : guard_failure(weights, count);
    }
    if (count == 0) return DCABAC_OK;
    q = 1.0 / (double)step;
    if ((rc = guard_double(weights, count, q))) return rc;
    ctx = (dcabac_ctx *)malloc((size_t)CTX_COUNT(n) * sizeof(dcabac_ctx));
    if (!ctx) return DCABAC_E_NOMEM;
    rate_ctx_init(ctx, n);
    D = (double)(1 << 15) / (lambda_scale * (log(2.0) / 6.0));
    for (int64_t i = 0; i < count; i++) {
        int64_t pos = order ? order[i] : i;
        const double w = (double)weights[pos];
        const int pc = neighbour_class(prev);
        double a, best_cost;
        int64_t best = 0, top;
        a = (w < 0 ? -w : w) * q;
        top = (int64_t)round(a);
        /* a may round to 2^31 for w < 0; the reference converts that to
         * int32 (INT32_MIN on x86), which leaves no nonzero candidate. */
        if (top > INT32_MAX) top = 0;
        best_cost = D * (a * a) + (double)rate_single(ctx, n, pc, 0);
        for (int64_t c = top - 1 > 1 ? top - 1 : 1; c <= top; c++) {
            double j = D * ((a - (double)c) * (a - (double)c)) + (double)rate_single(ctx, n, pc, c);
            if (j < best_cost) {
                best_cost = j;
                best = c;
            }
        }
        if (w < 0) best = -best;
        out[pos] = (int32_t)best;
        rate_code(ctx, n, 0, pc, best);
        prev = (int32_t)best;
    }
    free(ctx);
    return DCABAC_OK;
}
