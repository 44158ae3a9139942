/* Last step's plan re-made for a batch whose requests only left and joined, compiled for the host
   (kernels/host_glue.c's remade_items calls it).

   Role in pack-forward-merge: part of *pack*. pat_sglang/planner.py remade_plan keeps the kept requests' entries in the
   previous plan's items (each item re-pointed to the row of its first kept request, items left with no request
   dropped, partial slots renumbered over those still used) and gives each joiner its whole row as private items cut
   at the plan's split length, longest first before the kept items; then the merge map. In numpy that is ~40 calls
   over a few hundred items, ~225 us a re-made step at 256 requests on the project's 2-core VM: more than the forest
   edit and plan_forest it replaces together. Here it is a few passes over the items and entries. The numpy version is
   the fallback and the reference (tests/test_remade_plans.py compares them).

   pat_remade_plan(prev_n, prev_items, prev_e, prev_req, prev_dst, prev_requests, prev_partials, n, old_index, rows,
                   seq, stride, split, lut_n, tile_of_size, tile_m_of_size, long_tokens, lo, hi, max_items,
                   max_partials, max_entries, work, items, item_req, item_dst, merge_indptr, merge_partials, summary):
   the previous plan's items (prev_n rows of ITEM_FIELDS int32, entries consecutive in item order), entries (prev_e:
   request, partial slot or -1), request and partial counts; the new batch's n requests: old_index (the previous
   request each one is, or -1 for a joiner), pool rows and lengths; the row stride, the split length, the tile tables
   by requests per row block (lut_n entries: a short pack's row blocks, then a long one's, planner._tile_lut) and the
   KV tokens from which a pack is long (a joiner's row is its own pack; a kept item whose tile m is below its rows'
   short entry was a long pack's); the planned-token bounds [lo, hi] and the limits (-1: none). work: 3
   prev_e + 3 prev_n + prev_requests + prev_partials + 3 n + 2 int64 (n: new requests), plus 8 per joiner item.
   Outputs: items (rows of ITEM_FIELDS), item_req, item_dst, merge_indptr (n + 1), merge_partials, all int32, sized
   by the caller for the kept items plus the joiner items (sum over joiners of ceil(length / split)); summary: items,
   entries, partials, planned tokens, longest item's tokens.

   Returns 0; -1 where remade_plan returns None (planned tokens outside [lo, hi], an item left empty, over a limit or
   past MAX_ITEMS_GRID); -2 where the inputs are not a plan this reads (the numpy version then runs). */

#include <stdint.h>
#include <string.h>

#include "host_plan.h"
#include "host_sort.h"

#define MAX_ITEMS_GRID 65535 /* planner.MAX_ITEMS: the forward grid's y dimension */

typedef struct {
    const int64_t *tokens;
} JoinOrder;
/* joiner item *a before *b: more tokens first; equal ones keep their order (stable) */
#define JOIN_BEFORE(a, b, ctx) (((const JoinOrder *)(ctx))->tokens[*(a)] > ((const JoinOrder *)(ctx))->tokens[*(b)])
PAT_STABLE_SORT(sort_joined, int64_t, JOIN_BEFORE)

int64_t pat_remade_plan(int64_t prev_n, const int32_t *prev_items, int64_t prev_e, const int32_t *prev_req,
                        const int32_t *prev_dst, int64_t prev_requests, int64_t prev_partials, int64_t n,
                        const int64_t *old_index, const int64_t *rows, const int64_t *seq, int64_t stride,
                        int64_t split, int64_t lut_n, const int64_t *tile_of_size, const int64_t *tile_m_of_size,
                        int64_t long_tokens, int64_t lo, int64_t hi, int64_t max_items, int64_t max_partials,
                        int64_t max_entries,
                        int64_t *work, int32_t *items, int32_t *item_req, int32_t *item_dst, int32_t *merge_indptr,
                        int32_t *merge_partials, int64_t *summary) {
    if (stride < 1 || split < 1 || n < 1 || prev_n < 1 || lut_n < 4 || lut_n % 2) return -2;
    const int64_t half = lut_n / 2; /* a long pack's entries start here */
    int64_t *entry_new = work, *kept_req = entry_new + prev_e, *kept_dst = kept_req + prev_e;
    int64_t *kept_size = kept_dst + prev_e, *live = kept_size + prev_n, *new_of_old = live + prev_n;
    int64_t *new_slot = new_of_old + prev_requests, *joiner = new_slot + prev_partials + 1;
    int64_t *slot_count = joiner + n, *fill = slot_count + n, *kv_len = fill + n + 1;
    int64_t *join_tok = kv_len + prev_n; /* then per joiner item: tokens, begin, end, request, slot */
    /* survivors: the new request of each previous one */
    for (int64_t r = 0; r < prev_requests; r++) new_of_old[r] = -1;
    int64_t joiners = 0;
    for (int64_t r = 0; r < n; r++) {
        const int64_t o = old_index[r];
        if (o >= prev_requests || seq[r] < 1 || rows[r] < 0) return -2;
        if (o >= 0)
            new_of_old[o] = r;
        else
            joiner[joiners++] = r;
    }
    /* kept entries, by item; items that keep one or more (entries consecutive in item order, as plans lay them) */
    int64_t num_kept_entries = 0, live_n = 0, planned = 0, max_tokens = 0;
    for (int64_t i = 0; i < prev_n; i++) {
        const int32_t *it = prev_items + i * ITEM_FIELDS;
        const int64_t b = it[ITEM_REQ_BEGIN], e = i + 1 < prev_n ? prev_items[(i + 1) * ITEM_FIELDS + ITEM_REQ_BEGIN]
                                                                 : prev_e;
        if (b < 0 || b >= e || e > prev_e) return -2;
        int64_t count = 0;
        for (int64_t j = b; j < e; j++) {
            const int64_t q = prev_req[j];
            if (q < 0 || q >= prev_requests) return -2;
            entry_new[j] = new_of_old[q];
            if (entry_new[j] < 0) continue;
            kept_req[num_kept_entries] = entry_new[j];
            kept_dst[num_kept_entries] = prev_dst[j];
            num_kept_entries++;
            count++;
        }
        if (!count) continue;
        if (count >= half || e - b >= half) return -2;
        const int64_t first = kept_req[num_kept_entries - count];
        const int64_t begin = it[ITEM_KV_BEGIN], end = it[ITEM_KV_END];
        const int64_t row_begin = begin / stride * stride; /* begin >= 0 */
        if (begin < 0) return -2;
        kv_len[live_n] = end == ITEM_OPEN_END ? seq[first] + row_begin - begin : end - begin;
        planned += kv_len[live_n];
        if (kv_len[live_n] > max_tokens) max_tokens = kv_len[live_n];
        if (kv_len[live_n] < 1) return -1;
        kept_size[live_n] = count;
        live[live_n++] = i;
    }
    for (int64_t j = 0; j < joiners; j++) planned += seq[joiner[j]];
    if (planned < lo || planned > hi) return -1;
    /* partial slots of the kept entries, renumbered over those still used */
    for (int64_t s = 0; s <= prev_partials; s++) new_slot[s] = 0;
    for (int64_t j = 0; j < num_kept_entries; j++) {
        if (kept_dst[j] >= prev_partials) return -2;
        if (kept_dst[j] >= 0) new_slot[kept_dst[j]] = 1;
    }
    int64_t used = 0;
    for (int64_t s = 0; s < prev_partials; s++) {
        const int64_t u = new_slot[s];
        new_slot[s] = used; /* the slot's new number where it is used */
        used += u;
    }
    /* the joiners' items: each row cut into ceil(length / split) items of about equal KV, the last one open */
    int64_t *jt = join_tok, num_join = 0, slot = used;
    for (int64_t j = 0; j < joiners; j++) {
        const int64_t r = joiner[j], len = seq[r], k = (len + split - 1) / split, base = rows[r] * stride;
        for (int64_t i = 0; i < k; i++) {
            const int64_t from = base + len * i / k, to = base + len * (i + 1) / k;
            int64_t *f = jt + 5 * num_join;
            f[0] = to - from;
            f[1] = from;
            f[2] = i + 1 < k ? to : ITEM_OPEN_END;
            f[3] = r;
            f[4] = k > 1 ? slot + i : -1;
            if (f[0] > max_tokens) max_tokens = f[0];
            num_join++;
        }
        slot += k > 1 ? k : 0;
    }
    const int64_t num_items = num_join + live_n, num_entries = num_join + num_kept_entries, num_partials = slot;
    if ((max_items >= 0 && num_items > max_items) || (max_partials >= 0 && num_partials > max_partials) ||
        (max_entries >= 0 && num_entries > max_entries) || num_items > MAX_ITEMS_GRID)
        return -1;
    /* joiner items first, longest first (stable), then the kept items in their order */
    int64_t *order = jt + 5 * num_join, *tmp = order + num_join, *tokens = tmp + num_join;
    for (int64_t j = 0; j < num_join; j++) {
        order[j] = j;
        tokens[j] = jt[5 * j];
    }
    const JoinOrder ctx = {tokens};
    sort_joined(order, tmp, num_join, &ctx);
    memset(items, 0, sizeof(int32_t) * (size_t)(num_items * ITEM_FIELDS));
    for (int64_t j = 0; j < num_join; j++) {
        const int64_t *f = jt + 5 * order[j];
        int32_t *it = items + j * ITEM_FIELDS;
        it[ITEM_KV_BEGIN] = (int32_t)f[1];
        it[ITEM_KV_END] = (int32_t)f[2];
        it[ITEM_REQ_BEGIN] = (int32_t)j;
        it[ITEM_REQ_END] = (int32_t)(j + 1);
        const int64_t lut = (seq[f[3]] >= long_tokens ? half : 0) + 1;
        it[ITEM_TILE] = (int32_t)tile_of_size[lut];
        it[ITEM_TILE_M] = (int32_t)tile_m_of_size[lut];
        item_req[j] = (int32_t)f[3];
        item_dst[j] = (int32_t)f[4];
    }
    int64_t at = 0;
    for (int64_t l = 0; l < live_n; l++) {
        const int32_t *src = prev_items + live[l] * ITEM_FIELDS;
        int32_t *it = items + (num_join + l) * ITEM_FIELDS;
        memcpy(it, src, sizeof(int32_t) * ITEM_FIELDS);
        const int64_t begin = src[ITEM_KV_BEGIN], row_begin = begin / stride * stride;
        const int64_t shift = rows[kept_req[at]] * stride - row_begin; /* to the first kept member's row */
        it[ITEM_KV_BEGIN] = (int32_t)(begin + shift);
        if (src[ITEM_KV_END] != ITEM_OPEN_END) it[ITEM_KV_END] = (int32_t)(src[ITEM_KV_END] + shift);
        it[ITEM_REQ_BEGIN] = (int32_t)(num_join + at);
        it[ITEM_REQ_END] = (int32_t)(num_join + at + kept_size[l]);
        const int64_t was = src[ITEM_REQ_END] - src[ITEM_REQ_BEGIN]; /* its rows in the previous plan */
        const int64_t lut = (src[ITEM_TILE_M] < tile_m_of_size[was] ? half : 0) + kept_size[l];
        it[ITEM_TILE] = (int32_t)tile_of_size[lut];
        it[ITEM_TILE_M] = (int32_t)tile_m_of_size[lut];
        at += kept_size[l];
    }
    for (int64_t j = 0; j < num_kept_entries; j++) {
        item_req[num_join + j] = (int32_t)kept_req[j];
        item_dst[num_join + j] = (int32_t)(kept_dst[j] >= 0 ? new_slot[kept_dst[j]] : -1);
    }
    /* the merge map: each request's partial slots, in the order its entries come */
    for (int64_t r = 0; r < n; r++) slot_count[r] = 0;
    for (int64_t j = 0; j < num_entries; j++)
        if (item_dst[j] >= 0) slot_count[item_req[j]]++;
    fill[0] = 0;
    for (int64_t r = 0; r < n; r++) fill[r + 1] = fill[r] + slot_count[r];
    for (int64_t r = 0; r <= n; r++) merge_indptr[r] = (int32_t)fill[r];
    for (int64_t j = 0; j < num_entries; j++)
        if (item_dst[j] >= 0) merge_partials[fill[item_req[j]]++] = item_dst[j];
    summary[0] = num_items;
    summary[1] = num_entries;
    summary[2] = num_partials;
    summary[3] = planned;
    summary[4] = max_tokens;
    return 0;
}
