/*
 * The dual-rate probability model of a DeepCABAC context (clause 10.3) and
 * the context index layout of one tensor (clause 10.4).
 */
#ifndef DCABAC_CONTEXT_H
#define DCABAC_CONTEXT_H

#include <stdint.h>
#include "tables.h"

#if defined(__GNUC__) || defined(__clang__)
#define DCABAC_INLINE static inline __attribute__((always_inline))
#else
#define DCABAC_INLINE static inline
#endif


/* A context keeps a fast (s0, 8-bit precision) and a slow (s1, 12-bit
 * precision) probability estimate; their sum s1 + 16*s0 drives coding. */
typedef struct dcabac_ctx {
    int16_t s0;
    int16_t s1;
    uint8_t sh0;
    uint8_t sh1;
    uint8_t set;
    uint8_t unused;
} dcabac_ctx;

DCABAC_INLINE void ctx_init(dcabac_ctx *c, int set)
{
    const dcabac_init_set *s = &dcabac_init_sets[set];
    c->s0 = s->s0;
    c->s1 = s->s1;
    c->sh0 = s->sh0;
    c->sh1 = s->sh1;
    c->set = (uint8_t)set;
}

DCABAC_INLINE void ctx_reset(dcabac_ctx *c)
{
    c->s0 = dcabac_init_sets[c->set].s0;
    c->s1 = dcabac_init_sets[c->set].s1;
}

DCABAC_INLINE int ctx_sum(const dcabac_ctx *c) { return c->s1 + 16 * c->s0; }

/* Adapt both estimates towards the coded bin: s += g * step(g * s) with
 * g = +1 for bin 1 and -1 for bin 0, written without branches
 * ((x ^ m) - m negates x when m = -1). */
DCABAC_INLINE void ctx_update(dcabac_ctx *c, unsigned bin)
{
    int m = (int)bin - 1;
    int s0 = c->s0, s1 = c->s1;
    int d0 = dcabac_curve[16 + (((s0 ^ m) - m) >> 3)] >> c->sh0;
    int d1 = dcabac_curve[16 + (((s1 ^ m) - m) >> 7)] >> c->sh1;
    c->s0 = (int16_t)(s0 + ((d0 ^ m) - m));
    c->s1 = (int16_t)(s1 + ((d1 ^ m) - m));
}

/* Encoder-only: nine candidate models, one per initialisation set, that
 * follow the same bins and add up what each would have cost.  Laid out for
 * 32-lane SIMD: s[i] is candidate i's fast estimate, s[16 + i] its slow one. */
#define EST_SLOW 16
typedef struct dcabac_ctx_estimator {
    int16_t s[32];
    uint64_t cost[16];
} dcabac_ctx_estimator;

/* ---- context index layout of one tensor (N greater-than flags) -------- */

#define CTX_SIG 0          /* 3*state + neighbour class, 24 contexts */
#define CTX_SIG_TCA 24     /* 2*state + (|base| > 1), 16 contexts */
#define CTX_SIG_HDSP 40    /* state, 8 contexts */
#define CTX_SIGN 48        /* neighbour class, 3 contexts */
#define CTX_SIGN_TCA 51    /* base < 0 ? 51 : 52 */
#define CTX_GT 53          /* 53 + 2j + negative; TCA: 53 + 2N + 2j + ... */
#define CTX_REM(n) (53 + 4 * (n))            /* remainder prefix bins 0..30 */
#define CTX_INIT_SET_FLAG(n) (53 + 4 * (n) + 34)
#define CTX_ROW_SKIP(n) (53 + 4 * (n) + 36)
#define CTX_COUNT(n) (53 + 4 * (n) + 37)
#define CTX_MAX CTX_COUNT(256)

#endif
