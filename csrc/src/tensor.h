/*
 * What the encoder and the decoder share about one tensor: its geometry as
 * DeepCABAC sees it (clause 10.4: the H x W matrix view, the effective scan
 * order, block size, row skipping and codebook limits), validation of the
 * coding parameters, the scan walker, and the context initialisation-set
 * signalling list.
 */
#ifndef DCABAC_TENSOR_H
#define DCABAC_TENSOR_H

#include <stdint.h>
#include <stdio.h>
#include "deepcabac.h"
#include "context.h"

/* "Unlimited" magnitude bound of the binarization without a codebook. */
#define DCABAC_UNLIMITED ((int64_t)1 << 40)

typedef struct tensor_geom {
    int64_t h, w, n;        /* rows, columns, values */
    int64_t bw, bh;         /* block width/height of the scan */
    int64_t block_rows;     /* number of block rows of a block scan */
    int so;                 /* effective scan order */
    int restarts;           /* block scan with more than one block row */
    int num_gt;             /* N greater-than flags */
    int dq;
    int dq_any;             /* encoder: code non-reconstruction indices (see dq_any_index) */
    int profile;
    int flags_coded;        /* HDSP/row-skip flags may be present (profile 1, 2-D, ...) */
    int nothing_coded;      /* single-entry codebook in profile 1: no values coded */
    int limited;            /* codebook-limited binarization */
    int sign_inferred;      /* limited and zero at one end of the codebook */
    int64_t cb_size;
    int64_t cb_zero;
    int tca;                /* temporal context adaptation (base given) */
    uint8_t skip_state[8];  /* DQ state after a skipped row: NEXT0 applied W times */
} tensor_geom;

/* Check parameters and derive the geometry; on error writes msg. */
static inline int geom_init(tensor_geom *g, const dcabac_tensor *t, char *msg, size_t msglen)
{
    if (t->height < 0 || t->width < 0 || (t->width > 0 && t->height > (INT64_C(1) << 48) / t->width)) {
        snprintf(msg, msglen, "invalid tensor size %lld x %lld", (long long)t->height, (long long)t->width);
        return DCABAC_E_ARG;
    }
    if (t->scan_order < 0 || t->scan_order > 4) {
        snprintf(msg, msglen, "scan_order %d is not one of 0..4", (int)t->scan_order);
        return DCABAC_E_ARG;
    }
    if (t->num_gt_flags < 1 || t->num_gt_flags > DCABAC_MAX_GT_FLAGS) {
        snprintf(msg, msglen, "number of greater-than flags %d outside 1..256", (int)t->num_gt_flags);
        return DCABAC_E_ARG;
    }
    if (t->dq_flag > 1 || t->general_profile_idc > 1 || t->parent_flag > 1 || t->hdsp_flag > 1 ||
        t->row_skip_flag > 1) {
        snprintf(msg, msglen, "flags must be 0 or 1 (dq %d, profile %d, parent %d, hdsp %d, row skip %d)",
                 t->dq_flag, t->general_profile_idc, t->parent_flag, t->hdsp_flag, t->row_skip_flag);
        return DCABAC_E_ARG;
    }
    if (t->codebook_size > 0 && t->codebook_zero >= t->codebook_size) {
        snprintf(msg, msglen, "codebook zero offset %u outside a codebook of %u entries",
                 t->codebook_zero, t->codebook_size);
        return DCABAC_E_ARG;
    }
    if (t->base && t->general_profile_idc != 1) {
        snprintf(msg, msglen, "temporal context adaptation needs general_profile_idc 1");
        return DCABAC_E_ARG;
    }
    g->h = t->height;
    g->w = t->width;
    g->n = t->height * t->width;
    g->num_gt = t->num_gt_flags;
    g->dq = t->dq_flag;
    g->dq_any = t->dq_any_index != 0;
    g->profile = t->general_profile_idc;
    g->so = (g->w <= 1 || g->h <= 1) ? 0 : t->scan_order;
    if (g->so == 0) {
        g->bw = g->w;
        g->bh = g->h;
        g->block_rows = 1;
    } else {
        g->bw = g->bh = (int64_t)4 << g->so;
        g->block_rows = (g->h + g->bh - 1) / g->bh;
    }
    g->restarts = g->so != 0 && g->block_rows > 1;
    /* Codebook limits only shape the binarization in profile 1. */
    g->cb_size = g->profile == 1 ? t->codebook_size : 0;
    g->cb_zero = g->profile == 1 ? t->codebook_zero : 0;
    g->nothing_coded = g->cb_size == 1;
    g->limited = g->cb_size > 0;
    g->sign_inferred = g->limited && (g->cb_zero == 0 || g->cb_zero == g->cb_size - 1);
    g->flags_coded = g->profile == 1 && g->w > 1 && g->n > g->w && g->cb_size != 1;
    g->tca = t->base != NULL;
    for (int s = 0; s < 8; s++) {
        int st = s;
        for (int64_t i = 0; i < (g->w & 3); i++) st = dcabac_dq_next[st][0];
        /* parity-0 transitions cycle with a period dividing 4 */
        g->skip_state[s] = (uint8_t)st;
    }
    return DCABAC_OK;
}

/* Largest magnitude the binarization allows for a value of this sign. */
static inline int64_t geom_max_abs(const tensor_geom *g, int negative)
{
    if (!g->limited) return DCABAC_UNLIMITED;
    return negative ? g->cb_zero : g->cb_size - 1 - g->cb_zero;
}

/* Neighbour class of the previously coded value: 0 zero, 1 negative, 2 positive. */
static inline int neighbour_class(int64_t prev) { return prev == 0 ? 0 : (prev < 0 ? 1 : 2); }

/* ---- context selection (clause 10.4), shared by encoder, decoder and the
 * encoder's estimation pass.  b is the TCA base value at the position
 * (0 without TCA), hdsp_here whether HDSP applies at the position. */
static inline int sig_ctx_index(int state, int prev_class, int hdsp_here, int32_t b)
{
    if (hdsp_here) return CTX_SIG_HDSP + state;
    if (b != 0) return CTX_SIG_TCA + 2 * state + (b > 1 || b < -1);
    return CTX_SIG + 3 * state + prev_class;
}

static inline int sign_ctx_index(int prev_class, int32_t b)
{
    if (b != 0) return b < 0 ? CTX_SIGN_TCA : CTX_SIGN_TCA + 1;
    return CTX_SIGN + prev_class;
}

/* Greater-than flag j: by the sign of the value, or with TCA by the base. */
static inline int gt_ctx_index(int num_gt, int j, int negative, int32_t b)
{
    if (b != 0) {
        int64_t ab = b < 0 ? -(int64_t)b : b;
        return CTX_GT + 2 * num_gt + 2 * j + (ab >= j ? 0 : 1);
    }
    return CTX_GT + 2 * j + negative;
}

/* ---- scan walker ------------------------------------------------------
 * Visits the tensor in coding order as row segments: contiguous runs of
 * positions inside one row of one block.  A pass supplies what to do with a
 * coded segment, a skipped segment (row skipping) and the end of a block row.
 * Returns non-zero to stop early (errors). */
typedef struct scan_pass {
    int (*segment)(void *self, int64_t pos, int64_t count);
    void (*skipped)(void *self, int64_t pos, int64_t count);
    void (*block_row_end)(void *self, int64_t next_row);
} scan_pass;

/* Block rows row_begin..row_end-1 only (row_end past the last is clamped): a
 * decoder thread starting at an entry point walks its range of block rows. */
static inline int walk_scan_rows(const tensor_geom *g, const uint8_t *skip, const scan_pass *p, void *self,
                                 int64_t row_begin, int64_t row_end)
{
    int64_t y_stop = row_end * g->bh < g->h ? row_end * g->bh : g->h;
    for (int64_t by = row_begin * g->bh; by < y_stop; by += g->bh) {
        int64_t y_end = by + g->bh < g->h ? by + g->bh : g->h;
        for (int64_t bx = 0; bx < g->w; bx += g->bw) {
            int64_t len = bx + g->bw < g->w ? g->bw : g->w - bx;
            for (int64_t y = by; y < y_end; y++) {
                int rc;
                if (skip && skip[y]) {
                    p->skipped(self, y * g->w + bx, len);
                    continue;
                }
                rc = p->segment(self, y * g->w + bx, len);
                if (rc) return rc;
            }
        }
        if (g->restarts && y_end < g->h) p->block_row_end(self, y_end);
    }
    return 0;
}

static inline int walk_scan(const tensor_geom *g, const uint8_t *skip, const scan_pass *p, void *self)
{
    if (g->n == 0) return 0;
    if (!skip && g->so == 0) return p->segment(self, 0, g->n);
    return walk_scan_rows(g, skip, p, self, 0, (g->h + g->bh - 1) / g->bh);
}

/* ---- context initialisation-set signalling (clause 10.4) --------------
 * Calls fn(self, ctx_index, signalled) for each context in signalling order. */
typedef void (*init_set_fn)(void *self, int ci, int signalled);

static inline void for_each_init_set_ctx(const tensor_geom *g, int hdsp, init_set_fn fn, void *self)
{
    const int n = g->num_gt;
    const int sig_ok = g->cb_size != 1;
    const int64_t max_abs = g->limited ? (g->cb_zero > g->cb_size - 1 - g->cb_zero ? g->cb_zero
                                                                                   : g->cb_size - 1 - g->cb_zero)
                                       : DCABAC_UNLIMITED;
    int a;
    for (a = 0; a < (g->dq ? 24 : 3); a++) fn(self, CTX_SIG + a, sig_ok);
    if (g->tca)
        for (a = 0; a < (g->dq ? 16 : 2); a++) fn(self, CTX_SIG_TCA + a, sig_ok);
    if (hdsp)
        for (a = 0; a < (g->dq ? 8 : 1); a++) fn(self, CTX_SIG_HDSP + a, sig_ok);
    for (a = 0; a < (g->tca ? 5 : 3); a++) fn(self, CTX_SIGN + a, sig_ok && !g->sign_inferred);
    for (a = 0; a < 2 * n; a++) fn(self, CTX_GT + a, !g->limited || a < 2 * max_abs);
    if (g->tca)
        for (a = 2 * n; a < 4 * n; a++) fn(self, CTX_GT + a, !g->limited || a < 2 * (max_abs - 1) + 2 * n);
    {
        int64_t level = n - 1;
        for (a = 0; a < 31; a++) {
            level += (int64_t)1 << a;
            fn(self, CTX_REM(n) + a, !g->limited || level < max_abs);
        }
    }
}

#endif
