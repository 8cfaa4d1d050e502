/*
 * DeepCABAC decoder: restores the stored integers of the tensors of one NDU
 * payload (ISO/IEC 15938-17 clause 10), reporting the entry points of block
 * scans (clause 10.5) on the way.
 *
 * The payload is untrusted: every byte read is bounds-checked, decoded
 * magnitudes are checked against the int32 range and the codebook, and a
 * read past the end stops decoding at the next position.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dec_engine.h"
#include "tensor.h"

enum { DEC_IDLE = 0, DEC_OPEN = 1 };

struct dcabac_decoder {
    bin_decoder bd;
    int phase;
    uint8_t *skip;
    size_t skip_cap;
    dec_ctx ctx[CTX_MAX];
    dec_tables tab;
    char msg[256];
    /* The tensor begun by dcabac_dec_tensor_begin: what every block row's
     * decoding needs besides its entry point.  Written only by that call,
     * then read (by dcabac_dec_rows, also of other handles on other threads)
     * and never written while its rows are being decoded; the contexts'
     * sets are kept apart from ctx, which this handle's own rows change. */
    int rows_open;
    int rows_hdsp;
    tensor_geom rows_g;
    const uint8_t *rows_skip;
    const uint8_t *rows_data;
    size_t rows_size;
    dcabac_entry_point rows_first;
    uint8_t rows_set[CTX_MAX];
};

dcabac_decoder *dcabac_decoder_new(void)
{
    dcabac_decoder *dec = (dcabac_decoder *)calloc(1, sizeof(dcabac_decoder));
    if (dec) dec_tables_init(&dec->tab);
    return dec;
}

void dcabac_decoder_free(dcabac_decoder *dec)
{
    if (!dec) return;
    free(dec->skip);
    free(dec);
}

const char *dcabac_decoder_message(const dcabac_decoder *dec) { return dec ? dec->msg : ""; }

int dcabac_dec_begin(dcabac_decoder *dec, const uint8_t *data, size_t size)
{
    if (!dec) return DCABAC_E_ARG;
    dec->msg[0] = '\0';
    dec->phase = DEC_IDLE;
    dec->rows_open = 0;
    if (!data && size) {
        snprintf(dec->msg, sizeof dec->msg, "no payload bytes given");
        return DCABAC_E_ARG;
    }
    if (size < 2) {
        snprintf(dec->msg, sizeof dec->msg, "payload of %zu bytes is shorter than the 2 bytes the decoder starts with", size);
        return DCABAC_E_TRUNCATED;
    }
    bd_start(&dec->bd, data, size);
    dec->phase = DEC_OPEN;
    return DCABAC_OK;
}

static int dec_check_open(dcabac_decoder *dec)
{
    if (dec->phase != DEC_OPEN) {
        snprintf(dec->msg, sizeof dec->msg, "decoder is not open: call begin() first");
        return DCABAC_E_STATE;
    }
    return DCABAC_OK;
}

static int dec_truncated(dcabac_decoder *dec, const char *where)
{
    snprintf(dec->msg, sizeof dec->msg, "%s needs bytes beyond its %zu bytes", where,
             (size_t)(dec->bd.end - dec->bd.begin));
    dec->phase = DEC_IDLE;
    return DCABAC_E_TRUNCATED;
}

int dcabac_dec_bypass(dcabac_decoder *dec, int nbits, uint32_t *value)
{
    int rc;
    if (!dec || !value) return DCABAC_E_ARG;
    if ((rc = dec_check_open(dec))) return rc;
    if (nbits < 0 || nbits > 32) {
        snprintf(dec->msg, sizeof dec->msg, "bypass bit count %d outside 0..32", nbits);
        return DCABAC_E_ARG;
    }
    *value = bd_bypass_bits(&dec->bd, nbits);
    if (bd_overrun(&dec->bd)) return dec_truncated(dec, "a bypass value");
    return DCABAC_OK;
}

int64_t dcabac_num_entry_points(const dcabac_tensor *t)
{
    tensor_geom g;
    char msg[256];
    if (!t || geom_init(&g, t, msg, sizeof msg)) return -1;
    return g.restarts ? g.block_rows : 0;
}

typedef struct dec_pass {
    dcabac_decoder *dec;
    const tensor_geom *g;
    int32_t *out;
    const int32_t *base;
    const uint8_t *history;
    int hdsp;
    int state;
    int prev_class;
    int64_t error_pos;
    dcabac_entry_point *eps;
    size_t num_eps;
    bin_decoder bd;       /* local copy of the arithmetic decoder */
} dec_pass;

static void record_entry_point(dec_pass *p)
{
    dcabac_entry_point *ep = &p->eps[p->num_eps++];
    ep->bit_position = bd_bit_position(&p->bd);
    ep->value = bd_window(&p->bd);
    ep->dq_state = (uint32_t)p->state;
}

/* Stored integer of a decoded level k = (negative ? -a : a), a >= 0: k
 * itself, or with dependent quantization the reconstruction index
 * 2k - sgn(k) * (state & 1) (clause 10.4).  Returns 0 when it fits int32. */
static inline int dec_stored(int64_t a, int negative, int dq, int state, int32_t *out)
{
    int64_t t = dq && a ? 2 * a - (state & 1) : a;
    if (t > (int64_t)INT32_MAX + negative) return DCABAC_E_CORRUPT;
    *out = (int32_t)(negative ? -t : t);
    return 0;
}

/* ---- the common case: no TCA base, no HDSP, no codebook limits --------
 * Clause 10.4 binarization: sig_flag, sign_flag, up to N abs_level_greater
 * flags, then the remainder as Exp-Golomb order 0 with a context-coded
 * unary prefix and a bypass suffix. */
/* The number of greater-than flags nearly every stream uses (NNCodec's and
 * our encoder's default, cabac_unary_length_minus1 = 10): the level loop
 * has a copy with it as a constant, where the flags' loop is unrolled. */
#define DEC_DEFAULT_GT 11
#if DEC_DEFAULT_GT > DEC_BUDGET_MAX_GT
#error "the 11-flag copy of the level loop runs in budget mode"
#endif

/* fixed_n: 0, or DEC_DEFAULT_GT when the tensor has that many flags. */
DCABAC_INLINE int dec_segment_plain_impl(dec_pass *p, int64_t pos, int64_t count, int dq, int budget, int fixed_n)
{
    const int n = fixed_n ? fixed_n : p->g->num_gt;
    dcabac_decoder *dec = p->dec;
    dec_ctx *const ctx = dec->ctx;
    dec_ctx *const rem = ctx + CTX_REM(n);
    const dec_tables *const t = &dec->tab;
    int32_t *o = p->out + pos, *const o_end = o + count;
    bin_decoder bd = p->bd;
    /* 3 * DQ state (whose parity is the state's) and neighbour class: the
     * significance context is CTX_SIG + s3 + cls */
    unsigned s3 = 3u * (unsigned)p->state, cls = (unsigned)p->prev_class;
    int rc = 0;
    /* the next significance bin's context (index into ctx), word and rLPS
     * row: after a non-zero level the row was read before its greater-than
     * flags were decoded (see below) */
    unsigned sig = CTX_SIG + s3 + cls;
    uint64_t sw = ctx[sig].w, srow = bd_rlps_row(t, sw);
    /* below this magnitude the stored integer fits int32 without checks;
     * once zero bytes are fed (payload end), every level is checked */
    bd.limit = bd.zero_bits ? -1 : dq ? ((int64_t)1 << 30) : ((int64_t)1 << 31) - 1;
    for (; o != o_end; o++) {
        int64_t a;
        unsigned negative;
        dec_ctx *gt, *gt_end;
        uint64_t rp, rn, row, srow0, srow1 = 0;
        /* budget mode: the level's bins up to the end of its greater-than
         * flags need no read-ahead tests (see DEC_BUDGET).  Testing for
         * their worst case rather than for DEC_BUDGET bits refills less
         * often, and the refill's branch is often mispredicted. */
        if (budget && !bd_has(&bd, n + DEC_LEVEL_EXTRA_BITS)) bd_refill(&bd);
        if (!bd_decision_wb(&bd, &ctx[sig], sw, srow, budget)) {
            if (DEC_UNLIKELY(bd.limit < 0) && bd_overrun(&bd)) {
                rc = DCABAC_E_TRUNCATED;
                break;
            }
            *o = 0;
            cls = 0;
            if (dq) s3 = t->next3[s3];
            sig = CTX_SIG + s3;
            sw = ctx[sig].w;
            srow = bd_rlps_row(t, sw);
            continue;
        }
        /* the first greater-than flag's context depends on the sign: read
         * both candidates' rLPS rows before the sign is decoded (the
         * range's dependency chain needs only the row) */
        rp = bd_rlps_row(t, ctx[CTX_GT].w);
        rn = bd_rlps_row(t, ctx[CTX_GT + 1].w);
        negative = bd_decision_flat_b(&bd, t, &ctx[CTX_SIGN + cls], budget ? -1 : 0);
        row = rp ^ ((rp ^ rn) & ((uint64_t)0 - (uint64_t)negative));
        cls = 2 - negative;
        /* the next significance context is known up to the level's parity
         * (with DQ), and no bin before it uses a significance context: read
         * the candidates' rLPS rows now, so that after the (often
         * mispredicted) end of the greater-than flags the next bin's range
         * chain only selects one.  Its context and word are found again
         * then (off that chain): keeping them too spilled registers. */
        srow0 = bd_rlps_row(t, ctx[CTX_SIG + (dq ? t->next3[s3] : 0) + cls].w);
        if (dq) srow1 = bd_rlps_row(t, ctx[CTX_SIG + t->next3[s3 + 1] + cls].w);
        gt = ctx + CTX_GT + negative;
        gt_end = gt + 2 * n;
        /* greater-than flags j = 0..n-1 (contexts 2j apart) until a 0 */
        if (bd_decision_wb(&bd, gt, gt->w, row, budget)) {
            if (fixed_n) {
                /* unrolled: no loop counter between the flags' bins */
#pragma GCC unroll 16
                for (gt += 2; gt != gt_end; gt += 2)
                    if (!bd_decision_b(&bd, t, gt, budget)) break;
            } else {
                for (gt += 2; gt != gt_end; gt += 2)
                    if (!bd_decision_b(&bd, t, gt, budget)) break;
            }
        }
        a = 1 + ((gt - (ctx + CTX_GT + negative)) >> 1);
        if (gt == gt_end) {
            int nb = 0;
            while (bd_decision(&bd, t, rem + nb)) {
                a += (int64_t)1 << nb;
                if (++nb == 31) break;
            }
            if (nb) a += bd_bypass_run(&bd, nb);
        }
        if (DEC_UNLIKELY(a >= bd.limit)) {
            if (a > ((int64_t)1 << 31) - !negative) rc = DCABAC_E_CORRUPT;
            else if (bd_overrun(&bd)) rc = DCABAC_E_TRUNCATED;
            else rc = dec_stored(a, (int)negative, dq, (int)(s3 / 3), o);
            if (rc) break;
        } else {
            /* without branches on the sign: (v ^ -1) + 1 = -v */
            int32_t v = dq ? 2 * (int32_t)a - (int32_t)(s3 & 1) : (int32_t)a, neg = -(int32_t)negative;
            *o = (v ^ neg) - neg;
        }
        if (dq) {
            /* without branches on the parity */
            uint64_t m = (uint64_t)0 - (uint64_t)(a & 1);
            s3 = t->next3[s3 + (unsigned)(a & 1)];
            srow = srow0 ^ ((srow0 ^ srow1) & m);
        } else {
            srow = srow0;
        }
        sig = CTX_SIG + s3 + cls;
        sw = ctx[sig].w;
    }
    p->bd = bd;
    p->state = (int)(s3 / 3);
    p->prev_class = (int)cls;
    if (rc) p->error_pos = o - p->out;
    return rc;
}

/* The copy of the level loop for the tensor's flag count (dq a constant). */
DCABAC_INLINE int dec_segment_plain_copy(void *self, int64_t pos, int64_t count, int dq)
{
    dec_pass *p = (dec_pass *)self;
    if (p->g->num_gt == DEC_DEFAULT_GT) return dec_segment_plain_impl(p, pos, count, dq, 1, DEC_DEFAULT_GT);
    if (p->g->num_gt <= DEC_BUDGET_MAX_GT) return dec_segment_plain_impl(p, pos, count, dq, 1, 0);
    return dec_segment_plain_impl(p, pos, count, dq, 0, 0);
}

static int dec_segment_plain(void *self, int64_t pos, int64_t count) { return dec_segment_plain_copy(self, pos, count, 0); }

static int dec_segment_plain_dq(void *self, int64_t pos, int64_t count) { return dec_segment_plain_copy(self, pos, count, 1); }

/* ---- everything else: TCA, HDSP, codebook limits ----------------------- */

/* Decode one level k (clause 10.4 binarization); returns 0 on success. */
static inline int decode_level_general(const tensor_geom *g, dec_ctx *ctx, const dec_tables *t, bin_decoder *bd,
                                       int state, int prev_class, int hdsp_here, int32_t b, int64_t *level)
{
    const int n = g->num_gt;
    int negative;
    int64_t a, max_abs;
    unsigned bin = 1;

    if (!bd_decision(bd, t, &ctx[sig_ctx_index(state, prev_class, hdsp_here, b)])) {
        *level = 0;
        return 0;
    }
    if (g->sign_inferred) negative = g->cb_zero != 0;
    else negative = (int)bd_decision(bd, t, &ctx[sign_ctx_index(prev_class, b)]);
    max_abs = geom_max_abs(g, negative);
    a = 1;
    if (max_abs > 1) {
        int j = 0;
        for (;;) {
            bin = bd_decision(bd, t, &ctx[gt_ctx_index(n, j, negative, b)]);
            a += bin;
            if (!bin || j == n - 1 || !(max_abs > a)) break;
            j++;
        }
        if (bin && max_abs > a) {
            int nb = 0, k = 0;
            dec_ctx *rem = &ctx[CTX_REM(n)];
            for (;;) {
                bin = bd_decision(bd, t, rem + k);
                if (bin) a += (int64_t)1 << nb++;
                if (!bin || k == 30 || !(max_abs >= a + ((int64_t)1 << nb))) break;
                k++;
            }
            if (nb) a += bd_bypass_run(bd, nb);
        }
    }
    if (a > max_abs || a > ((int64_t)1 << 31) - !negative) return DCABAC_E_CORRUPT;
    *level = negative ? -a : a;
    return 0;
}

DCABAC_INLINE int dec_segment_general_impl(dec_pass *p, int64_t pos, int64_t count, int dq)
{
    const tensor_geom *g = p->g;
    dec_ctx *ctx = p->dec->ctx;
    const dec_tables *t = &p->dec->tab;
    int32_t *out = p->out;
    bin_decoder bd = p->bd;
    int state = p->state, prev_class = p->prev_class;
    int rc = 0;
    for (int64_t end = pos + count; pos < end; pos++) {
        int64_t k = 0;
        if (!g->nothing_coded) {
            int32_t b = p->base ? p->base[pos] : 0;
            int hdsp_here = p->hdsp && p->history[pos];
            rc = decode_level_general(g, ctx, t, &bd, state, prev_class, hdsp_here, b, &k);
        }
        if (DEC_UNLIKELY(rc != 0 || bd_overrun(&bd))) {
            if (!rc) rc = DCABAC_E_TRUNCATED;
            break;
        }
        rc = dec_stored(k < 0 ? -k : k, k < 0, dq, state, &out[pos]);
        if (rc) break;
        prev_class = neighbour_class(k);
        if (dq) state = dcabac_dq_next[state][k & 1];
    }
    p->bd = bd;
    p->state = state;
    p->prev_class = prev_class;
    if (rc) p->error_pos = pos;
    return rc;
}

static int dec_segment_general(void *self, int64_t pos, int64_t count)
{
    dec_pass *p = (dec_pass *)self;
    return p->g->dq ? dec_segment_general_impl(p, pos, count, 1) : dec_segment_general_impl(p, pos, count, 0);
}

static void dec_skipped(void *self, int64_t pos, int64_t count)
{
    dec_pass *p = (dec_pass *)self;
    memset(p->out + pos, 0, (size_t)count * sizeof *p->out);
    if (p->g->dq) p->state = p->g->skip_state[p->state];
}

/* A block row's end in a block scan: contexts back to their initialisation
 * sets and the arithmetic coder restarted (clause 10.5). */
static void dec_restart(dec_pass *p)
{
    int count = CTX_COUNT(p->g->num_gt);
    for (int i = 0; i < count; i++) dec_ctx_reset(&p->dec->ctx[i]);
    p->prev_class = 0;
    p->bd.range = 256;
}

static void dec_block_row_end(void *self, int64_t next_row)
{
    dec_pass *p = (dec_pass *)self;
    (void)next_row;
    dec_restart(p);
    record_entry_point(p);
}

typedef struct init_set_reader {
    dcabac_decoder *dec;
    int flag_ctx;
} init_set_reader;

static void read_init_set(void *self, int ci, int signalled)
{
    init_set_reader *r = (init_set_reader *)self;
    dcabac_decoder *dec = r->dec;
    int set = 0;
    if (signalled && bd_decision(&dec->bd, &dec->tab, &dec->ctx[r->flag_ctx]))
        set = 1 + (int)bd_bypass_bits(&dec->bd, 3);
    dec_ctx_init(&dec->ctx[ci], &dec->tab, set);
}

/* The prologue of a tensor's payload: the HDSP and row-skip flags, the
 * row-skip list and the contexts' initialisation sets, read at the
 * decoder's position as dcabac_dec_tensor reads them.  On success the
 * contexts hold their initial states and *skip the row-skip list or NULL. */
static int dec_prologue(dcabac_decoder *dec, const tensor_geom *g, dcabac_tensor *t, int *hdsp_out,
                        const uint8_t **skip)
{
    int hdsp = 0, row_skip = 0, ctx_count = CTX_COUNT(g->num_gt);
    *skip = NULL;
    for (int i = 0; i < ctx_count; i++) dec_ctx_init(&dec->ctx[i], &dec->tab, 0);
    if (g->flags_coded) {
        if (t->parent_flag) hdsp = (int)bd_bypass(&dec->bd);
        row_skip = (int)bd_bypass(&dec->bd);
        if (hdsp && !t->history) {
            snprintf(dec->msg, sizeof dec->msg,
                     "the payload enables history-dependent significance (HDSP) but no history was given");
            dec->phase = DEC_IDLE;
            return DCABAC_E_ARG;
        }
        if (row_skip) {
            if ((size_t)g->h > dec->skip_cap) {
                uint8_t *ns = (uint8_t *)realloc(dec->skip, (size_t)g->h);
                if (!ns) {
                    snprintf(dec->msg, sizeof dec->msg, "out of memory for %lld row flags", (long long)g->h);
                    dec->phase = DEC_IDLE;
                    return DCABAC_E_NOMEM;
                }
                dec->skip = ns;
                dec->skip_cap = (size_t)g->h;
            }
            for (int64_t r = 0; r < g->h; r++) {
                dec->skip[r] = (uint8_t)bd_decision(&dec->bd, &dec->tab, &dec->ctx[CTX_ROW_SKIP(g->num_gt)]);
                if (bd_overrun(&dec->bd)) return dec_truncated(dec, "the row-skip flags");
            }
            *skip = dec->skip;
        }
    }
    t->hdsp_flag = (uint8_t)hdsp;
    t->row_skip_flag = (uint8_t)row_skip;
    {
        init_set_reader r;
        r.dec = dec;
        r.flag_ctx = CTX_INIT_SET_FLAG(g->num_gt);
        for_each_init_set_ctx(g, hdsp, read_init_set, &r);
    }
    if (bd_overrun(&dec->bd)) return dec_truncated(dec, "the context initialisation");
    *hdsp_out = hdsp;
    return DCABAC_OK;
}

int dcabac_dec_tensor(dcabac_decoder *dec, dcabac_tensor *t, int32_t *out,
                      dcabac_entry_point *eps, size_t eps_capacity)
{
    tensor_geom g;
    dec_pass pass;
    const uint8_t *skip = NULL;
    int rc, hdsp = 0;
    static const scan_pass plain_ops = {dec_segment_plain, dec_skipped, dec_block_row_end};
    static const scan_pass plain_dq_ops = {dec_segment_plain_dq, dec_skipped, dec_block_row_end};
    static const scan_pass general_ops = {dec_segment_general, dec_skipped, dec_block_row_end};
    const scan_pass *ops;

    if (!dec) return DCABAC_E_ARG;
    if ((rc = dec_check_open(dec))) return rc;
    if (!t || (!out && t->height * t->width > 0)) {
        snprintf(dec->msg, sizeof dec->msg, "missing tensor parameters or output buffer");
        return DCABAC_E_ARG;
    }
    if ((rc = geom_init(&g, t, dec->msg, sizeof dec->msg))) return rc;
    if (g.restarts && (size_t)g.block_rows > eps_capacity) {
        snprintf(dec->msg, sizeof dec->msg, "entry point buffer holds %zu, tensor has %lld block rows",
                 eps_capacity, (long long)g.block_rows);
        return DCABAC_E_ARG;
    }
    /* Every position is written by the walk (skipped rows by dec_skipped), so
     * the output needs no clearing pass; after an error its content is
     * unspecified. */

    dec->rows_open = 0;
    if ((rc = dec_prologue(dec, &g, t, &hdsp, &skip))) return rc;

    memset(&pass, 0, sizeof pass);
    pass.dec = dec;
    pass.g = &g;
    pass.out = out;
    pass.base = g.tca ? t->base : NULL;
    pass.history = hdsp ? t->history : NULL;
    pass.hdsp = hdsp;
    pass.eps = eps;
    pass.bd = dec->bd;
    if (g.restarts) {
        pass.bd.range = 256;
        record_entry_point(&pass);
    }
    if (pass.base || pass.hdsp || g.limited || g.nothing_coded) ops = &general_ops;
    else ops = g.dq ? &plain_dq_ops : &plain_ops;
    rc = walk_scan(&g, skip, ops, &pass);
    dec->bd = pass.bd;
    if (rc) {
        dec->phase = DEC_IDLE;
        if (rc == DCABAC_E_TRUNCATED) {
            snprintf(dec->msg, sizeof dec->msg,
                     "value at position %lld needs bytes beyond its %zu bytes",
                     (long long)pass.error_pos, (size_t)(dec->bd.end - dec->bd.begin));
        } else {
            snprintf(dec->msg, sizeof dec->msg, "value at position %lld is out of range%s",
                     (long long)pass.error_pos, g.limited ? " of the codebook" : " of int32");
        }
        return rc;
    }
    return DCABAC_OK;
}

/* ---- decoding a block scan in ranges of block rows (clause 10.5) -------- */

int dcabac_dec_tensor_begin(dcabac_decoder *dec, dcabac_tensor *t, dcabac_entry_point *first)
{
    tensor_geom g;
    const uint8_t *skip;
    int rc, hdsp, ctx_count;

    if (!dec) return DCABAC_E_ARG;
    if ((rc = dec_check_open(dec))) return rc;
    dec->rows_open = 0;
    if (!t || !first) {
        snprintf(dec->msg, sizeof dec->msg, "missing tensor parameters or entry point");
        return DCABAC_E_ARG;
    }
    if ((rc = geom_init(&g, t, dec->msg, sizeof dec->msg))) return rc;
    if (!g.restarts) {
        snprintf(dec->msg, sizeof dec->msg, "the tensor has no block rows to decode apart (scan order %d, %lld rows)",
                 g.so, (long long)g.h);
        return DCABAC_E_ARG;
    }
    if ((rc = dec_prologue(dec, &g, t, &hdsp, &skip))) return rc;
    ctx_count = CTX_COUNT(g.num_gt);
    for (int i = 0; i < ctx_count; i++) dec->rows_set[i] = (uint8_t)dec->ctx[i].set;
    /* block row 0 starts with the restart of dcabac_dec_tensor */
    dec->bd.range = 256;
    first->bit_position = bd_bit_position(&dec->bd);
    first->value = bd_window(&dec->bd);
    first->dq_state = 0;
    dec->rows_first = *first;
    dec->rows_g = g;
    dec->rows_hdsp = hdsp;
    dec->rows_skip = skip;
    dec->rows_data = dec->bd.begin;
    dec->rows_size = (size_t)(dec->bd.end - dec->bd.begin);
    dec->rows_open = 1;
    return DCABAC_OK;
}

/* The end of a block row inside a range: the restart of dec_block_row_end
 * without recording an entry point. */
static void dec_rows_row_end(void *self, int64_t next_row)
{
    (void)next_row;
    dec_restart((dec_pass *)self);
}

static int same_tensor(const tensor_geom *a, const tensor_geom *b)
{
    return a->h == b->h && a->w == b->w && a->so == b->so && a->num_gt == b->num_gt && a->dq == b->dq &&
           a->profile == b->profile && a->cb_size == b->cb_size && a->cb_zero == b->cb_zero && a->tca == b->tca;
}

int dcabac_dec_rows(dcabac_decoder *dec, const dcabac_decoder *src, const dcabac_tensor *t, int32_t *out,
                    const dcabac_entry_point *start, int64_t row_begin, int64_t row_end, dcabac_entry_point *eps)
{
    tensor_geom g;
    dec_pass pass;
    int rc, ctx_count;
    /* [0]: recording the entry points met (into eps), [1]: not */
    static const scan_pass plain_ops[2] = {{dec_segment_plain, dec_skipped, dec_block_row_end},
                                           {dec_segment_plain, dec_skipped, dec_rows_row_end}};
    static const scan_pass plain_dq_ops[2] = {{dec_segment_plain_dq, dec_skipped, dec_block_row_end},
                                              {dec_segment_plain_dq, dec_skipped, dec_rows_row_end}};
    static const scan_pass general_ops[2] = {{dec_segment_general, dec_skipped, dec_block_row_end},
                                             {dec_segment_general, dec_skipped, dec_rows_row_end}};
    const scan_pass *ops;

    if (!dec) return DCABAC_E_ARG;
    dec->msg[0] = '\0';
    if (!src || !src->rows_open) {
        snprintf(dec->msg, sizeof dec->msg, "no tensor begun: call dcabac_dec_tensor_begin first");
        return DCABAC_E_STATE;
    }
    if (dec == src && (rc = dec_check_open(dec))) return rc;
    if (!t || !out || (!start && row_begin > 0)) {
        snprintf(dec->msg, sizeof dec->msg, "missing tensor parameters, output buffer or entry point");
        return DCABAC_E_ARG;
    }
    if ((rc = geom_init(&g, t, dec->msg, sizeof dec->msg))) return rc;
    if (!same_tensor(&g, &src->rows_g)) {
        snprintf(dec->msg, sizeof dec->msg, "tensor parameters differ from the tensor begun");
        return DCABAC_E_ARG;
    }
    if (row_begin < 0 || row_end <= row_begin || row_end > g.block_rows) {
        snprintf(dec->msg, sizeof dec->msg, "block rows %lld..%lld outside the tensor's %lld", (long long)row_begin,
                 (long long)row_end - 1, (long long)g.block_rows);
        return DCABAC_E_ARG;
    }
    if (row_begin == 0) start = &src->rows_first;
    /* An entry point comes from the stream: one whose window is not inside
     * the payload, or whose DQ state does not exist, is refused here. */
    if (start->bit_position > (uint64_t)8 * src->rows_size || 8 * src->rows_size - start->bit_position < 9) {
        snprintf(dec->msg, sizeof dec->msg, "entry point of block row %lld at bit %llu lies past the payload's %zu bytes",
                 (long long)row_begin, (unsigned long long)start->bit_position, src->rows_size);
        if (dec == src) dec->phase = DEC_IDLE;
        return DCABAC_E_CORRUPT;
    }
    if (start->value > 255 || start->dq_state > 7 || (start->dq_state && !g.dq)) {
        snprintf(dec->msg, sizeof dec->msg, "entry point of block row %lld has value %u and DQ state %u",
                 (long long)row_begin, start->value, start->dq_state);
        if (dec == src) dec->phase = DEC_IDLE;
        return DCABAC_E_CORRUPT;
    }

    ctx_count = CTX_COUNT(g.num_gt);
    for (int i = 0; i < ctx_count; i++) dec_ctx_init(&dec->ctx[i], &dec->tab, src->rows_set[i]);
    memset(&pass, 0, sizeof pass);
    pass.dec = dec;
    pass.g = &g;
    pass.out = out;
    pass.base = g.tca ? t->base : NULL;
    pass.hdsp = src->rows_hdsp;
    pass.history = pass.hdsp ? t->history : NULL;
    if (pass.hdsp && !pass.history) {
        snprintf(dec->msg, sizeof dec->msg, "the tensor uses HDSP but no history was given");
        return DCABAC_E_ARG;
    }
    pass.state = (int)start->dq_state;
    pass.eps = eps;
    bd_seek(&pass.bd, src->rows_data, src->rows_size, start->bit_position, start->value);
    if (pass.base || pass.hdsp || g.limited || g.nothing_coded) ops = &general_ops[!eps];
    else ops = g.dq ? &plain_dq_ops[!eps] : &plain_ops[!eps];
    rc = walk_scan_rows(&g, src->rows_skip, ops, &pass, row_begin, row_end);
    if (dec == src) dec->bd = pass.bd;
    if (rc) {
        if (dec == src) dec->phase = DEC_IDLE;
        if (rc == DCABAC_E_TRUNCATED) {
            snprintf(dec->msg, sizeof dec->msg, "value at position %lld needs bytes beyond its %zu bytes",
                     (long long)pass.error_pos, src->rows_size);
        } else {
            snprintf(dec->msg, sizeof dec->msg, "value at position %lld is out of range%s", (long long)pass.error_pos,
                     g.limited ? " of the codebook" : " of int32");
        }
        return rc;
    }
    return DCABAC_OK;
}

int dcabac_dec_finish(dcabac_decoder *dec, size_t *consumed)
{
    int rc;
    size_t used, size;
    if (!dec) return DCABAC_E_ARG;
    if ((rc = dec_check_open(dec))) return rc;
    dec->phase = DEC_IDLE;
    size = (size_t)(dec->bd.end - dec->bd.begin);
    if (!bd_terminate(&dec->bd)) {
        snprintf(dec->msg, sizeof dec->msg, "the terminating bin is 0, expected 1");
        return DCABAC_E_CORRUPT;
    }
    if (bd_overrun(&dec->bd)) return dec_truncated(dec, "the terminating bin");
    used = bd_bytes_used(&dec->bd);
    if (consumed) *consumed = used;
    if (used != size) {
        snprintf(dec->msg, sizeof dec->msg, "payload has %zu bytes, the codeword ends after %zu", size, used);
        return DCABAC_E_TRAILING;
    }
    return DCABAC_OK;
}
