/*
 * Arithmetic decoding engine of DeepCABAC (clause 10.3), decoder side:
 * regular bins coded with a context, bypass bins, the terminating bin and
 * the restart at entry points (clause 10.5).
 *
 * The engine is the one of clause 10.3 computed differently, for speed; it
 * decodes the same bins from the same bits:
 *
 * - The arithmetic decoder's 9-bit value window sits in bits 63..55 of a
 *   64-bit register, and up to 54 further payload bits are read ahead below
 *   it, followed by a marker bit, so bytes are loaded a few at a time and
 *   renormalisation needs no bit count.  Every load is bounds-checked; past
 *   the payload end the register is fed zero bytes and the decoder notes
 *   when the window reaches them.
 * - A context keeps the two estimates of the dual-rate model biased to be
 *   non-negative, s0 + 128 and s1 + 2048, in one 64-bit word together with
 *   their sum s1 + 16 * s0 + 4096, which drives coding (see DEC_SUM); the
 *   probability update adds two table entries to the word.  The tables are
 *   derived from dcabac_curve and dcabac_rlps when a decoder is created.
 * - The rLPS of a probability for all 8 range rows is one 64-bit word; the
 *   range picks a byte by a shift (a shorter dependency chain than an
 *   indexed load).
 * - Most bins (the greater-than flags after the first, and the remainder's
 *   prefix) instead read the range after an MPS and the rMPS from a table
 *   indexed by probability and range: one load is the whole step of the
 *   range's dependency chain from bin to bin after an MPS (see
 *   bd_decision_tab).
 * - Decisions are written so that the range's dependency chain from bin to
 *   bin is short: after an MPS, renormalisation is a compare and a select
 *   (conditional moves; x86-64 uses inline assembly because compilers turn
 *   the select into a branch, elsewhere or with -DDEC_NO_ASM the same in
 *   C), and the branch-free decision for bins near p = 1/2 takes the LPS
 *   renormalisation from tables.
 * - A run of n bypass bins is one integer division: the bins are the binary
 *   digits of floor((value * 2^n + next n bits) / range) (clause 10.3.4
 *   applied n times), and the remainder is the new value.
 *
 * On payloads no encoder produces (a first window >= 510, or a window >= 256
 * at an entry point) clause 10.3 leaves the value outside the range; the
 * engine then decodes other, still bounded, garbage than a 32-bit one would.
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

/* Fields of a context word: bits 0..15 2 * (s1 + 2048) (so that the slow
 * estimate's update index is the word's second byte), bits 16..31
 * 16 * (s0 + 128), bits 51..63 the biased sum s1 + 16 * s0 + 4096 (so that
 * sum >> 7 is one shift and the MPS is the word's sign).  Each stays in
 * 0..8191 (s0 in -123..123 and s1 in -1923..1923 are all the update can
 * reach from the initial states), so adding the signed changes of all
 * fields at once never carries across. */
#define DEC_SLOW(x) ((uint64_t)(uint32_t)(x) << 1)
#define DEC_FAST(x) ((uint64_t)(uint32_t)(x) << 16)
#define DEC_SUM(x) ((uint64_t)(uint32_t)(x) << 51)
/* rLPS table index q = sum >> 7, and the MPS = sum >> 12 (the word's sign) */
#define DEC_Q(w) ((uint32_t)((w) >> 58))
#define DEC_MPS(w) ((unsigned)((w) >> 63))

/* Update tables of one initialisation set (its two window shifts) and one
 * bin value: the change of the context word, indexed for the fast estimate
 * by j0 = (16 * (s0 + 128) + (bin ? 0 : 112)) >> 7 and for the slow one by
 * j1 = (s1 + 2048 + (bin ? 0 : 127)) >> 7, read from the word as
 * (2 * (s1 + 2048) + (bin ? 0 : 254)) >> 8.  j equals 16 + ((g * s) >> p)
 * of clause 10.3 for bin 1 (g = +1); for bin 0 it is 32 minus that, with -s
 * rounded the other way. */
typedef struct dec_update_tab {
    int64_t fast[33];
    int64_t slow[33];
} dec_update_tab;

/* One probability at one range: the range after an MPS (renormalised) and
 * rMPS, the bound the value is compared with. */
typedef struct dec_mps_step {
    uint16_t range;
    uint16_t rmps;
} dec_mps_step;

/* The constant tables of a decoder, derived from the shared ones. */
typedef struct dec_tables {
    /* rLPS by q = sum >> 7: byte r of entry q + 32 is the rLPS of range
     * row r = (range >> 5) & 7 */
    uint64_t rlps[64];
    /* the same rows for the renormalisation after an LPS: the shift n,
     * and (rLPS << n) - 256 */
    uint64_t lps_shift[64];
    uint64_t lps_range[64];
    /* MPS steps: entry 256 * q + range for biased q = sum >> 7 + 32 (0..63)
     * and range 256..511.  The first 256 entries are unused, so that the
     * row of q starts at entry 256 * q and is indexed by the range itself. */
    dec_mps_step mps[65 * 256];
    dec_update_tab upd[DCABAC_NUM_INIT_SETS][2];
    /* dependent quantization: 3 * next state at 3 * state + parity */
    uint8_t next3[24];
} dec_tables;

typedef struct dec_ctx {
    uint64_t w;                    /* the context word, see DEC_SUM */
    const dec_update_tab *upd[2];  /* update tables of its set by bin */
    uint32_t set;                  /* initialisation set (for restarts) */
} dec_ctx;

static inline uint64_t dec_pack_state(int s0, int s1)
{
    uint32_t f = 16u * (uint32_t)(s0 + 128), l = (uint32_t)(s1 + 2048);
    return DEC_SUM(f + l) | DEC_SLOW(l) | DEC_FAST(f);
}

static inline void dec_tables_init(dec_tables *t)
{
    int q, r, j, set;
    for (q = -32; q < 32; q++) {
        int aq = q < 0 ? -q : q;
        uint64_t row = 0, shift = 0, range = 0;
        for (r = 0; r < 8; r++) {
            /* |q| = 32 cannot occur (|sum| stays below 4096 - 128) */
            uint32_t rlps = dcabac_rlps[32 * r + (aq < 32 ? aq : 31)];
            int n = dec_clz32(rlps) - 23;
            /* the MPS steps of the 32 ranges of row r, which share rlps */
            dec_mps_step *e = &t->mps[256 * (q + 32) + 256 + 32 * r];
            row |= (uint64_t)rlps << (8 * r);
            shift |= (uint64_t)n << (8 * r);
            range |= (uint64_t)((rlps << n) - 256) << (8 * r);
            for (j = 0; j < 32; j++) {
                uint32_t rmps = 256 + 32 * (uint32_t)r + (uint32_t)j - rlps;
                e[j].range = (uint16_t)(rmps < 256 ? 2 * rmps : rmps);
                e[j].rmps = (uint16_t)rmps;
            }
        }
        t->rlps[q + 32] = row;
        t->lps_shift[q + 32] = shift;
        t->lps_range[q + 32] = range;
    }
    for (r = 0; r < 8; r++) {
        t->next3[3 * r] = (uint8_t)(3 * dcabac_dq_next[r][0]);
        t->next3[3 * r + 1] = (uint8_t)(3 * dcabac_dq_next[r][1]);
    }
    for (set = 0; set < DCABAC_NUM_INIT_SETS; set++) {
        int sh0 = dcabac_init_sets[set].sh0, sh1 = dcabac_init_sets[set].sh1;
        dec_update_tab *dn = &t->upd[set][0], *up = &t->upd[set][1];
        for (j = 0; j <= 32; j++) {
            /* bin 1: step at 16 + (s >> p) = j; bin 0: step at 16 + ((-s) >> p) = 32 - j */
            int64_t up0 = j < 32 ? 16 * (dcabac_curve[j] >> sh0) : 0;
            int64_t up1 = j < 32 ? dcabac_curve[j] >> sh1 : 0;
            int64_t dn0 = j > 0 ? 16 * (dcabac_curve[32 - j] >> sh0) : 0;
            int64_t dn1 = j > 0 ? dcabac_curve[32 - j] >> sh1 : 0;
            up->fast[j] = (int64_t)(DEC_SUM(up0) | DEC_FAST(up0));
            up->slow[j] = (int64_t)(DEC_SUM(up1) | DEC_SLOW(up1));
            dn->fast[j] = -(int64_t)(DEC_SUM(dn0) | DEC_FAST(dn0));
            dn->slow[j] = -(int64_t)(DEC_SUM(dn1) | DEC_SLOW(dn1));
        }
    }
}

static inline void dec_ctx_init(dec_ctx *c, const dec_tables *t, int set)
{
    c->w = dec_pack_state(dcabac_init_sets[set].s0, dcabac_init_sets[set].s1);
    c->set = (uint32_t)set;
    c->upd[0] = &t->upd[set][0];
    c->upd[1] = &t->upd[set][1];
}

static inline void dec_ctx_reset(dec_ctx *c)
{
    c->w = dec_pack_state(dcabac_init_sets[c->set].s0, dcabac_init_sets[c->set].s1);
}

/* Adapt the model to the decoded bin (clause 10.3 probability update). */
DCABAC_INLINE void dec_ctx_update(dec_ctx *c, uint64_t w, unsigned bin)
{
    /* add the bin-0 rounding to both estimates at once, then read j0, j1 */
    uint64_t m = (uint64_t)bin - 1u; /* 0 for bin 1, all ones for bin 0 */
    uint64_t x = w + (m & (DEC_FAST(112) | DEC_SLOW(127)));
    uint32_t j0 = (uint32_t)x >> 23;
    uint32_t j1 = (uint32_t)(x >> 8) & 0xFFu; /* the word's second byte */
    const dec_update_tab *u = c->upd[bin];
    c->w = w + (uint64_t)u->fast[j0] + (uint64_t)u->slow[j1];
}

/* ---- the arithmetic decoder -------------------------------------------- */

/* The value register: the window in bits 63..55, then the bits read ahead,
 * then a 1 bit (the marker), then zeros.  The marker moves with every
 * shift, so that renormalising needs no count; the number of bits read
 * ahead is 54 minus the marker's position.  Decoding a bin needs the
 * window complete, i.e. at least 0 bits read ahead. */
typedef struct bin_decoder {
    uint64_t value;       /* window, read-ahead bits, marker */
    uint32_t range;       /* 256..510 */
    int zero_bits;        /* zero bits fed after the payload end (read ahead, or past) */
    const uint8_t *p;     /* next byte to load */
    const uint8_t *end;   /* one past the last payload byte */
    const uint8_t *begin; /* first payload byte */
    int64_t limit;        /* for decoding loops: levels of this magnitude or more
                           * take the checked path; -1 once zero bytes are fed */
} bin_decoder;

static inline int dec_ctz64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* Bits read ahead below the window (-9..54; negative: window incomplete). */
DCABAC_INLINE int bd_ahead(const bin_decoder *d) { return DEC_LOW_BITS - 1 - dec_ctz64(d->value); }

/* Whether at least n (0..54) bits are read ahead: the marker is below them. */
DCABAC_INLINE int bd_has(const bin_decoder *d, int n) { return (d->value << (9 + n)) != 0; }

/* Whether the window has reached past the payload end (truncation). */
DCABAC_INLINE int bd_overrun(const bin_decoder *d) { return bd_ahead(d) < d->zero_bits; }

/* Refill near the payload end, byte by byte, then with zero bytes.  Takes
 * and returns the state by value so that the decoding loops can keep their
 * copy in registers.  b: bits read ahead, marker already cleared. */
static DEC_NOINLINE bin_decoder bd_refill_tail(bin_decoder d, int b)
{
    while (b <= DEC_LOW_BITS - 9) { /* at most 54 read ahead: room for the marker */
        uint64_t byte = 0;
        if (d.p < d.end) {
            byte = *d.p++;
        } else {
            d.zero_bits += 8;
            d.limit = -1;
        }
        d.value |= byte << (DEC_LOW_BITS - 8 - b);
        b += 8;
    }
    d.value |= (uint64_t)1 << (DEC_LOW_BITS - 1 - b);
    return d;
}

/* Load read-ahead bits (whole bytes); afterwards at least 47 are read ahead. */
static inline void bd_refill(bin_decoder *d)
{
    int b = bd_ahead(d);
    d->value &= d->value - 1; /* clear the marker */
    if (DEC_LIKELY(d->end - d->p >= 8)) {
        const uint8_t *q = d->p;
        uint64_t x = (uint64_t)q[0] << 56 | (uint64_t)q[1] << 48 | (uint64_t)q[2] << 40 | (uint64_t)q[3] << 32 |
                     (uint64_t)q[4] << 24 | (uint64_t)q[5] << 16 | (uint64_t)q[6] << 8 | (uint64_t)q[7];
        int k = (DEC_LOW_BITS - 1 - b) >> 3; /* 1..7 */
        x &= ~(uint64_t)0 << (64 - 8 * k);
        d->value |= x >> (9 + b);
        d->p = q + k;
        b += 8 * k;
        d->value |= (uint64_t)1 << (DEC_LOW_BITS - 1 - b);
    } else {
        *d = bd_refill_tail(*d, b);
    }
}

static inline void bd_start(bin_decoder *d, const uint8_t *data, size_t size)
{
    d->begin = data;
    d->p = data;
    d->end = data + size;
    d->value = (uint64_t)1 << 63; /* marker only: 9 bits missing */
    d->zero_bits = 0;
    d->limit = -1;
    d->range = 510;
    bd_refill(d);
}

/* Restart at an entry point of clause 10.5 without decoding what precedes
 * it: the window is `window` and the bits read ahead are the payload's
 * from bit position + 9 on (the register holds raw payload bits below the
 * window), the range 256.  The caller checks that the window lies inside
 * the payload (position + 9 <= 8 * size). */
static inline void bd_seek(bin_decoder *d, const uint8_t *data, size_t size, uint64_t position, uint32_t window)
{
    uint64_t q = position + 9;
    int b = 0;
    d->begin = data;
    d->end = data + size;
    d->p = data + (q >> 3);
    d->zero_bits = 0;
    d->limit = -1;
    d->range = 256;
    d->value = (uint64_t)(window & 511u) << DEC_LOW_BITS;
    if (q & 7) {
        /* the rest of a partly used byte: its low 8 - (q & 7) bits */
        b = 8 - (int)(q & 7);
        d->value |= (uint64_t)(*d->p++ & ((1u << b) - 1u)) << (DEC_LOW_BITS - b);
    }
    d->value |= (uint64_t)1 << (DEC_LOW_BITS - 1 - b); /* the marker below them */
    bd_refill(d);
}

/* Number of payload bits before the window (the bit position of clause 10.5). */
static inline uint64_t bd_bit_position(const bin_decoder *d)
{
    return (uint64_t)(8 * ((int64_t)(d->p - d->begin) + d->zero_bits / 8) - 9 - bd_ahead(d));
}

/* The 9-bit window (entry point value of clause 10.5). */
static inline uint32_t bd_window(const bin_decoder *d) { return (uint32_t)(d->value >> DEC_LOW_BITS); }

/* Payload bytes the window has touched. */
static inline size_t bd_bytes_used(const bin_decoder *d) { return (size_t)((bd_bit_position(d) + 9 + 7) / 8); }

/* The 8 rLPS values of context word w, one per range row. */
DCABAC_INLINE uint64_t bd_rlps_row(const dec_tables *t, uint64_t w) { return t->rlps[DEC_Q(w)]; }

/* rLPS of a row at the current range: byte (range >> 5) & 7. */
DCABAC_INLINE uint32_t bd_rlps(uint64_t row, uint32_t range) { return (uint32_t)(row >> ((range >> 2) & 56)) & 0xFFu; }

/* Read ahead kept by callers that decode several bins between refill tests
 * (budget mode).  An MPS bin consumes at most one bit and an LPS bin at most
 * 7, so after a test for DEC_BUDGET bits the caller may decode bins whose
 * worst case adds up to DEC_BUDGET without testing.  The level loop's worst
 * case between tests is the significance bin (1), the sign (7), N - 1 MPS
 * greater-than flags and the LPS that ends them (7): N + 14 bits.  A bin
 * that is an LPS and continues the level tests again. */
#define DEC_BUDGET 32
/* The level loop's worst case besides its N greater-than flags. */
#define DEC_LEVEL_EXTRA_BITS 14
/* Largest number of greater-than flags the level loop decodes in budget mode. */
#define DEC_BUDGET_MAX_GT (DEC_BUDGET - DEC_LEVEL_EXTRA_BITS)

/* After a bin: refill unless `budget` bits (0 or DEC_BUDGET) are read ahead. */
DCABAC_INLINE void bd_keep(bin_decoder *d, int budget)
{
    if (!bd_has(d, budget)) bd_refill(d);
}

/* Renormalisation after an MPS: by one bit if rmps < 256 (rmps >= 128). */
DCABAC_INLINE void bd_renorm_mps(bin_decoder *d, uint32_t rmps)
{
#if defined(__GNUC__) && defined(__x86_64__) && !defined(DEC_NO_ASM)
    /* a compare and conditional moves: two cycles on the range's
     * dependency chain; compilers turn the C select into a branch */
    uint32_t r = rmps, r2 = rmps + rmps;
    uint64_t v = d->value, v2 = v + v;
    __asm__("cmpl $256, %[r]\n\t"
            "cmovb %[r2], %[r]\n\t"
            "cmovb %[v2], %[v]"
            : [r] "+r"(r), [v] "+r"(v)
            : [r2] "r"(r2), [v2] "r"(v2)
            : "cc");
    d->range = r;
    d->value = v;
#else
    unsigned n = rmps < 256;
    d->range = rmps << n;
    d->value <<= n;
#endif
}

/* The value's part of bd_renorm_mps, for callers that have the new range. */
DCABAC_INLINE void bd_renorm_value(bin_decoder *d, uint32_t rmps)
{
#if defined(__GNUC__) && defined(__x86_64__) && !defined(DEC_NO_ASM)
    uint64_t v = d->value, v2 = v + v;
    __asm__("cmpl $256, %[r]\n\t"
            "cmovb %[v2], %[v]"
            : [v] "+r"(v)
            : [r] "r"(rmps), [v2] "r"(v2)
            : "cc");
    d->value = v;
#else
    d->value <<= rmps < 256;
#endif
}

/* A context-coded bin, given the context's word w and rLPS row (read early
 * by callers that know the context before the previous bin is decoded).
 * Each path ends with a constant bin, so that the update is specialised and
 * the caller's test of the bin disappears (the extra test, on the
 * context's MPS, is well predicted).  `budget` (a constant): in budget
 * mode (see DEC_BUDGET) an MPS bin does not test the read-ahead, nor does a
 * bin 0 (which ends the level's bins: the caller tests before the next
 * level). */
DCABAC_INLINE unsigned bd_decision_wb(bin_decoder *d, dec_ctx *c, uint64_t w, uint64_t row, int budget)
{
    unsigned mps = DEC_MPS(w);
    uint32_t rlps = bd_rlps(row, d->range);
    uint32_t rmps = d->range - rlps;
    if (DEC_LIKELY(d->value < (uint64_t)rmps << DEC_LOW_BITS)) {
        bd_renorm_mps(d, rmps);
        if (!budget) bd_keep(d, 0);
        if (mps) {
            dec_ctx_update(c, w, 1);
            return 1;
        }
        dec_ctx_update(c, w, 0);
        return 0;
    } else {
        int n = dec_clz32(rlps) - 23;
        d->value = (d->value - ((uint64_t)rmps << DEC_LOW_BITS)) << n;
        d->range = rlps << n;
        if (mps) {
            if (!budget) bd_keep(d, 0);
            dec_ctx_update(c, w, 0);
            return 0;
        }
        bd_keep(d, budget ? DEC_BUDGET : 0);
        dec_ctx_update(c, w, 1);
        return 1;
    }
}

/* The row of MPS steps of context word w. */
DCABAC_INLINE const dec_mps_step *bd_mps_row(const dec_tables *t, uint64_t w)
{
    const dec_mps_step *row = t->mps + 256 * DEC_Q(w);
#if defined(__GNUC__) || defined(__clang__)
    /* keeps the compiler from folding 256 * q into the indexed loads of
     * bd_decision_tab, which would put an add on the range's chain */
    __asm__("" : "+r"(row));
#endif
    return row;
}

/* The same as bd_decision_wb, with the MPS step read from the context's
 * row of the table (clause 10.3 computed the same): after an MPS the next
 * range is one load from this range, against a shift, a mask, a
 * subtraction and a select with the rLPS row.  On payloads of long levels
 * it brought a greater-than flag from 7.5 to 5.5 cycles (AMD Zen 4).  It
 * did not pay for the significance bin and the first greater-than flag,
 * whose words arrive late after the mispredicted end of the previous level
 * (the table's row adds a step to the word's path); those stay with
 * bd_decision_wb.
 * Its MPS tail and LPS path repeat bd_decision_wb's on purpose: with both
 * moved into shared inline helpers (the same operations), GCC 12 laid out
 * the level loop differently and the synthetic decode ran 2-9 % slower
 * (C harness, interleaved runs). */
DCABAC_INLINE unsigned bd_decision_tab(bin_decoder *d, dec_ctx *c, uint64_t w, const dec_mps_step *row, int budget)
{
    unsigned mps = DEC_MPS(w);
    uint32_t range = d->range, rmps, next;
#if defined(__GNUC__) && defined(__x86_64__) && !defined(DEC_NO_ASM)
    /* two loads from one address computation: compilers compute the
     * address with a separate lea, a cycle more on the range's chain */
    uint64_t index = range;
    __asm__("movzwl 2(%[row],%[i],4), %[rmps]\n\t"
            "movzwl (%[row],%[i],4), %[next]"
            : [rmps] "=&r"(rmps), [next] "=r"(next)
            : [row] "r"(row), [i] "r"(index), "m"(*(const dec_mps_step(*)[512])row));
#else
    rmps = row[range].rmps;
    next = row[range].range;
#endif
    if (DEC_LIKELY(d->value < (uint64_t)rmps << DEC_LOW_BITS)) {
        d->range = next;
        bd_renorm_value(d, rmps);
        if (!budget) bd_keep(d, 0);
        if (mps) {
            dec_ctx_update(c, w, 1);
            return 1;
        }
        dec_ctx_update(c, w, 0);
        return 0;
    } else {
        uint32_t rlps = range - rmps;
        int n = dec_clz32(rlps) - 23;
        d->value = (d->value - ((uint64_t)rmps << DEC_LOW_BITS)) << n;
        d->range = rlps << n;
        if (mps) {
            if (!budget) bd_keep(d, 0);
            dec_ctx_update(c, w, 0);
            return 0;
        }
        bd_keep(d, budget ? DEC_BUDGET : 0);
        dec_ctx_update(c, w, 1);
        return 1;
    }
}

/* A context-coded bin. */
DCABAC_INLINE unsigned bd_decision_b(bin_decoder *d, const dec_tables *t, dec_ctx *c, int budget)
{
    uint64_t w = c->w;
    return bd_decision_tab(d, c, w, bd_mps_row(t, w), budget);
}

DCABAC_INLINE unsigned bd_decision(bin_decoder *d, const dec_tables *t, dec_ctx *c)
{
    return bd_decision_b(d, t, c, 0);
}

/* A context-coded bin without branches on its value, for bins near p = 1/2.
 * Both outcomes' renormalisations are ready when the comparison is (the
 * LPS one from tables), so the range's dependency chain is only a compare
 * and a select longer than for a predicted MPS.  `budget`: the read-ahead
 * tested afterwards (0 or DEC_BUDGET), or -1 for no test (the caller's
 * budget covers the bin). */
DCABAC_INLINE unsigned bd_decision_flat_b(bin_decoder *d, const dec_tables *t, dec_ctx *c, int budget)
{
    uint64_t w = c->w;
    uint32_t q = DEC_Q(w), sh = (d->range >> 2) & 56;
    uint32_t rlps = (uint32_t)(t->rlps[q] >> sh) & 0xFFu;
    uint32_t n_lps = (uint32_t)(t->lps_shift[q] >> sh) & 0xFFu;
    uint32_t r_lps = ((uint32_t)(t->lps_range[q] >> sh) & 0xFFu) + 256;
    uint32_t rmps = d->range - rlps;
    uint32_t n_mps = rmps < 256;
    uint64_t scaled = (uint64_t)rmps << DEC_LOW_BITS;
    uint64_t v_lps = d->value - scaled;
    uint32_t range = rmps << n_mps, n = n_mps;
    uint64_t v = d->value;
    unsigned lps, bin;
#if defined(__GNUC__) && defined(__x86_64__) && !defined(DEC_NO_ASM)
    /* compilers turn the C selects below into a branch */
    __asm__("cmpq %[sc], %[v]\n\t"
            "setae %b[lps]\n\t"
            "cmovae %[rl], %[range]\n\t"
            "cmovae %[nl], %[n]\n\t"
            "cmovae %[vl], %[v]"
            : [range] "+r"(range), [n] "+r"(n), [v] "+r"(v), [lps] "=&q"(lps)
            : [sc] "r"(scaled), [rl] "r"(r_lps), [nl] "r"(n_lps), [vl] "r"(v_lps)
            : "cc");
    lps &= 1u;
#else
    lps = v >= scaled;
    if (lps) {
        range = r_lps;
        n = n_lps;
        v = v_lps;
    }
#endif
    bin = DEC_MPS(w) ^ lps;
    d->value = v << n;
    d->range = range;
    if (budget >= 0) bd_keep(d, budget);
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
    bd_keep(d, 0);
    bin |= d->value >= scaled;
    if (bin) d->value -= scaled; /* modulo 2^64, the result is below scaled */
    return bin;
}

/* n bypass bins, 0 <= n <= 31, first bin most significant: one division. */
DCABAC_INLINE uint32_t bd_bypass_run(bin_decoder *d, int n)
{
    uint64_t x, low;
    uint32_t v, r;
    if (!bd_has(d, n)) bd_refill(d);
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
        bd_keep(d, 0);
    }
    return 0;
}

#endif
