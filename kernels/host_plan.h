/* The entry points of host_items.c, host_edit.c, host_paths.c, host_remade.c, host_pass.c and host_simulate.c that
   other host sources call directly (host_glue.c, the extension module): one declaration each, included by their
   definitions too, so a signature change cannot drift. Their arguments are documented at the definitions;
   pat_sglang/host_core.py's ctypes types are the Python side's copy (host_paths.c, host_remade.c and host_pass.c have
   none: only the extension module calls them). */
#ifndef PAT_HOST_PLAN_H
#define PAT_HOST_PLAN_H
#include <stdint.h>

int64_t pat_plan_items(int64_t packs, const int64_t *pack_tokens, const int64_t *kv_offset,
                       const int64_t *pack_req_count, const int32_t *pack_req, const int64_t *splits, int64_t rpb,
                       const int64_t *tile_of_size, const int64_t *tile_m_of_size, int64_t long_tokens,
                       const uint8_t *leaf_pack, int64_t num_requests, int64_t num_items, int64_t num_entries,
                       int64_t max_partials,
                       int32_t *items, int32_t *item_req, int32_t *item_dst, int32_t *merge_indptr,
                       int32_t *merge_partials, int64_t *item_pack, int64_t *item_split, uint8_t *open_mask,
                       int64_t *summary);
int64_t pat_edit_forest(int64_t num_kept, int64_t width, const int64_t *kept, const int64_t *kept_q, int64_t n,
                        const int64_t *attach, const int64_t *seq, int64_t *out, int64_t entries);
/* The smallest joiner's first private key above prev among (attach node, key) pairs (num of them), -1 for none:
   the joiners' distinct keys in ascending order, one call each (a step has a few joiners) */
int64_t pat_next_joiner_key(const int64_t *pairs, int64_t num, int64_t prev);
int64_t pat_edit_places(int64_t n_real, int64_t n, const int64_t *old_of, int64_t num_old, const int64_t *old_attach,
                        const int64_t *old_first, int64_t num_joiners, const int64_t *joiners, const int64_t *joined,
                        int64_t *attach, int64_t *first, int64_t *groups);
int64_t pat_split_length(const int64_t *lengths, int64_t n_lengths, int64_t longest, const int64_t *pack_tokens,
                         const int64_t *pack_blocks, const int64_t *pack_req_count, const int32_t *pack_req,
                         int64_t n_entries, int64_t num_requests, int64_t packs, int64_t slots,
                         const int64_t *block_token_bytes, const double *block_overheads, int64_t n_overheads,
                         int64_t long_tokens, double chain_slot_bytes, double tolerance, int64_t batch_items);
int64_t pat_forest_from_paths(int64_t n_req, const int64_t *seq, int64_t n_in, const int64_t *e_req_in,
                              const int64_t *e_key_in, const int64_t *e_len_in, int index, int64_t *work,
                              int64_t *out, int64_t *shape);
int64_t pat_remade_plan(int64_t prev_n, const int32_t *prev_items, int64_t prev_e, const int32_t *prev_req,
                        const int32_t *prev_dst, int64_t prev_requests, int64_t prev_partials, int64_t n,
                        const int64_t *old_index, const int64_t *rows, const int64_t *seq, int64_t stride,
                        int64_t split, int64_t lut_n, const int64_t *tile_of_size, const int64_t *tile_m_of_size,
                        int64_t long_tokens, int64_t lo, int64_t hi, int64_t max_items, int64_t max_partials,
                        int64_t max_entries,
                        int64_t *work, int32_t *items, int32_t *item_req, int32_t *item_dst, int32_t *merge_indptr,
                        int32_t *merge_partials, int64_t *summary);

/* host_pass.c: a planning pass's packs and split counts (planner._plan before its items). PatPassIn holds the forest's
   arrays (per node: q, tok, parent, start, req_ptr [nodes + 1]; per entry: req32; per request: row_base,
   request_lengths), the pass's numbers and the planner's constants; PatPassOut the caller's buffers (per node: kv_offset,
   pack_blocks, splits, cut, leaf_pack, pack_node, pack_counts, pack_tokens, top, pack_ptr [nodes + 1]; per entry:
   pack_req) and the numbers. Returns one of PAT_PASS_*. */
enum { PAT_PASS_OK = 0, PAT_PASS_PYTHON = 1, PAT_PASS_OVER_LIMITS = 2, PAT_PASS_BEYOND_TABLE = 3,
       PAT_PASS_NO_MEMORY = -2 };
typedef struct {
    int64_t nodes, entries, requests;
    const int64_t *q, *tok, *parent, *start, *req_ptr, *row_base, *request_lengths;
    const int32_t *req32;
    int64_t rpb, tok_bytes, partial_bytes, num_kv_heads, target, min_split_tokens;
    int64_t keep_split, keep_for; /* last step's split length and the planned KV it was chosen for; keep_split 0: none */
    int64_t fixed_split;          /* the caller's split length; 0: the planner's */
    int64_t long_tokens;          /* a pack of this many KV tokens or more is long (planner.tile_rule) */
    int64_t limited, max_items, max_entries, max_partials; /* limited 0: no limits (the three unread) */
    int64_t table_len;            /* slot-table positions */
    /* planner constants: SPLIT_LADDER, MAX_WAVES, SPLIT_STEPS_UP, SPLIT_KEEP_FRACTION, TAIL_WAVE_DIVISOR,
       TAIL_SPLIT_FACTOR, MIN_SPLIT_TOKENS, and whether the tail split is on (TAIL_SPLIT_ENV) */
    const double *ladder;
    int64_t n_ladder, max_waves, steps_up;
    double keep_fraction;
    int64_t tail_divisor, tail_factor, min_split, tail_on;
    /* the split search's cost model (planner._split_length): per row-block entry a KV token's cost and an item's fixed
       cost (planner._block_costs, n_block_costs of each), each partial of the longest merge chain, the tie tolerance,
       the simulation's batch of equal items */
    const int64_t *block_token_bytes;
    const double *block_overheads;
    int64_t n_block_costs;
    double chain_cost, cost_tolerance;
    int64_t run_batch_items;
} PatPassIn;
typedef struct {
    int64_t *kv_offset, *pack_blocks, *splits, *cut, *pack_node, *pack_counts, *pack_tokens, *top, *pack_ptr;
    int32_t *pack_req;
    uint8_t *leaf_pack;
    int64_t all_pay, packs, pack_entries, kv_limit, planned_tokens, split_tokens, chosen_for_tokens, num_items,
        num_entries, unique_tokens, request_tokens;
    int64_t searched, coarser; /* the cost model compared lengths; a coarser length was chosen to fit the limits */
} PatPassOut;
int64_t pat_plan_packs(const PatPassIn *in, PatPassOut *out);
/* host_pass.c's pieces the extension module also serves one at a time (planner._packs_all_pay, _pack_numbers,
   _split_numbers, the numpy pass's calls): whether every shared node (shared: a byte per node, or NULL for q > 1) pays
   for its own pack; a pass's row blocks per pack, slot-table end and longest pack, returning the planned KV tokens;
   the split counts at `length` and the items and entries they make. */
int pat_packs_all_pay(int64_t nodes, const int64_t *q, const int64_t *tok, const uint8_t *shared, int64_t rpb,
                      int64_t tok_bytes, int64_t partial_bytes);
int64_t pat_pack_numbers(int64_t packs, const int64_t *tokens, const int64_t *offsets, const int64_t *counts,
                         int64_t rpb, int64_t *blocks, int64_t *limit, int64_t *longest);
void pat_split_numbers(int64_t packs, const int64_t *tokens, int64_t length, const int64_t *blocks,
                       const int64_t *counts, int64_t *splits, int64_t *items, int64_t *entries);

#endif
