/*
 * Arithmetic decoding engine of DeepCABAC (clause 10.3), decoder side:
 * regular bins coded with a context, bypass bins, the terminating bin and
 * the restart at entry points (clause 10.5).
 *
 * The engine is the one of clause 10.3 computed differently, for speed; it
 * decodes the same bins from the same bits:
 *
 * - The arithmetic decoder's 9-bit value window sits in bits 63..55 of a
 *   64-bit register, and up to 55 further payload bits are read ahead below
 *   it, so bytes are loaded a few at a time instead of one per 8 bits.
 *   Every load is bounds-checked; past the payload end the register is fed
 *   zero bytes and the decoder notes that the window has reached them.
 * - A context keeps the two estimates of the dual-rate model in one 32-bit
 *   word, biased to be non-negative: (s0 + 128) << 20 | (s1 + 2048).  The
 *   model's sum s1 + 16 * s0 (plus 4096) is then (w >> 16) + (w & 0xFFFF),
 *   and one probability update is two table look-ups added to the word.
 *   The tables are derived from dcabac_curve and dcabac_rlps when a decoder
 *   is created.
 * - A run of n bypass bins is one integer division: the bins are the binary
 *   digits of floor((value * 2^n + next n bits) / range) (clause 10.3.4
 *   applied n times), and the remainder is the new value.
 */
#ifndef DCABAC_DEC_ENGINE_H
#define DCABAC_DEC_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include "context.h"

#if defined(__GNUC__) || defined(__clang__)
#define DEC_LIKELY(x) __builtin_expect(!!(x), 1)
#define DEC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DEC_NOINLINE __attribute__((noinline))
static inline int dec_clz32(uint32_t x) { return __builtin_clz(x); }
#else
#define DEC_LIKELY(x) (x)
#define DEC_UNLIKELY(x) (x)
#define DEC_NOINLINE
static inline int dec_clz32(uint32_t x)
{
    int n = 0;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}
#endif

/* Bits of the register below the 9-bit window. */
#define DEC_LOW_BITS 55

/* ---- probability models ------------------------------------------------ */

/* Update tables of one initialisation set (its two window shifts): for the
 * fast estimate, entry 2*j + bin is the change of the word when the bin is
 * coded and j = (16*(s0 + 128) + (bin ? 0 : 112)) >> 7; for the slow one,
 * entry 2*j + bin with j = ((s1 + 2048) + (bin ? 0 : 127)) >> 7.  Both j
 * equal 16 + ((g * s) >> precision) of clause 10.3 for bin 1 (g = +1) and 32
 * minus it for bin 0, where -s is rounded the other way. */
typedef struct dec_update_tab {
    int32_t fast[2 * 33];
    int32_t slow[2 * 33];
} dec_update_tab;

/* The constant tables of a decoder, derived from the shared ones. */
typedef struct dec_tables {
    /* rLPS by |sum >> 7| and range row: entry 8 * (q + 32) + ((range >> 5) & 7) */
    uint8_t rlps[64 * 8];
    dec_update_tab upd[DCABAC_NUM_INIT_SETS];
} dec_tables;

typedef struct dec_ctx {
    uint32_t w;                 /* (s0 + 128) << 20 | (s1 + 2048) */
    uint32_t set;               /* initialisation set (for restarts) */
    const dec_update_tab *upd;  /* update table of that set */
} dec_ctx;

static inline uint32_t dec_pack_state(int s0, int s1)
{
    return ((uint32_t)(s0 + 128) << 20) | (uint32_t)(s1 + 2048);
}

static inline void dec_tables_init(dec_tables *t)
{
    int q, r, j, set;
    for (q = -32; q < 32; q++) {
        int aq = q < 0 ? -q : q;
        for (r = 0; r < 8; r++) {
            /* |q| = 32 cannot occur (|sum| stays below 4096 - 128) */
            t->rlps[8 * (q + 32) + r] = dcabac_rlps[32 * r + (aq < 32 ? aq : 31)];
        }
    }
    for (set = 0; set < DCABAC_NUM_INIT_SETS; set++) {
        int sh0 = dcabac_init_sets[set].sh0, sh1 = dcabac_init_sets[set].sh1;
        dec_update_tab *u = &t->upd[set];
        for (j = 0; j <= 32; j++) {
            /* bin 1: step at 16 + (s >> p) = j; bin 0: step at 16 + ((-s) >> p) = 32 - j */
            int up0 = j < 32 ? dcabac_curve[j] >> sh0 : 0;
            int up1 = j < 32 ? dcabac_curve[j] >> sh1 : 0;
            int dn0 = j > 0 ? dcabac_curve[32 - j] >> sh0 : 0;
            int dn1 = j > 0 ? dcabac_curve[32 - j] >> sh1 : 0;
            u->fast[2 * j + 1] = (int32_t)((uint32_t)up0 << 20);
            u->fast[2 * j + 0] = -(int32_t)((uint32_t)dn0 << 20);
            u->slow[2 * j + 1] = up1;
            u->slow[2 * j + 0] = -dn1;
        }
    }
}

static inline void dec_ctx_init(dec_ctx *c, const dec_tables *t, int set)
{
    c->w = dec_pack_state(dcabac_init_sets[set].s0, dcabac_init_sets[set].s1);
    c->set = (uint32_t)set;
    c->upd = &t->upd[set];
}

static inline void dec_ctx_reset(dec_ctx *c)
{
    c->w = dec_pack_state(dcabac_init_sets[c->set].s0, dcabac_init_sets[c->set].s1);
}

/* Adapt the model to the decoded bin (clause 10.3 probability update). */
DCABAC_INLINE void dec_ctx_update(dec_ctx *c, uint32_t w, unsigned bin)
{
    uint32_t m = (uint32_t)bin - 1u; /* 0 for bin 1, all ones for bin 0 */
    uint32_t j0 = ((w >> 16) + (m & 112u)) >> 7;
    uint32_t j1 = ((w & 0xFFFFu) + (m & 127u)) >> 7;
    const dec_update_tab *u = c->upd;
    c->w = w + (uint32_t)u->fast[2 * j0 + bin] + (uint32_t)u->slow[2 * j1 + bin];
}

/* ---- the arithmetic decoder -------------------------------------------- */

typedef struct bin_decoder {
    uint64_t value;       /* window in bits 63..55, then `bits` read-ahead bits */
    int bits;             /* read-ahead bits below the window (>= 0 between bins) */
    int zero_bits;        /* zero bits fed after the payload end (the last ones of `bits`) */
    uint32_t range;       /* 256..510 */
    const uint8_t *p;     /* next byte to load */
    const uint8_t *end;   /* one past the last payload byte */
    const uint8_t *begin; /* first payload byte */
} bin_decoder;

/* Whether the window has reached past the payload end (truncation). */
DCABAC_INLINE int bd_overrun(const bin_decoder *d) { return d->bits < d->zero_bits; }

/* Refill near the payload end, byte by byte, then with zero bytes. */
static DEC_NOINLINE void bd_refill_tail(bin_decoder *d)
{
    while (d->bits <= DEC_LOW_BITS - 8) {
        uint64_t b = 0;
        if (d->p < d->end) b = *d->p++;
        else d->zero_bits += 8;
        d->value |= b << (DEC_LOW_BITS - 8 - d->bits);
        d->bits += 8;
    }
}

/* Load read-ahead bits; needs bits >= -9.  Afterwards bits >= 47. */
DCABAC_INLINE void bd_refill(bin_decoder *d)
{
    if (DEC_LIKELY(d->end - d->p >= 8)) {
        const uint8_t *q = d->p;
        uint64_t x = (uint64_t)q[0] << 56 | (uint64_t)q[1] << 48 | (uint64_t)q[2] << 40 | (uint64_t)q[3] << 32 |
                     (uint64_t)q[4] << 24 | (uint64_t)q[5] << 16 | (uint64_t)q[6] << 8 | (uint64_t)q[7];
        int k = (DEC_LOW_BITS - 1 - d->bits) >> 3;
        /* the bytes after the k whole ones are ORed in partially; the next
         * refill ORs the same bits into the same places */
        d->value |= x >> (9 + d->bits);
        d->p = q + k;
        d->bits += 8 * k;
    } else {
        bd_refill_tail(d);
    }
}

static inline void bd_start(bin_decoder *d, const uint8_t *data, size_t size)
{
    d->begin = data;
    d->p = data;
    d->end = data + size;
    d->value = 0;
    d->bits = -9;
    d->zero_bits = 0;
    d->range = 510;
    bd_refill(d);
}

/* Number of payload bits before the window (the bit position of clause 10.5). */
static inline uint64_t bd_bit_position(const bin_decoder *d)
{
    return (uint64_t)(8 * ((int64_t)(d->p - d->begin) + d->zero_bits / 8) - 9 - d->bits);
}

/* The 9-bit window (entry point value of clause 10.5). */
static inline uint32_t bd_window(const bin_decoder *d) { return (uint32_t)(d->value >> DEC_LOW_BITS); }

/* Payload bytes the window has touched. */
static inline size_t bd_bytes_used(const bin_decoder *d) { return (size_t)((bd_bit_position(d) + 9 + 7) / 8); }

/* rLPS of context word w at the current range. */
DCABAC_INLINE uint32_t bd_rlps(const dec_tables *t, uint32_t range, uint32_t sb)
{
    return t->rlps[8 * (sb >> 7) + ((range >> 5) & 7)];
}

/* A context-coded bin. */
DCABAC_INLINE unsigned bd_decision(bin_decoder *d, const dec_tables *t, dec_ctx *c)
{
    uint32_t w = c->w;
    uint32_t sb = (w >> 16) + (w & 0xFFFFu); /* sum + 4096 */
    uint32_t rlps = bd_rlps(t, d->range, sb);
    uint32_t rmps = d->range - rlps;
    unsigned bin = sb >> 12;                   /* MPS: sum >= 0 */
    if (DEC_LIKELY(d->value < (uint64_t)rmps << DEC_LOW_BITS)) {
        if (rmps < 256) {
            d->range = rmps << 1;
            d->value <<= 1;
            if (--d->bits < 0) bd_refill(d);
        } else {
            d->range = rmps;
        }
    } else {
        int n = dec_clz32(rlps) - 23;
        bin ^= 1;
        d->value = (d->value - ((uint64_t)rmps << DEC_LOW_BITS)) << n;
        d->range = rlps << n;
        d->bits -= n;
        if (d->bits < 0) bd_refill(d);
    }
    dec_ctx_update(c, w, bin);
    return bin;
}

/* A context-coded bin without branches on its value, for bins near p = 1/2. */
DCABAC_INLINE unsigned bd_decision_flat(bin_decoder *d, const dec_tables *t, dec_ctx *c)
{
    uint32_t w = c->w;
    uint32_t sb = (w >> 16) + (w & 0xFFFFu);
    uint32_t rlps = bd_rlps(t, d->range, sb);
    uint32_t rmps = d->range - rlps;
    uint64_t scaled = (uint64_t)rmps << DEC_LOW_BITS;
    unsigned lps = d->value >= scaled;
    uint64_t mask = (uint64_t)0 - lps;
    uint32_t range = lps ? rlps : rmps;
    unsigned bin = (sb >> 12) ^ lps;
    int n = dec_clz32(range) - 23;
    d->value = (d->value - (scaled & mask)) << n;
    d->range = range << n;
    d->bits -= n;
    if (d->bits < 0) bd_refill(d);
    dec_ctx_update(c, w, bin);
    return bin;
}

/* One bypass bin. */
DCABAC_INLINE unsigned bd_bypass(bin_decoder *d)
{
    uint64_t scaled = (uint64_t)d->range << DEC_LOW_BITS;
    /* the doubled window may need a 10th bit: the one shifted out */
    unsigned bin = (unsigned)(d->value >> 63);
    d->value <<= 1;
    if (--d->bits < 0) bd_refill(d);
    bin |= d->value >= scaled;
    if (bin) d->value -= scaled; /* modulo 2^64, the result is below scaled */
    return bin;
}

/* n bypass bins, 0 <= n <= 31, first bin most significant: one division. */
DCABAC_INLINE uint32_t bd_bypass_run(bin_decoder *d, int n)
{
    uint64_t x, low;
    uint32_t v, r;
    if (d->bits < n) bd_refill(d);
    /* window followed by the next n bits */
    x = d->value >> (DEC_LOW_BITS - n);
    low = (d->value << n) & (((uint64_t)1 << DEC_LOW_BITS) - 1);
    if (n <= 23) {
        uint32_t x32 = (uint32_t)x;
        v = x32 / d->range;
        r = x32 - v * d->range;
    } else {
        v = (uint32_t)(x / d->range);
        r = (uint32_t)(x - (uint64_t)v * d->range);
    }
    d->value = ((uint64_t)r << DEC_LOW_BITS) | low;
    d->bits -= n;
    return v;
}

/* Bypass bins one at a time (any count up to 32). */
static inline uint32_t bd_bypass_bits(bin_decoder *d, int n)
{
    uint32_t v = 0;
    while (n-- > 0) v = (v << 1) | bd_bypass(d);
    return v;
}

/* The terminating bin. */
static inline unsigned bd_terminate(bin_decoder *d)
{
    d->range -= 2;
    if (d->value >= (uint64_t)d->range << DEC_LOW_BITS) return 1;
    if (d->range < 256) {
        d->range <<= 1;
        d->value <<= 1;
        if (--d->bits < 0) bd_refill(d);
    }
    return 0;
}

#endif
