/* A plan's work items, partial slots and merge map, compiled for the host (pat_sglang/host_core.py loads it with
   ctypes).

   Role in pack-forward-merge: part of *pack*. Once the planner has its packs and their KV split counts
   (pat_sglang/planner.py, _plan), the rest of a planning pass is laying out the items: every pack's row blocks x
   KV splits, ordered longest KV first, their request entries, the partial slot of each entry and each request's list
   of slots. numpy does it in ~45 calls over arrays of a few hundred items (_plan_items), each call costing 1-5 us on
   the project's 2-core VM whatever its size; here it is one call, and the arrays are equal (tests/test_host_core.py).

   pat_plan_items, for `packs` packs in plan order (pack p: pack_tokens[p] KV tokens from slot-table position
   kv_offset[p]; its pack_req_count[p] requests are the next ones of pack_req; splits[p] KV splits):
   * row blocks: each pack's requests cut in order into blocks of rpb (the last holds the rest);
   * items: each block's splits, split i of t tokens in s splits covering [t * i / s, t * (i + 1) / s) of the pack's
     range (integer division), its tile tile_of_size[block size], of a pack of long_tokens or more
     tile_of_size[rpb + 1 + block size] (the tile tables hold a short pack's row blocks, then a long pack's:
     planner._tile_lut);
   * launch order: a stable sort by (KV length descending, tile descending, KV begin ascending), as _item_order's
     argsort of one int64 key (or its lexsort);
   * columns of `items` (num_items x ITEM_FIELDS int32, zeroed by the caller): KV begin, KV end (-1, an open end, for
     the last split of a pack with leaf_pack[p] set; leaf_pack NULL: no open ends), request begin / end (running
     over the entries in item order), tile, tile m (tile_m_of_size at the tile's entry);
   * entries (item_req: the block's requests per item, in item order) and partial slots: an entry whose request has
     more than one entry in the plan gets the next slot (item_dst), else -1 (it writes the output); merge_indptr /
     merge_partials list each request's slots in entry order (_partial_slots);
   * item_pack / item_split: per item (plan order) its pack and split index; open_mask (when leaf_pack is given): its
     end is open. summary: the longest item's KV tokens, the number of open items.
   num_items / num_entries: the sums the caller counted (splits x blocks, splits x requests). Returns the number of
   partial slots; -1 when that exceeds max_partials (max_partials >= 0; nothing but the count is then written), -2
   when scratch memory cannot be allocated. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_plan.h"
#include "host_sort.h"

/* The item layout has one definition, pat_sglang/planner.py (ITEM_COLUMNS, ITEM_FIELDS, ITEM_OPEN_END): host_core
   passes it as -D options, as pat_sglang/kernels.py does for the forward kernel. */
#if !defined(ITEM_FIELDS) || !defined(ITEM_KV_BEGIN) || !defined(ITEM_KV_END) || !defined(ITEM_REQ_BEGIN) || \
    !defined(ITEM_REQ_END) || !defined(ITEM_TILE) || !defined(ITEM_TILE_M) || !defined(ITEM_OPEN_END)
#error "build through pat_sglang.host_core: the item layout is passed as -D options"
#endif

typedef struct {
    int64_t begin, len, tile, pack, split, block_start, size, lut; /* lut: its entry in the tile tables */
} item_t;

/* a comes strictly before b in launch order */
static int before(const item_t *a, const item_t *b) {
    if (a->len != b->len) return a->len > b->len;
    if (a->tile != b->tile) return a->tile > b->tile;
    return a->begin < b->begin;
}

/* item indices in launch order, stably (host_sort.h; ctx: the items) */
#define ITEM_BEFORE(later, earlier, ctx) \
    before(&((const item_t *)(ctx))[*(later)], &((const item_t *)(ctx))[*(earlier)])
PAT_STABLE_SORT(sort_items, int64_t, ITEM_BEFORE)

int64_t pat_plan_items(int64_t packs, const int64_t *pack_tokens, const int64_t *kv_offset,
                       const int64_t *pack_req_count, const int32_t *pack_req, const int64_t *splits, int64_t rpb,
                       const int64_t *tile_of_size, const int64_t *tile_m_of_size, int64_t long_tokens,
                       const uint8_t *leaf_pack, int64_t num_requests, int64_t num_items, int64_t num_entries,
                       int64_t max_partials,
                       int32_t *items, int32_t *item_req, int32_t *item_dst, int32_t *merge_indptr,
                       int32_t *merge_partials, int64_t *item_pack, int64_t *item_split, uint8_t *open_mask,
                       int64_t *summary) {
    /* partials_of: each request's entries in the plan (the sum of its packs' splits: one row block of each) */
    int64_t *per_req = (int64_t *)calloc((size_t)(num_requests > 0 ? num_requests : 1), sizeof(int64_t));
    if (!per_req) return -2;
    int64_t e = 0, single = 0;
    for (int64_t p = 0; p < packs; p++)
        for (int64_t k = 0; k < pack_req_count[p]; k++, e++) per_req[pack_req[e]] += splits[p];
    for (int64_t r = 0; r < num_requests; r++) single += per_req[r] == 1;
    int64_t num_partials = num_entries - single;
    if (max_partials >= 0 && num_partials > max_partials) {
        free(per_req);
        return -1;
    }
    item_t *it = (item_t *)malloc(sizeof(item_t) * (size_t)(num_items > 0 ? num_items : 1));
    int64_t *order = (int64_t *)malloc(sizeof(int64_t) * (size_t)(2 * num_items + 1));
    if (!it || !order) {
        free(per_req), free(it), free(order);
        return -2;
    }
    /* items in generation order: blocks in pack order, each block's splits in order */
    int64_t n = 0, start = 0, longest = 0;
    for (int64_t p = 0; p < packs; p++) {
        int64_t count = pack_req_count[p], s = splits[p], t = pack_tokens[p], base = kv_offset[p];
        const int64_t half = t >= long_tokens ? rpb + 1 : 0; /* the pack's half of the tile tables */
        for (int64_t b0 = 0; b0 < count; b0 += rpb) {
            int64_t size = count - b0 < rpb ? count - b0 : rpb;
            for (int64_t i = 0; i < s; i++, n++) {
                int64_t begin = base + t * i / s;
                it[n].begin = begin;
                it[n].len = base + t * (i + 1) / s - begin;
                it[n].tile = tile_of_size[half + size];
                it[n].lut = half + size;
                it[n].pack = p;
                it[n].split = i;
                it[n].block_start = start + b0;
                it[n].size = size;
                if (it[n].len > longest) longest = it[n].len;
            }
        }
        start += count;
    }
    for (int64_t k = 0; k < n; k++) order[k] = k;
    sort_items(order, order + n, n, it);
    /* columns and entries in launch order; slots numbered in entry order */
    int64_t entry = 0, slot = 0, num_open = 0;
    for (int64_t k = 0; k < n; k++) {
        const item_t *x = &it[order[k]];
        int32_t *row = items + ITEM_FIELDS * k;
        int open = leaf_pack && leaf_pack[x->pack] && x->split == splits[x->pack] - 1;
        row[ITEM_KV_BEGIN] = (int32_t)x->begin;
        row[ITEM_KV_END] = open ? ITEM_OPEN_END : (int32_t)(x->begin + x->len);
        row[ITEM_REQ_BEGIN] = (int32_t)entry;
        row[ITEM_REQ_END] = (int32_t)(entry + x->size);
        row[ITEM_TILE] = (int32_t)x->tile;
        row[ITEM_TILE_M] = (int32_t)tile_m_of_size[x->lut];
        item_pack[k] = x->pack;
        item_split[k] = x->split;
        if (open_mask) open_mask[k] = (uint8_t)open;
        num_open += open;
        for (int64_t j = 0; j < x->size; j++, entry++) {
            int32_t r = pack_req[x->block_start + j];
            item_req[entry] = r;
            item_dst[entry] = per_req[r] > 1 ? (int32_t)slot++ : -1;
        }
    }
    /* merge map: per request its slots in entry order (per_req becomes each request's write cursor) */
    merge_indptr[0] = 0;
    for (int64_t r = 0; r < num_requests; r++) {
        int64_t mine = per_req[r] > 1 ? per_req[r] : 0;
        per_req[r] = merge_indptr[r];
        merge_indptr[r + 1] = (int32_t)(merge_indptr[r] + mine);
    }
    for (int64_t k = 0; k < entry; k++)
        if (item_dst[k] >= 0) merge_partials[per_req[item_req[k]]++] = item_dst[k];
    summary[0] = longest;
    summary[1] = num_open;
    free(per_req), free(it), free(order);
    return num_partials;
}
