/*
 * DeepCABAC encoder: codes the stored integers of tensors into one NDU
 * payload (ISO/IEC 15938-17 clause 10).
 *
 * Encoder-side choices follow the reference software so that the output is
 * byte-identical to NNCodec's for the same integers and settings: the
 * row-skip list marks exactly the all-zero rows, and context initialisation
 * sets are chosen by a cost-estimation pass over the tensor (param_opt).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arith.h"
#include "cpu.h"
#include "tensor.h"

/* The cost-estimation pass has an AVX-512 version, chosen at run time. */

/* Adaptation curves pre-shifted by each init set's window sizes. */
typedef struct est_curves {
    int16_t c0[DCABAC_NUM_INIT_SETS][32];
    int16_t c1[DCABAC_NUM_INIT_SETS][32];
    int16_t shift[32];  /* window shift per SIMD lane (s layout of dcabac_ctx_estimator) */
} est_curves;

static void est_curves_init(est_curves *t)
{
    for (int j = 0; j < 32; j++) t->shift[j] = 15;
    for (int i = 0; i < DCABAC_NUM_INIT_SETS; i++) {
        t->shift[i] = dcabac_init_sets[i].sh0;
        t->shift[EST_SLOW + i] = dcabac_init_sets[i].sh1;
    }
    for (int i = 0; i < DCABAC_NUM_INIT_SETS; i++) {
        for (int j = 0; j < 32; j++) {
            t->c0[i][j] = (int16_t)(dcabac_curve[j] >> dcabac_init_sets[i].sh0);
            t->c1[i][j] = (int16_t)(dcabac_curve[j] >> dcabac_init_sets[i].sh1);
        }
    }
}

enum { ENC_IDLE = 0, ENC_OPEN = 1, ENC_FINISHED = 2 };

struct dcabac_encoder {
    bin_encoder be;
    byte_sink out;
    int phase;
    uint8_t *skip;          /* per-row skip flags of the current tensor */
    size_t skip_cap;
    dcabac_entry_point *eps; /* entry points of the last tensor (value: interval base) */
    size_t num_eps;
    size_t eps_cap;
    dcabac_ctx ctx[CTX_MAX];
    dcabac_ctx_estimator est[CTX_MAX];
    est_curves curves;
    int simd;               /* use the AVX-512 estimation pass */
    char msg[256];
};

dcabac_encoder *dcabac_encoder_new(void)
{
    dcabac_encoder *enc = (dcabac_encoder *)calloc(1, sizeof(*enc));
    if (enc) {
        est_curves_init(&enc->curves);
        dcabac_encoder_set_simd(enc, 1);
    }
    return enc;
}

int dcabac_encoder_set_simd(dcabac_encoder *enc, int enable)
{
    if (!enc) return 0;
    enc->simd = enable && dcabac_cpu_avx512();
    return enc->simd;
}

void dcabac_encoder_free(dcabac_encoder *enc)
{
    if (!enc) return;
    free(enc->out.buf);
    free(enc->skip);
    free(enc->eps);
    free(enc);
}

const char *dcabac_encoder_message(const dcabac_encoder *enc) { return enc ? enc->msg : ""; }

int dcabac_enc_begin(dcabac_encoder *enc)
{
    if (!enc) return DCABAC_E_ARG;
    enc->out.len = 0;
    enc->num_eps = 0;
    enc->out.oom = 0;
    enc->msg[0] = '\0';
    be_start(&enc->be);
    enc->phase = ENC_OPEN;
    return DCABAC_OK;
}

static int enc_check_open(dcabac_encoder *enc)
{
    if (enc->phase != ENC_OPEN) {
        snprintf(enc->msg, sizeof enc->msg, "encoder is not open: call begin() first");
        return DCABAC_E_STATE;
    }
    return DCABAC_OK;
}

static int enc_check_memory(dcabac_encoder *enc)
{
    if (enc->out.oom) {
        snprintf(enc->msg, sizeof enc->msg, "out of memory after %zu output bytes", enc->out.len);
        enc->phase = ENC_IDLE;
        return DCABAC_E_NOMEM;
    }
    return DCABAC_OK;
}

int dcabac_enc_bypass(dcabac_encoder *enc, uint32_t value, int nbits)
{
    int rc;
    if (!enc) return DCABAC_E_ARG;
    if ((rc = enc_check_open(enc))) return rc;
    if (nbits < 0 || nbits > 32) {
        snprintf(enc->msg, sizeof enc->msg, "bypass bit count %d outside 0..32", nbits);
        return DCABAC_E_ARG;
    }
    be_bypass_bits(&enc->be, &enc->out, value, nbits);
    return enc_check_memory(enc);
}

/* ======================================================================
 * Estimation pass: cost of each context's bins under each init set.
 * ====================================================================== */

static void est_reset(dcabac_ctx_estimator *e, int keep_cost)
{
    for (int i = 0; i < DCABAC_NUM_INIT_SETS; i++) {
        e->s[i] = dcabac_init_sets[i].s0;
        e->s[EST_SLOW + i] = dcabac_init_sets[i].s1;
    }
    if (!keep_cost) memset(e->cost, 0, sizeof e->cost);
}

/* Every candidate pays for the bin at its own probability, then adapts
 * (same update as ctx_update, branch-free). */
DCABAC_INLINE void est_bin(const est_curves *t, dcabac_ctx_estimator *e, unsigned bin)
{
    const int m = (int)bin - 1;
    for (int i = 0; i < DCABAC_NUM_INIT_SETS; i++) {
        int s0 = e->s[i], s1 = e->s[EST_SLOW + i];
        int d0 = t->c0[i][16 + (((s0 ^ m) - m) >> 3)];
        int d1 = t->c1[i][16 + (((s1 ^ m) - m) >> 7)];
        e->cost[i] += dcabac_est_bits[512 + ((s1 + 16 * s0) >> 3)][bin];
        e->s[i] = (int16_t)(s0 + ((d0 ^ m) - m));
        e->s[EST_SLOW + i] = (int16_t)(s1 + ((d1 ^ m) - m));
    }
}

static int est_best_set(const dcabac_ctx_estimator *e)
{
    /* A non-zero set costs a flag and three bypass bins more to signal. */
    int best = 0;
    uint64_t min = e->cost[0];
    for (int i = 1; i < DCABAC_NUM_INIT_SETS; i++) {
        if (e->cost[i] + 3 * 32768 < min) {
            best = i;
            min = e->cost[i] + 3 * 32768;
        }
    }
    return best;
}

/* State shared by the estimation and the coding pass over the levels. */
typedef struct level_pass {
    dcabac_encoder *enc;
    const tensor_geom *g;
    const int32_t *values;
    const int32_t *base;
    const uint8_t *history;
    int hdsp;
    int state;              /* DQ state */
    int prev_class;         /* neighbour class of the previous value */
    int64_t error_pos;      /* position of a value that cannot be coded */
    bin_encoder be;         /* coding pass: arithmetic coder (local copy) */
} level_pass;

/* Level k that a DQ state codes for stored integer t, or report that t is
 * not a reconstruction index of that state. */
static inline int dq_level(int32_t t, int state, int64_t *k)
{
    int64_t v = t;
    if (v != 0) v += v < 0 ? -(int64_t)(state & 1) : (state & 1);
    v >>= 1; /* floor division */
    *k = v;
    if (v == 0) return t == 0;
    return 2 * v - (v < 0 ? -1 : 1) * (state & 1) == t;
}

/* The estimation walk, instantiated once per est_bin implementation. */
#define EST_SEGMENT est_segment
#define EST_BIN(e, bin) est_bin(cv, (e), (bin))
#include "est_segment.inc"
#undef EST_SEGMENT
#undef EST_BIN

#if DCABAC_HAVE_AVX512
/* clang has no "#pragma GCC target": it takes the target attribute by pragma */
#if defined(__clang__)
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl")
#include <immintrin.h>
#endif

/* est_bin with the nine candidates in SIMD lanes, 256-bit vectors (the fast
 * and the slow estimates in one each): the adaptation curve is a 32-entry
 * in-register lookup (vpermi2w), the nine bit costs one masked gather from
 * dcabac_est_bits added to the 64-bit totals. */
DCABAC_INLINE __m256i est_adapt_avx512(__m256i s, __m256i m, int prec, __m256i shift, __m256i c_lo, __m256i c_hi)
{
    __m256i gs = _mm256_sub_epi16(_mm256_xor_si256(s, m), m);
    __m256i idx = _mm256_add_epi16(_mm256_srai_epi16(gs, prec), _mm256_set1_epi16(16));
    __m256i d = _mm256_srav_epi16(_mm256_permutex2var_epi16(c_lo, idx, c_hi), shift);
    return _mm256_add_epi16(s, _mm256_sub_epi16(_mm256_xor_si256(d, m), m));
}

/* the gather covers candidates 0..7, one scalar load candidate 8 */
typedef char est_avx512_needs_nine_sets[DCABAC_NUM_INIT_SETS == 9 ? 1 : -1];

DCABAC_INLINE void est_bin_avx512(const est_curves *t, dcabac_ctx_estimator *e, unsigned bin)
{
    const __m256i c_lo = _mm256_loadu_si256((const __m256i *)dcabac_curve);
    const __m256i c_hi = _mm256_loadu_si256((const __m256i *)(dcabac_curve + 16));
    const __m256i m = _mm256_set1_epi16(bin ? 0 : -1);
    __m256i s0 = _mm256_loadu_si256((const __m256i *)e->s);
    __m256i s1 = _mm256_loadu_si256((const __m256i *)(e->s + EST_SLOW));
    /* slow + 16 * fast of each candidate (16-bit lanes, as the scalar int16 sums) */
    __m256i sum = _mm256_add_epi16(s1, _mm256_slli_epi16(s0, 4));
    /* flat index into dcabac_est_bits: 2 * (512 + (sum >> 3)) + bin; an
     * 8-lane gather for candidates 0..7 and a scalar load for candidate 8 */
    __m256i row = _mm256_srai_epi16(sum, 3);
    __m256i flat = _mm256_add_epi32(_mm256_slli_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(row)), 1),
                                    _mm256_set1_epi32(1024 + (int)bin));
    __m256i bits = _mm256_i32gather_epi32((const int *)dcabac_est_bits, flat, 4);
    int row8 = (int16_t)_mm256_extract_epi16(row, 8);
    _mm256_storeu_si256((__m256i *)e->s, est_adapt_avx512(s0, m, 3, _mm256_loadu_si256((const __m256i *)t->shift), c_lo, c_hi));
    _mm256_storeu_si256((__m256i *)(e->s + EST_SLOW),
                        est_adapt_avx512(s1, m, 7, _mm256_loadu_si256((const __m256i *)(t->shift + EST_SLOW)), c_lo, c_hi));
    _mm512_storeu_si512(e->cost, _mm512_add_epi64(_mm512_loadu_si512(e->cost), _mm512_cvtepu32_epi64(bits)));
    e->cost[8] += dcabac_est_bits[512 + row8][bin];
}

#define EST_SEGMENT est_segment_avx512
#define EST_BIN(e, bin) est_bin_avx512(cv, (e), (bin))
#include "est_segment.inc"
#undef EST_SEGMENT
#undef EST_BIN
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

static void est_skipped(void *self, int64_t pos, int64_t count)
{
    (void)pos;
    (void)count;
    level_pass *p = (level_pass *)self;
    if (p->g->dq) p->state = p->g->skip_state[p->state];
}

static void est_block_row_end(void *self, int64_t next_row)
{
    /* Candidates restart from their initial states; costs and the
     * neighbour are kept (reference encoder behaviour). */
    level_pass *p = (level_pass *)self;
    int count = CTX_COUNT(p->g->num_gt);
    (void)next_row;
    for (int i = 0; i < count; i++) est_reset(&p->enc->est[i], 1);
}

/* ======================================================================
 * Coding pass
 * ====================================================================== */

/* Code one level k; `plain` (no TCA, no HDSP, no codebook) is a
 * compile-time constant in the specialised callers. */
DCABAC_INLINE void code_level(const tensor_geom *g, dcabac_ctx *ctx, bin_encoder *be, byte_sink *s, int state,
                              int prev_class, int hdsp_here, int32_t b, int plain, int64_t k)
{
    const int n = g->num_gt;
    int negative, sig_ci;
    int64_t target, a, max_abs;
    unsigned bin = 1;

    sig_ci = sig_ctx_index(state, prev_class, hdsp_here, b); /* plain callers pass constants 0 */
    be_decision(be, s, &ctx[sig_ci], k != 0);
    if (k == 0) return;
    negative = k < 0;
    target = negative ? -k : k;
    if (plain) {
        dcabac_ctx *gt = &ctx[CTX_GT + negative];
        int j = 0;
        be_decision(be, s, &ctx[CTX_SIGN + prev_class], (unsigned)negative);
        do {
            bin = target > j + 1;
            be_decision(be, s, gt + 2 * j, bin);
        } while (bin && ++j < n);
        if (bin) {
            /* remainder target - (n + 1): unary prefix of Exp-Golomb order 0 */
            uint64_t r = (uint64_t)(target - n - 1);
            int nb = 0;
            dcabac_ctx *rem = &ctx[CTX_REM(n)];
            while (r >= ((uint64_t)2 << nb) - 1) be_decision(be, s, rem + nb++, 1);
            be_decision(be, s, rem + nb, 0);
            be_bypass_bits(be, s, (uint32_t)(r - (((uint64_t)1 << nb) - 1)), nb);
        }
        return;
    }
    if (!g->sign_inferred) be_decision(be, s, &ctx[sign_ctx_index(prev_class, b)], (unsigned)negative);
    max_abs = geom_max_abs(g, negative);
    a = 1;
    if (max_abs > 1) {
        int j = 0;
        for (;;) {
            bin = target > a;
            be_decision(be, s, &ctx[gt_ctx_index(n, j, negative, b)], bin);
            a += bin;
            if (!bin || j == n - 1 || !(max_abs > a)) break;
            j++;
        }
        if (bin && max_abs > a) {
            int nb = 0, kk = 0;
            for (;;) {
                bin = target >= a + ((int64_t)1 << nb);
                be_decision(be, s, &ctx[CTX_REM(n) + kk], bin);
                if (bin) a += (int64_t)1 << nb++;
                if (!bin || kk == 30 || !(max_abs >= a + ((int64_t)1 << nb))) break;
                kk++;
            }
            be_bypass_bits(be, s, (uint32_t)(target - a), nb);
        }
    }
}

DCABAC_INLINE int code_segment_impl(level_pass *p, int64_t pos, int64_t count, int plain, int dq)
{
    const tensor_geom *g = p->g;
    dcabac_ctx *ctx = p->enc->ctx;
    const int32_t *values = p->values;
    bin_encoder be = p->be;
    byte_sink sink = p->enc->out;
    int state = p->state, prev_class = p->prev_class;
    int rc = 0;
    for (int64_t end = pos + count; pos < end; pos++) {
        int32_t t = values[pos];
        int64_t k = t;
        if (dq && !dq_level(t, state, &k) &&
            (!g->dq_any || 2 * (k < 0 ? -k : k) - (state & 1) > (int64_t)INT32_MAX + (k < 0))) {
            /* not an index of this state; or (dq_any) its level's index would
             * leave int32, which no decoder accepts: t = INT32_MIN in an odd state */
            rc = DCABAC_E_RANGE;
            break;
        }
        if (plain) {
            code_level(g, ctx, &be, &sink, state, prev_class, 0, 0, 1, k);
        } else if (g->nothing_coded) {
            if (k != 0) {
                rc = DCABAC_E_RANGE;
                break;
            }
        } else {
            int32_t b = p->base ? p->base[pos] : 0;
            if ((k != 0 && (k < 0 ? -k : k) > geom_max_abs(g, k < 0)) ||
                (g->sign_inferred && k != 0 && (k < 0) != (g->cb_zero != 0))) {
                rc = DCABAC_E_RANGE;
                break;
            }
            code_level(g, ctx, &be, &sink, state, prev_class, p->hdsp && p->history[pos], b, 0, k);
        }
        prev_class = neighbour_class(k);
        if (dq) state = dcabac_dq_next[state][k & 1];
    }
    p->be = be;
    p->enc->out = sink;
    p->state = state;
    p->prev_class = prev_class;
    if (rc) p->error_pos = pos;
    return rc;
}

static int code_segment_plain(void *self, int64_t pos, int64_t count)
{
    return code_segment_impl((level_pass *)self, pos, count, 1, 0);
}

static int code_segment_plain_dq(void *self, int64_t pos, int64_t count)
{
    return code_segment_impl((level_pass *)self, pos, count, 1, 1);
}

static int code_segment_general(void *self, int64_t pos, int64_t count)
{
    level_pass *p = (level_pass *)self;
    return p->g->dq ? code_segment_impl(p, pos, count, 0, 1) : code_segment_impl(p, pos, count, 0, 0);
}

static void code_skipped(void *self, int64_t pos, int64_t count)
{
    (void)pos;
    (void)count;
    level_pass *p = (level_pass *)self;
    if (p->g->dq) p->state = p->g->skip_state[p->state];
}

/* An entry point where the decoder records one (after the restart of a
 * block row): the bits shifted out of the interval base so far are the
 * decoder's bit position; its window is resolved from the finished payload
 * (see dcabac_enc_entry_points). */
static void enc_record_entry_point(level_pass *p)
{
    dcabac_encoder *enc = p->enc;
    if (enc->num_eps < enc->eps_cap) {
        dcabac_entry_point *ep = &enc->eps[enc->num_eps++];
        ep->bit_position = 8 * ((uint64_t)enc->out.len + p->be.num_buffered) + (uint64_t)(23 - p->be.bits_left);
        ep->value = p->be.low & 511u;
        ep->dq_state = (uint32_t)p->state;
    }
}

static void code_block_row_end(void *self, int64_t next_row)
{
    level_pass *p = (level_pass *)self;
    int count = CTX_COUNT(p->g->num_gt);
    (void)next_row;
    for (int i = 0; i < count; i++) ctx_reset(&p->enc->ctx[i]);
    p->prev_class = 0;
    p->be.range = 256;
    enc_record_entry_point(p);
}

typedef struct init_set_writer {
    dcabac_encoder *enc;
    int param_opt;
    int flag_ctx;
} init_set_writer;

static void write_init_set(void *self, int ci, int signalled)
{
    init_set_writer *w = (init_set_writer *)self;
    dcabac_encoder *enc = w->enc;
    int set = 0;
    if (signalled) {
        set = w->param_opt ? est_best_set(&enc->est[ci]) : 0;
        be_decision(&enc->be, &enc->out, &enc->ctx[w->flag_ctx], set != 0);
        if (set) be_bypass_bits(&enc->be, &enc->out, (uint32_t)(set - 1), 3);
    }
    ctx_init(&enc->ctx[ci], set);
}

int dcabac_enc_tensor(dcabac_encoder *enc, const dcabac_tensor *t, const int32_t *values)
{
    tensor_geom g;
    level_pass pass;
    const uint8_t *skip = NULL;
    int rc, hdsp, param_opt;
    int ctx_count;
    static const scan_pass est_ops = {est_segment, est_skipped, est_block_row_end};
#if DCABAC_HAVE_AVX512
    static const scan_pass est_ops_avx512 = {est_segment_avx512, est_skipped, est_block_row_end};
#endif
    static const scan_pass code_plain_ops = {code_segment_plain, code_skipped, code_block_row_end};
    static const scan_pass code_plain_dq_ops = {code_segment_plain_dq, code_skipped, code_block_row_end};
    static const scan_pass code_general_ops = {code_segment_general, code_skipped, code_block_row_end};
    const scan_pass *code_ops;

    if (!enc) return DCABAC_E_ARG;
    if ((rc = enc_check_open(enc))) return rc;
    enc->msg[0] = '\0';
    enc->num_eps = 0;
    if (!t || (!values && t->height * t->width > 0)) {
        snprintf(enc->msg, sizeof enc->msg, "missing tensor parameters or values");
        return DCABAC_E_ARG;
    }
    if ((rc = geom_init(&g, t, enc->msg, sizeof enc->msg))) return rc;
    hdsp = g.flags_coded && t->parent_flag && t->hdsp_flag;
    if (t->hdsp_flag && !hdsp) {
        snprintf(enc->msg, sizeof enc->msg,
                 "HDSP needs general_profile_idc 1, parent_node_id_present_flag 1 and a 2-D tensor");
        return DCABAC_E_ARG;
    }
    if (hdsp && !t->history) {
        snprintf(enc->msg, sizeof enc->msg, "HDSP requested without a history");
        return DCABAC_E_ARG;
    }

    ctx_count = CTX_COUNT(g.num_gt);
    for (int i = 0; i < ctx_count; i++) ctx_init(&enc->ctx[i], 0);

    /* Second-edition per-tensor flags: HDSP, then row skipping. */
    if (g.flags_coded) {
        if (t->parent_flag) be_bypass(&enc->be, &enc->out, (unsigned)hdsp);
        be_bypass(&enc->be, &enc->out, t->row_skip_flag);
        if (t->row_skip_flag) {
            if ((size_t)g.h > enc->skip_cap) {
                uint8_t *ns = (uint8_t *)realloc(enc->skip, (size_t)g.h);
                if (!ns) {
                    snprintf(enc->msg, sizeof enc->msg, "out of memory for %lld row flags", (long long)g.h);
                    enc->phase = ENC_IDLE;
                    return DCABAC_E_NOMEM;
                }
                enc->skip = ns;
                enc->skip_cap = (size_t)g.h;
            }
            for (int64_t r = 0; r < g.h; r++) {
                const int32_t *row = values + r * g.w;
                int64_t x = 0;
                while (x < g.w && row[x] == 0) x++;
                enc->skip[r] = x == g.w;
                be_decision(&enc->be, &enc->out, &enc->ctx[CTX_ROW_SKIP(g.num_gt)], enc->skip[r]);
            }
            skip = enc->skip;
        }
    }

    memset(&pass, 0, sizeof pass);
    pass.enc = enc;
    pass.g = &g;
    pass.values = values;
    pass.base = g.tca ? t->base : NULL;
    pass.history = hdsp ? t->history : NULL;
    pass.hdsp = hdsp;
    pass.error_pos = -1;

    param_opt = t->param_opt && !g.nothing_coded;
    if (param_opt) {
        for (int i = 0; i < ctx_count; i++) est_reset(&enc->est[i], 0);
#if DCABAC_HAVE_AVX512
        if (enc->simd) walk_scan(&g, skip, &est_ops_avx512, &pass);
        else
#endif
            walk_scan(&g, skip, &est_ops, &pass);
    }
    {
        init_set_writer w;
        w.enc = enc;
        w.param_opt = param_opt;
        w.flag_ctx = CTX_INIT_SET_FLAG(g.num_gt);
        for_each_init_set_ctx(&g, hdsp, write_init_set, &w);
    }

    if (g.restarts) enc->be.range = 256;
    pass.state = 0;
    pass.prev_class = 0;
    pass.be = enc->be;
    if (g.restarts) {
        if ((size_t)g.block_rows > enc->eps_cap) {
            dcabac_entry_point *ne = (dcabac_entry_point *)realloc(enc->eps, (size_t)g.block_rows * sizeof *ne);
            if (!ne) {
                snprintf(enc->msg, sizeof enc->msg, "out of memory for %lld entry points", (long long)g.block_rows);
                enc->phase = ENC_IDLE;
                return DCABAC_E_NOMEM;
            }
            enc->eps = ne;
            enc->eps_cap = (size_t)g.block_rows;
        }
        enc_record_entry_point(&pass);
    }
    if (pass.base || pass.hdsp || g.limited || g.nothing_coded) code_ops = &code_general_ops;
    else code_ops = g.dq ? &code_plain_dq_ops : &code_plain_ops;
    rc = walk_scan(&g, skip, code_ops, &pass);
    enc->be = pass.be;
    if (rc) {
        int64_t pos = pass.error_pos;
        snprintf(enc->msg, sizeof enc->msg,
                 "value %d at position %lld cannot be coded%s", (int)values[pos], (long long)pos,
                 g.dq ? " (not a reconstruction index of its dependent-quantization state)"
                      : (g.limited || g.nothing_coded) ? " (outside the codebook)" : "");
        enc->phase = ENC_IDLE; /* the payload is unusable */
        return rc;
    }
    return enc_check_memory(enc);
}

int dcabac_enc_entry_points(const dcabac_encoder *enc, dcabac_entry_point *eps, size_t capacity, size_t *count)
{
    size_t n;
    if (!enc || !count || (!eps && capacity)) return DCABAC_E_ARG;
    n = enc->num_eps < capacity ? enc->num_eps : capacity;
    if (n) memcpy(eps, enc->eps, n * sizeof *eps);
    *count = enc->num_eps;
    return DCABAC_OK;
}

int dcabac_enc_finish(dcabac_encoder *enc, const uint8_t **data, size_t *size)
{
    int rc;
    if (!enc || !data || !size) return DCABAC_E_ARG;
    if ((rc = enc_check_open(enc))) return rc;
    be_finish(&enc->be, &enc->out);
    if ((rc = enc_check_memory(enc))) return rc;
    enc->phase = ENC_FINISHED;
    *data = enc->out.buf;
    *size = enc->out.len;
    return DCABAC_OK;
}
