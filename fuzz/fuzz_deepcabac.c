/*
 * libFuzzer harness of the C DeepCABAC coder (ISO/IEC 15938-17 clause 10).
 *
 * The first 12 bytes of an input choose the coding parameters of up to two
 * tensors (shape, scan order, number of greater-than flags, DQ, profile,
 * parent flag, codebook, TCA base / HDSP history); the rest is either
 *
 *   - mode "decode": an NDU payload handed to the decoder as it is, exactly
 *     as nnc_core's decoder does (QP offset bypass bins, tensors, finish);
 *     any status is acceptable, a crash or sanitizer report is not; or
 *   - mode "round trip": integers the encoder codes with those parameters;
 *     when the encoder accepts them, the decoder must return them exactly
 *     and consume the whole payload (abort otherwise).
 *
 * Build (see fuzz/README.md):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc/include -Icsrc/src \
 *         fuzz/fuzz_deepcabac.c csrc/src/\*.c -o fuzz/build/fuzz_deepcabac
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deepcabac.h"

#define HEADER 12
#define MAX_ELEMENTS 4096

typedef struct params {
    dcabac_tensor t;
    int qp_bits; /* bypass bins before the tensor (the QP offset), 0..13 */
} params;

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

/* Coding parameters from 6 header bytes; base and history are filled later. */
static void parse_params(const uint8_t *h, params *p)
{
    memset(p, 0, sizeof *p);
    uint32_t shape = rd16(h);
    p->t.height = 1 + (shape & 0x7f);        /* 1..128 */
    p->t.width = 1 + ((shape >> 7) & 0x1ff); /* 1..512 */
    while (p->t.height * p->t.width > MAX_ELEMENTS) p->t.width = (p->t.width + 1) / 2;
    p->t.scan_order = h[2] % 5;
    p->t.num_gt_flags = 1 + (h[3] % 16) * (h[3] >= 240 ? 16 : 1); /* mostly small, up to 241 */
    if (p->t.num_gt_flags > DCABAC_MAX_GT_FLAGS) p->t.num_gt_flags = DCABAC_MAX_GT_FLAGS;
    uint8_t f = h[4];
    p->t.dq_flag = f & 1;
    p->t.general_profile_idc = (f >> 1) & 1;
    p->t.parent_flag = (f >> 2) & 1;
    p->t.hdsp_flag = (f >> 3) & 1;     /* encoder only: HDSP with the history below */
    p->t.row_skip_flag = (f >> 4) & 1; /* encoder only */
    p->t.param_opt = (f >> 5) & 1;
    if ((f >> 6) & 1) {
        p->t.codebook_size = 1 + h[5] % 64;
        p->t.codebook_zero = (uint32_t)(h[5] >> 6) * p->t.codebook_size / 4;
    }
    p->qp_bits = (f >> 7) ? 6 + h[5] % 8 : 0;
}

/* Deterministic TCA base and HDSP history for a tensor (from a seed byte). */
static void fill_side(const params *p, uint8_t seed, int32_t *base, uint8_t *history)
{
    int64_t n = p->t.height * p->t.width;
    uint32_t x = 0x9e3779b9u ^ seed;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        base[i] = (x & 3) == 0 ? (int32_t)(x >> 28) - 8 : 0;
        history[i] = (x >> 8) & 1;
    }
}

static int decode_mode(const uint8_t *data, size_t size, params *ps, int count, int use_base, int use_history,
                       int32_t *bases[2], uint8_t *histories[2])
{
    static int32_t out[MAX_ELEMENTS];
    dcabac_entry_point eps[MAX_ELEMENTS];
    dcabac_decoder *dec = dcabac_decoder_new();
    if (!dec) return 0;
    int rc = dcabac_dec_begin(dec, data, size);
    for (int i = 0; i < count && rc == DCABAC_OK; i++) {
        uint32_t qp;
        if (ps[i].qp_bits) rc = dcabac_dec_bypass(dec, ps[i].qp_bits, &qp);
        if (rc) break;
        ps[i].t.base = use_base ? bases[i] : NULL;
        ps[i].t.history = use_history ? histories[i] : NULL;
        int64_t n_eps = dcabac_num_entry_points(&ps[i].t);
        if (n_eps < 0) { /* parameters the API refuses (e.g. a TCA base outside profile 1) */
            rc = dcabac_dec_tensor(dec, &ps[i].t, out, NULL, 0);
            if (rc != DCABAC_E_ARG) {
                fprintf(stderr, "decode: invalid parameters accepted with status %d\n", rc);
                abort();
            }
            break;
        }
        if (n_eps > MAX_ELEMENTS) abort(); /* at most one per block row */
        rc = dcabac_dec_tensor(dec, &ps[i].t, out, n_eps ? eps : NULL, (size_t)n_eps);
    }
    size_t consumed = 0;
    if (rc == DCABAC_OK) {
        rc = dcabac_dec_finish(dec, &consumed);
        if (rc == DCABAC_OK && consumed != size) {
            fprintf(stderr, "decode: finish accepted the payload but consumed %zu of %zu bytes\n", consumed, size);
            abort();
        }
    }
    dcabac_decoder_free(dec);
    return 0;
}

static int round_trip_mode(const uint8_t *data, size_t size, params *ps, int count, int use_base, int use_history,
                           int32_t *bases[2], uint8_t *histories[2])
{
    static int32_t values[2][MAX_ELEMENTS], out[MAX_ELEMENTS];
    static dcabac_entry_point eps[MAX_ELEMENTS];
    static dcabac_entry_point enc_eps[2][MAX_ELEMENTS]; /* recorded by the encoder */
    size_t n_enc_eps[2] = {0, 0};
    for (int i = 0; i < count; i++) {
        int64_t n = ps[i].t.height * ps[i].t.width;
        for (int64_t j = 0; j < n; j++) {
            /* levels from the input: mostly small, a few large; zero rows when the input runs out */
            size_t k = (size_t)(j + i * n);
            int32_t v = 0;
            if (k < size) {
                uint8_t b = data[k];
                v = (b & 0x80) ? (int32_t)(b & 0x3f) - 32 : (int32_t)(b & 7) - 4;
                if (b == 0xff && k + 4 < size) memcpy(&v, data + k + 1, 4), v >>= (data[k + 1] & 31);
            }
            if (ps[i].t.codebook_size) {
                int32_t lo = -(int32_t)ps[i].t.codebook_zero;
                int32_t hi = (int32_t)ps[i].t.codebook_size - 1 - (int32_t)ps[i].t.codebook_zero;
                v = v < lo ? lo : v > hi ? hi : v;
            }
            values[i][j] = v;
        }
        ps[i].t.dq_any_index = ps[i].t.dq_flag; /* any integer; compared by sign below */
        ps[i].t.base = use_base ? bases[i] : NULL;
        ps[i].t.history = use_history ? histories[i] : NULL;
    }
    dcabac_encoder *enc = dcabac_encoder_new();
    if (!enc) return 0;
    int rc = dcabac_enc_begin(enc);
    for (int i = 0; i < count && rc == DCABAC_OK; i++) {
        if (ps[i].qp_bits) rc = dcabac_enc_bypass(enc, (uint32_t)i * 5u, ps[i].qp_bits);
        if (rc == DCABAC_OK) rc = dcabac_enc_tensor(enc, &ps[i].t, values[i]);
        if (rc == DCABAC_OK) rc = dcabac_enc_entry_points(enc, enc_eps[i], MAX_ELEMENTS, &n_enc_eps[i]);
    }
    const uint8_t *payload = NULL;
    size_t payload_size = 0;
    if (rc == DCABAC_OK) rc = dcabac_enc_finish(enc, &payload, &payload_size);
    if (rc != DCABAC_OK) { /* e.g. a DQ index no state can reach: refused, fine */
        dcabac_encoder_free(enc);
        return 0;
    }
    uint8_t *copy = (uint8_t *)malloc(payload_size ? payload_size : 1); /* exact size: ASan sees over-reads */
    memcpy(copy, payload, payload_size);
    dcabac_encoder_free(enc);

    dcabac_decoder *dec = dcabac_decoder_new();
    rc = dcabac_dec_begin(dec, copy, payload_size);
    for (int i = 0; i < count; i++) {
        uint32_t qp = 0;
        if (rc == DCABAC_OK && ps[i].qp_bits) {
            rc = dcabac_dec_bypass(dec, ps[i].qp_bits, &qp);
            if (rc == DCABAC_OK && qp != (uint32_t)i * 5u) {
                fprintf(stderr, "round trip: bypass value %u decodes as %u\n", (unsigned)i * 5u, qp);
                abort();
            }
        }
        dcabac_tensor t = ps[i].t;
        t.hdsp_flag = t.row_skip_flag = 0; /* decoder outputs */
        int64_t n_eps = dcabac_num_entry_points(&t);
        if (n_eps < 0) abort(); /* the encoder accepted these parameters */
        if (rc == DCABAC_OK) rc = dcabac_dec_tensor(dec, &t, out, n_eps ? eps : NULL, (size_t)n_eps);
        if (rc != DCABAC_OK) {
            fprintf(stderr, "round trip: decoder status %d on tensor %d: %s\n", rc, i, dcabac_decoder_message(dec));
            abort();
        }
        /* the encoder's entry points are the decoder's: position and DQ state
         * as they are, the value once resolved from the payload (clause 10.3) */
        if (n_enc_eps[i] != (size_t)n_eps) {
            fprintf(stderr, "round trip: tensor %d: encoder recorded %zu entry points, decoder %lld\n", i, n_enc_eps[i],
                    (long long)n_eps);
            abort();
        }
        for (int64_t k = 0; k < n_eps; k++) {
            const dcabac_entry_point *e = &enc_eps[i][k], *d = &eps[k];
            uint32_t window = 0;
            for (int b = 0; b < 9; b++) {
                uint64_t bit = e->bit_position + (uint64_t)b;
                window = (window << 1) | (bit / 8 < payload_size ? (copy[bit / 8] >> (7 - bit % 8)) & 1u : 0u);
            }
            if (e->bit_position != d->bit_position || e->dq_state != d->dq_state
                || ((window - e->value) & 511u) != d->value) {
                fprintf(stderr, "round trip: tensor %d entry point %lld differs between encoder and decoder\n", i,
                        (long long)k);
                abort();
            }
        }
        for (int64_t j = 0; j < t.height * t.width; j++) {
            int32_t a = values[i][j], b = out[j];
            /* without DQ exact; with DQ an integer that is no reconstruction
             * index of its state comes back as a neighbouring index: zero
             * stays zero and no sign flips */
            int ok = t.dq_flag ? (a == 0 ? b == 0 : (a > 0 ? b >= 0 : b <= 0)) : a == b;
            if (!ok) {
                fprintf(stderr, "round trip: tensor %d element %lld: %d decodes as %d\n", i, (long long)j, a, b);
                abort();
            }
        }
    }
    size_t consumed = 0;
    rc = dcabac_dec_finish(dec, &consumed);
    if (rc != DCABAC_OK || consumed != payload_size) {
        fprintf(stderr, "round trip: finish status %d, consumed %zu of %zu bytes: %s\n", rc, consumed, payload_size,
                dcabac_decoder_message(dec));
        abort();
    }
    dcabac_decoder_free(dec);
    free(copy);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int32_t base_store[2][MAX_ELEMENTS];
    static uint8_t history_store[2][MAX_ELEMENTS];
    if (size < HEADER) return 0;
    params ps[2];
    parse_params(data, &ps[0]);
    parse_params(data + 6, &ps[1]);
    /* byte 11 is byte 5 of the second tensor: its low bits double as the mode */
    uint8_t mode = data[HEADER - 1];
    int count = 1 + (mode & 1);
    int use_base = (mode >> 1) & 1, use_history = (mode >> 2) & 1, round_trip = (mode >> 3) & 1;
    int32_t *bases[2] = {base_store[0], base_store[1]};
    uint8_t *histories[2] = {history_store[0], history_store[1]};
    for (int i = 0; i < count; i++) fill_side(&ps[i], data[i], bases[i], histories[i]);
    if (round_trip) return round_trip_mode(data + HEADER, size - HEADER, ps, count, use_base, use_history, bases, histories);
    return decode_mode(data + HEADER, size - HEADER, ps, count, use_base, use_history, bases, histories);
}
