/*
 * Binary arithmetic coding engine of DeepCABAC (clause 10.3), encoder side:
 * regular bins coded with a context, bypass bins and the terminating bin.
 * Everything is inline so that the coding loops keep the coder state in
 * registers (they copy the struct into a local).  The decoder has its own
 * engine, dec_engine.h.
 */
#ifndef DCABAC_ARITH_H
#define DCABAC_ARITH_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "context.h"

#if defined(__GNUC__) || defined(__clang__)
#define DCABAC_LIKELY(x) __builtin_expect(!!(x), 1)
#define DCABAC_UNLIKELY(x) __builtin_expect(!!(x), 0)
static inline int renorm_shift(uint32_t r) { return __builtin_clz(r) - 23; }
#else
#define DCABAC_LIKELY(x) (x)
#define DCABAC_UNLIKELY(x) (x)
static inline int renorm_shift(uint32_t r)
{
    int n = 0;
    while ((r << n) < 256) n++;
    return n;
}
#endif

DCABAC_INLINE uint32_t rlps_of(const dcabac_ctx *c, uint32_t range)
{
    int q = ctx_sum(c) >> 7;
    if (q < 0) q = -q;
    return dcabac_rlps[(range & 0xE0) + (uint32_t)q];
}

DCABAC_INLINE unsigned ctx_mps(const dcabac_ctx *c) { return ctx_sum(c) >= 0; }

/* ======================================================================
 * Encoder engine
 * ====================================================================== */

typedef struct byte_sink {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int oom;              /* an allocation failed; output is incomplete */
} byte_sink;

static inline void sink_put(byte_sink *s, uint8_t b)
{
    if (DCABAC_UNLIKELY(s->len == s->cap)) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        uint8_t *nb = s->oom ? NULL : (uint8_t *)realloc(s->buf, cap);
        if (!nb) {
            s->oom = 1;
            return;
        }
        s->buf = nb;
        s->cap = cap;
    }
    s->buf[s->len++] = b;
}

typedef struct bin_encoder {
    uint32_t low;
    uint32_t range;
    int bits_left;
    uint32_t num_buffered;  /* pending bytes: `buffered` plus a run of 0xFF */
    uint8_t buffered;
} bin_encoder;

static inline void be_start(bin_encoder *e)
{
    e->low = 0;
    e->range = 510;
    e->bits_left = 23;
    e->num_buffered = 0;
    e->buffered = 0;
}

/* Move the top byte of `low` out, resolving carries into pending bytes. */
static inline void be_put_byte(bin_encoder *e, byte_sink *s)
{
    uint32_t lead = e->low >> (24 - e->bits_left);
    e->bits_left += 8;
    e->low &= 0xFFFFFFFFu >> e->bits_left;
    if (lead == 0xFF) {
        e->num_buffered++;
    } else if (e->num_buffered > 0) {
        uint32_t carry = lead >> 8;
        sink_put(s, (uint8_t)(e->buffered + carry));
        e->buffered = (uint8_t)lead;
        while (e->num_buffered > 1) {
            sink_put(s, (uint8_t)(0xFF + carry));
            e->num_buffered--;
        }
    } else {
        e->num_buffered = 1;
        e->buffered = (uint8_t)lead;
    }
}

DCABAC_INLINE void be_decision(bin_encoder *e, byte_sink *s, dcabac_ctx *c, unsigned bin)
{
    uint32_t rlps = rlps_of(c, e->range);
    uint32_t rmps = e->range - rlps;
    uint32_t mask = 0u - (uint32_t)(bin != ctx_mps(c));
    uint32_t range = (rlps & mask) | (rmps & ~mask);
    int n = renorm_shift(range);
    e->low = (e->low + (rmps & mask)) << n;
    e->range = range << n;
    e->bits_left -= n;
    if (e->bits_left < 12) be_put_byte(e, s);
    ctx_update(c, bin);
}

DCABAC_INLINE void be_bypass(bin_encoder *e, byte_sink *s, unsigned bin)
{
    e->low <<= 1;
    if (bin) e->low += e->range;
    if (--e->bits_left < 12) be_put_byte(e, s);
}

DCABAC_INLINE void be_bypass_bits(bin_encoder *e, byte_sink *s, uint32_t v, int n)
{
    while (n-- > 0) be_bypass(e, s, (v >> n) & 1u);
}

/* Terminating bin equal to 1, then flush everything (end of a payload). */
static inline void be_finish(bin_encoder *e, byte_sink *s)
{
    e->range -= 2;
    e->low += e->range;
    e->low <<= 7;
    e->range = 256;
    e->bits_left -= 7;
    if (e->bits_left < 12) be_put_byte(e, s);
    if ((e->low >> (32 - e->bits_left)) != 0) {
        sink_put(s, (uint8_t)(e->buffered + 1));
        while (e->num_buffered > 1) {
            sink_put(s, 0x00);
            e->num_buffered--;
        }
        e->low -= 1u << (32 - e->bits_left);
    } else {
        if (e->num_buffered > 0) sink_put(s, e->buffered);
        while (e->num_buffered > 1) {
            sink_put(s, 0xFF);
            e->num_buffered--;
        }
    }
    e->low >>= 8;
    e->low = (e->low << 1) | 1u;
    e->bits_left -= 1;
    int nbits = 24 - e->bits_left;
    uint32_t aligned = (uint32_t)(((uint64_t)e->low << (32 - nbits)) & 0xFFFFFFFFu);
    for (int i = 0; i < nbits; i += 8) sink_put(s, (uint8_t)(aligned >> (24 - i)));
    e->num_buffered = 0;
}

#endif
