/* The dispatch gate's node terms (pat_sglang/planner.py node_blocks, first_node_partials, where they are derived):
   host_batch.c's tally keeps their sums up to date as requests come and go, host_glue.c's count_bound counts them
   afresh. */
#ifndef PAT_HOST_BOUND_H
#define PAT_HOST_BOUND_H

#include <stdint.h>

/* The bound's numbers of one configuration (planner.BoundShape) */
typedef struct {
    int64_t rows_per_block, token_bytes, partial_bytes;
} PatBoundShape;

/* KV tokens every plan reads at least of a node of `tokens` tokens on `rows` requests' paths */
static inline int64_t pat_node_blocks(int64_t rows, int64_t tokens, const PatBoundShape *s) {
    return tokens * ((rows + s->rows_per_block - 1) / s->rows_per_block);
}

/* Bytes every plan moves beyond pat_node_blocks because `rows` requests start at a node of `tokens` tokens: the least
   over k of tokens * (k - ceil(k / rpb)) * token bytes + 2 * (rows - k) * partial bytes, at 0 or the ends of a row
   block's run of k */
static inline int64_t pat_first_node_partials(int64_t rows, int64_t tokens, const PatBoundShape *s) {
    const int64_t rpb = s->rows_per_block;
    int64_t best = 2 * s->partial_bytes * rows;
    for (int64_t lo = 1; lo <= rows; lo += rpb) {
        const int64_t ends[2] = {lo, lo + rpb - 1 < rows ? lo + rpb - 1 : rows};
        for (int e = 0; e < 2; e++) {
            const int64_t k = ends[e];
            const int64_t h = tokens * (k - (k + rpb - 1) / rpb) * s->token_bytes + 2 * s->partial_bytes * (rows - k);
            best = h < best ? h : best;
        }
    }
    return best;
}

#endif
