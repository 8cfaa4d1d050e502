/*
 * Encoder-side quantization for dependent scalar quantization (clause 9.3):
 * an 8-state trellis (Viterbi) search over the reconstruction points of the
 * two quantizers, minimising squared error (lambda = 0).
 *
 * Candidate order, state order and tie-breaking are those of the reference
 * encoder, so the chosen reconstruction indices are identical to NNCodec's.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "deepcabac.h"
#include "tables.h"

/* decision per position and state: predecessor (bits 0..2) and slot (bits 3..5) */

int dcabac_dq_quantize(const float *weights, int64_t count, const int64_t *order, float step, int32_t *out)
{
    double q, cost[8], next_cost[8];
    uint8_t *decisions;
    int64_t i;
    int s, end_state;

    if ((!weights || !out) && count > 0) return DCABAC_E_ARG;
    if (count < 0 || !(step > 0.0f) || !isfinite(step)) return DCABAC_E_ARG;
    if (count == 0) return DCABAC_OK;
    /* Branches into each state, in the reference's evaluation order:
     * predecessors in increasing order; a parity-0 link offers the nonzero
     * candidate of its quantizer, then zero; a parity-1 link one candidate. */
    int branch_p[8][3], branch_slot[8][3];
    for (int t = 0; t < 8; t++) {
        int n = 0;
        for (int p = 0; p < 8; p++) {
            if (dcabac_dq_next[p][0] == t) {
                branch_p[t][n] = p, branch_slot[t][n++] = 3 * (p & 1);
                branch_p[t][n] = p, branch_slot[t][n++] = 4;
            }
            if (dcabac_dq_next[p][1] == t) branch_p[t][n] = p, branch_slot[t][n++] = 2 - (p & 1);
        }
    }
    decisions = (uint8_t *)malloc((size_t)count * 8);
    if (!decisions) return DCABAC_E_NOMEM;
    q = 1.0 / (double)step;
    cost[0] = 0.0;
    for (s = 1; s < 8; s++) cost[s] = 0.5 * DBL_MAX;

    for (i = 0; i < count; i++) {
        int64_t pos = order ? order[i] : i;
        double w = (double)weights[pos];
        double o = q * w * (w < 0 ? -1.0 : 1.0);
        double dist[5];
        double tr = trunc(o) - 1.0;
        int64_t m, c;
        if (!(o < 4.0e9)) {  /* also catches NaN */
            free(decisions);
            return DCABAC_E_RANGE;
        }
        m = tr < 1.0 ? 1 : (int64_t)tr;
        dist[4] = o * o;
        for (c = m; c < m + 4; c++) dist[c & 3] = (o - (double)c) * (o - (double)c);
        for (int t = 0; t < 8; t++) {
            double best = cost[branch_p[t][0]] + dist[branch_slot[t][0]];
            int choice = branch_p[t][0] | (branch_slot[t][0] << 3);
            for (int k = 1; k < 3; k++) {
                double j = cost[branch_p[t][k]] + dist[branch_slot[t][k]];
                if (j < best) {
                    best = j;
                    choice = branch_p[t][k] | (branch_slot[t][k] << 3);
                }
            }
            next_cost[t] = best;
            decisions[i * 8 + t] = (uint8_t)choice;
        }
        for (s = 0; s < 8; s++) cost[s] = next_cost[s];
    }

    end_state = 0;
    for (s = 1; s < 8; s++)
        if (cost[s] < cost[end_state]) end_state = s;
    for (i = count - 1, s = end_state; i >= 0; i--) {
        int64_t pos = order ? order[i] : i;
        uint8_t d = decisions[i * 8 + s];
        int p = d & 7, slot = d >> 3;
        int32_t t = 0;
        if (slot != 4) {
            double w = (double)weights[pos];
            double o = q * w * (w < 0 ? -1.0 : 1.0);
            double tr = trunc(o) - 1.0;
            int64_t m = tr < 1.0 ? 1 : (int64_t)tr;
            int64_t c = m + ((slot - (m & 3)) & 3); /* the candidate of that slot */
            int64_t level = (c + 1) >> 1;
            int64_t v = 2 * level - (p & 1);
            if (v > INT32_MAX) {
                free(decisions);
                return DCABAC_E_RANGE;
            }
            t = (int32_t)(w < 0 ? -v : v);
        }
        out[pos] = t;
        s = p;
    }
    free(decisions);
    return DCABAC_OK;
}
