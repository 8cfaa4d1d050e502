/*
 * DeepCABAC: the context-adaptive binary arithmetic coder of
 * ISO/IEC 15938-17:2024 (Neural Network Coding), clause 10 (entropy coding)
 * and the second-edition context tools (temporal context adaptation,
 * history-dependent significance probability, row skipping).
 *
 * One NNR compressed data unit (NDU) payload is one arithmetic codeword.
 * Inside it, each tensor of the unit is coded in turn; the codeword ends with
 * a terminating bin and a flush.  The API mirrors that:
 *
 *   encoder: dcabac_enc_begin, { dcabac_enc_bypass (QP offset),
 *            dcabac_enc_tensor } per tensor, dcabac_enc_finish
 *   decoder: dcabac_dec_begin, { dcabac_dec_bypass, dcabac_dec_tensor }
 *            per tensor, dcabac_dec_finish
 *
 * All state lives in the handles; there is no global mutable state, so
 * different handles may be used on different threads at the same time.
 * A handle itself must not be used by two threads at once.
 *
 * Every read of input bytes is bounds-checked: a truncated or corrupted
 * payload makes the decoder return an error status, never read outside the
 * buffer it was given.
 */
#ifndef DEEPCABAC_H
#define DEEPCABAC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct layout or a function signature below changes. */
#define DCABAC_ABI_VERSION 4

/* Largest number of greater-than flags: cabac_unary_length_minus1 is u(8). */
#define DCABAC_MAX_GT_FLAGS 256

typedef enum dcabac_status {
    DCABAC_OK = 0,
    DCABAC_E_NOMEM = 1,      /* memory allocation failed */
    DCABAC_E_ARG = 2,        /* invalid argument or coding parameters */
    DCABAC_E_STATE = 3,      /* call out of order (e.g. tensor after finish) */
    DCABAC_E_RANGE = 4,      /* encoder input value cannot be coded */
    DCABAC_E_TRUNCATED = 5,  /* decoder needed bytes beyond the payload */
    DCABAC_E_CORRUPT = 6,    /* decoded data inconsistent (overflow, bad terminator) */
    DCABAC_E_TRAILING = 7,   /* payload has bytes left after the terminating bin */
    DCABAC_E_OVERFLOW = 8    /* quantizer: levels would leave the int32 range at this step size */
} dcabac_status;

/* Coding parameters of one tensor (clause 10 syntax elements and the
 * values they depend on).  The tensor is viewed as a row-major matrix of
 * `height` rows (its first dimension) and `width` columns (the product of
 * the remaining dimensions; 1 for a 1-D tensor). */
typedef struct dcabac_tensor {
    int64_t height;
    int64_t width;
    int32_t scan_order;          /* 0 = row-major, 1..4 = blocks of 4 << scan_order */
    int32_t num_gt_flags;        /* cabac_unary_length_minus1 + 1, 1..256 */
    uint8_t dq_flag;             /* dependent quantization: values are reconstruction indices */
    uint8_t general_profile_idc; /* 0 or 1 */
    uint8_t parent_flag;         /* parent_node_id_present_flag of the NDU */
    uint8_t hdsp_flag;           /* encoder: use HDSP (needs history); decoder: set on return */
    uint8_t row_skip_flag;       /* encoder: skip all-zero rows; decoder: set on return */
    uint8_t param_opt;           /* encoder: choose context init sets by estimation */
    uint8_t dq_any_index;        /* encoder, with dq_flag: accept any integer; one that is no
                                  * reconstruction index of its state is coded as the level
                                  * floor((t + sgn(t) * (state & 1)) / 2), as the reference
                                  * encoder does (the decoder returns that level's index) */
    uint32_t codebook_size;      /* 0 = no codebook */
    uint32_t codebook_zero;      /* CbZeroOffset (index of zero in the codebook) */
    const int32_t *base;         /* TCA: parent's stored integers (height*width), or NULL */
    const uint8_t *history;      /* HDSP: 1 where an earlier version was non-zero, or NULL */
} dcabac_tensor;

/* One CABAC entry point: the decoder state at the start of a block row. */
typedef struct dcabac_entry_point {
    uint64_t bit_position;  /* decoder bit position after the restart */
    uint32_t value;         /* arithmetic decoder value >> 7 (8 bits) */
    uint32_t dq_state;      /* dependent-quantization state (0..7) */
} dcabac_entry_point;

typedef struct dcabac_encoder dcabac_encoder;
typedef struct dcabac_decoder dcabac_decoder;

int dcabac_abi_version(void);
const char *dcabac_strerror(int status);

/* Number of entry points dcabac_dec_tensor reports for this tensor:
 * one per block row when a block scan has more than one block row, else 0.
 * Negative on invalid parameters. */
int64_t dcabac_num_entry_points(const dcabac_tensor *t);

/* ---- encoder ---------------------------------------------------------- */

dcabac_encoder *dcabac_encoder_new(void);
void dcabac_encoder_free(dcabac_encoder *enc);
/* Detail of the last error (position, value), or "" */
const char *dcabac_encoder_message(const dcabac_encoder *enc);
/* Use SIMD (AVX-512) in the encoder's estimation pass when the CPU has it
 * (the default); returns whether SIMD is now in use.  Output is identical. */
int dcabac_encoder_set_simd(dcabac_encoder *enc, int enable);

/* Start a new payload; discards any previous output. */
int dcabac_enc_begin(dcabac_encoder *enc);
/* Code the low `nbits` bits of value as bypass bins, most significant first. */
int dcabac_enc_bypass(dcabac_encoder *enc, uint32_t value, int nbits);
/* Code one tensor of height*width stored integers. */
int dcabac_enc_tensor(dcabac_encoder *enc, const dcabac_tensor *t, const int32_t *values);
/* Entry points (clause 10.5) of the tensor the last dcabac_enc_tensor coded,
 * as the decoder reports them, except `value`: here the low 9 bits of the
 * arithmetic coder's interval base at that point.  The decoder's window is
 * (payload bits bit_position .. bit_position + 8, zero past the end, minus
 * that value) mod 512, known once the payload is finished (clause 10.3: the
 * decoder's value is the codeword minus the interval base).  Copies up to
 * `capacity` of them; *count is their number (dcabac_num_entry_points). */
int dcabac_enc_entry_points(const dcabac_encoder *enc, dcabac_entry_point *eps, size_t capacity, size_t *count);
/* Code the terminating bin and flush; then *data and *size give the payload,
 * which stays valid until the next call on this handle. */
int dcabac_enc_finish(dcabac_encoder *enc, const uint8_t **data, size_t *size);

/* ---- decoder ---------------------------------------------------------- */

dcabac_decoder *dcabac_decoder_new(void);
void dcabac_decoder_free(dcabac_decoder *dec);
const char *dcabac_decoder_message(const dcabac_decoder *dec);

/* Start decoding a payload; the bytes must stay alive until finish. */
int dcabac_dec_begin(dcabac_decoder *dec, const uint8_t *data, size_t size);
/* Read `nbits` (0..32) bypass bins, most significant first. */
int dcabac_dec_bypass(dcabac_decoder *dec, int nbits, uint32_t *value);
/* Decode one tensor into out[height*width]; t->hdsp_flag and t->row_skip_flag
 * receive the decoded flags.  Entry points are written to eps (capacity
 * eps_capacity, which must be >= dcabac_num_entry_points(t); eps may be NULL
 * when that is 0).  After an error the content of out is unspecified. */
int dcabac_dec_tensor(dcabac_decoder *dec, dcabac_tensor *t, int32_t *out,
                      dcabac_entry_point *eps, size_t eps_capacity);
/* Decoding one tensor's block rows apart (clause 10.5 entry points), e.g.
 * on several threads: the result is what dcabac_dec_tensor writes.
 *
 * dcabac_dec_tensor_begin reads the tensor's prologue (HDSP and row-skip
 * flags, row-skip list, context initialisation sets) at this decoder's
 * position, sets t->hdsp_flag and t->row_skip_flag, and writes the entry
 * point of block row 0 to *first.  Only for block scans with more than one
 * block row (dcabac_num_entry_points(t) > 0).
 *
 * dcabac_dec_rows then decodes block rows row_begin..row_end-1 of the
 * tensor begun on `src`, starting at entry point *start (ignored, and may be
 * NULL, for row 0), into out (the whole tensor's array; only those rows'
 * positions are written).  `dec` is src itself or any other decoder handle
 * (begun or not); t must describe the tensor begun.  eps (or NULL) receives
 * the entry points the decoding meets, of block rows row_begin + 1 up to
 * row_end (that one unless row_end is the last block row): room for
 * row_end - row_begin.  The rows decoded are the stream's exactly when the
 * entry point reached at row_end equals the stream's one for that row,
 * which the caller checks (that chains every range to the one before it,
 * and the first range starts at the prologue).  When dec is src and row_end
 * is the last block row, src continues after the tensor (next tensor or
 * finish).
 *
 * While rows are being decoded, src may be passed to dcabac_dec_rows on
 * several threads at once (it is only read, except by its own call), but no
 * other call may be made on it.  An entry point whose window lies outside
 * the payload, or whose value or DQ state no decoder can reach, gives
 * DCABAC_E_CORRUPT. */
int dcabac_dec_tensor_begin(dcabac_decoder *dec, dcabac_tensor *t, dcabac_entry_point *first);
int dcabac_dec_rows(dcabac_decoder *dec, const dcabac_decoder *src, const dcabac_tensor *t, int32_t *out,
                    const dcabac_entry_point *start, int64_t row_begin, int64_t row_end, dcabac_entry_point *eps);
/* Decode the terminating bin; fails unless it is 1 and all bytes were used.
 * *consumed receives the number of payload bytes the decoder read. */
int dcabac_dec_finish(dcabac_decoder *dec, size_t *consumed);

/* ---- quantization -----------------------------------------------------
 * Encoder-side quantizers (clause 9.3 defines only reconstruction; these
 * make the reference encoder's choices).  All take `count` weights visited
 * in `order` (positions in coding order, i.e. the tensor's scan; NULL =
 * 0..count-1) and write stored integers to out at the weights' positions.
 *
 * Before quantizing they apply the reference encoder's int32 guard: if a
 * scaled weight would round outside the int32 range (with DQ: outside
 * [-(2^31 - 2), 2^31 - 3]) they return DCABAC_E_OVERFLOW and the caller
 * chooses a coarser step.  Non-finite weights give DCABAC_E_RANGE. */

/* Dependent scalar quantization, lambda = 0: reconstruction indices (the
 * values dcabac_enc_tensor codes with dq_flag = 1) of the squared-error
 * trellis. */
int dcabac_dq_quantize(const float *weights, int64_t count, const int64_t *order, float step, int32_t *out);

/* Dependent scalar quantization with rate-distortion optimisation:
 * lambda_scale >= 0 (0 = dcabac_dq_quantize); the rate model has
 * rate_gt_flags (0..255) greater-than flags, which the reference encoder
 * sets to cabac_unary_length_minus1. */
int dcabac_dq_quantize_rd(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                          int32_t rate_gt_flags, int32_t *out);
/* The same without SIMD, lambda_scale = 0 included (tests compare the two). */
int dcabac_dq_quantize_rd_portable(const float *weights, int64_t count, const int64_t *order, float step,
                                   double lambda_scale, int32_t rate_gt_flags, int32_t *out);

/* Uniform reconstruction quantization: levels; lambda_scale = 0 rounds
 * (order is then irrelevant), lambda_scale > 0 decides sequentially with a
 * rate model of rate_gt_flags greater-than flags. */
int dcabac_urq_quantize(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                        int32_t rate_gt_flags, int32_t *out);

#ifdef __cplusplus
}
#endif

#endif /* DEEPCABAC_H */
