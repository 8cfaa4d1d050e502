/* cffi declarations of csrc/include/deepcabac.h (kept by hand, checked
 * against the real header by the C compiler in API mode). */
#define DCABAC_ABI_VERSION ...
#define DCABAC_MAX_GT_FLAGS ...

typedef enum dcabac_status {
    DCABAC_OK, DCABAC_E_NOMEM, DCABAC_E_ARG, DCABAC_E_STATE, DCABAC_E_RANGE,
    DCABAC_E_TRUNCATED, DCABAC_E_CORRUPT, DCABAC_E_TRAILING, DCABAC_E_OVERFLOW, ...
} dcabac_status;

typedef struct dcabac_tensor {
    int64_t height;
    int64_t width;
    int32_t scan_order;
    int32_t num_gt_flags;
    uint8_t dq_flag;
    uint8_t general_profile_idc;
    uint8_t parent_flag;
    uint8_t hdsp_flag;
    uint8_t row_skip_flag;
    uint8_t param_opt;
    uint8_t dq_any_index;
    uint32_t codebook_size;
    uint32_t codebook_zero;
    const int32_t *base;
    const uint8_t *history;
    ...;
} dcabac_tensor;

typedef struct dcabac_entry_point {
    uint64_t bit_position;
    uint32_t value;
    uint32_t dq_state;
    ...;
} dcabac_entry_point;

typedef ... dcabac_encoder;
typedef ... dcabac_decoder;

int dcabac_abi_version(void);
const char *dcabac_strerror(int status);
int64_t dcabac_num_entry_points(const dcabac_tensor *t);

dcabac_encoder *dcabac_encoder_new(void);
void dcabac_encoder_free(dcabac_encoder *enc);
const char *dcabac_encoder_message(const dcabac_encoder *enc);
int dcabac_encoder_set_simd(dcabac_encoder *enc, int enable);
int dcabac_enc_begin(dcabac_encoder *enc);
int dcabac_enc_bypass(dcabac_encoder *enc, uint32_t value, int nbits);
int dcabac_enc_tensor(dcabac_encoder *enc, const dcabac_tensor *t, const int32_t *values);
int dcabac_enc_entry_points(const dcabac_encoder *enc, dcabac_entry_point *eps, size_t capacity, size_t *count);
int dcabac_enc_finish(dcabac_encoder *enc, const uint8_t **data, size_t *size);

dcabac_decoder *dcabac_decoder_new(void);
void dcabac_decoder_free(dcabac_decoder *dec);
const char *dcabac_decoder_message(const dcabac_decoder *dec);
int dcabac_dec_begin(dcabac_decoder *dec, const uint8_t *data, size_t size);
int dcabac_dec_bypass(dcabac_decoder *dec, int nbits, uint32_t *value);
int dcabac_dec_tensor(dcabac_decoder *dec, dcabac_tensor *t, int32_t *out,
                      dcabac_entry_point *eps, size_t eps_capacity);
int dcabac_dec_tensor_begin(dcabac_decoder *dec, dcabac_tensor *t, dcabac_entry_point *first);
int dcabac_dec_rows(dcabac_decoder *dec, const dcabac_decoder *src, const dcabac_tensor *t, int32_t *out,
                    const dcabac_entry_point *start, int64_t row_begin, int64_t row_end, dcabac_entry_point *eps);
int dcabac_dec_finish(dcabac_decoder *dec, size_t *consumed);
int dcabac_dq_quantize(const float *weights, int64_t count, const int64_t *order, float step, int32_t *out);
int dcabac_dq_quantize_rd(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                          int32_t rate_gt_flags, int32_t *out);
int dcabac_dq_quantize_rd_portable(const float *weights, int64_t count, const int64_t *order, float step,
                                   double lambda_scale, int32_t rate_gt_flags, int32_t *out);
int dcabac_urq_quantize(const float *weights, int64_t count, const int64_t *order, float step, double lambda_scale,
                        int32_t rate_gt_flags, int32_t *out);
