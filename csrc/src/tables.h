/* Constant tables of DeepCABAC; see tables.c. */
#ifndef DCABAC_TABLES_H
#define DCABAC_TABLES_H

#include <stdint.h>

#define DCABAC_NUM_INIT_SETS 9

typedef struct dcabac_init_set {
    uint8_t sh0;  /* window shift of the fast estimate */
    uint8_t sh1;  /* window shift of the slow estimate */
    int16_t s0;   /* initial fast estimate */
    int16_t s1;   /* initial slow estimate (sum - 16 * s0) */
} dcabac_init_set;

extern const uint8_t dcabac_rlps[8 * 32];
extern const uint32_t dcabac_est_bits[1024][2];
extern const int16_t dcabac_curve[32];
extern const dcabac_init_set dcabac_init_sets[DCABAC_NUM_INIT_SETS];
extern const uint8_t dcabac_dq_next[8][2];

#endif
