/* An edited prefix forest's arrays, compiled for the host (pat_sglang/host_core.py loads it with ctypes).

   Role in pack-forward-merge: part of *pack*. When a decode batch changes, pat_sglang/forest_edit.py edits last step's
   forest: it decides the kept (shared) nodes and each request's attach node (the deepest kept node on its path, the
   parent of its private leaf) in Python, from the requests that came and went. The forest is then those K kept nodes
   followed by one leaf per request, every member list following from the attach numbers. The numpy version
   (RadixIndex._forest) makes it in ~20 numpy calls over the batch, and the planner's first reads of the forest
   (PrefixForest._get) make its derived arrays in ~10 more: ~100 us per changed step of 256 requests on the project's
   2-core VM, each call a few microseconds whatever its size. Here it is one pass over the requests' kept ancestors;
   where the requests sit before that (their attach nodes and first private keys, and the joiners' keys that requests
   come to share: ~12 numpy calls) is a second call, pat_edit_places, below.

   pat_edit_forest(num_kept, width, kept, kept_q, n, attach, seq, out, entries): `kept` holds, one after another,
   the kept nodes' tok, start, parent, depth (num_kept each), then per attach node a at a + 1 (num_kept + 1 rows, row
   0 a root leaf's) kept_end (where a ends, 0 at row 0), num_ancestors (the length of a's lineage: a and its
   ancestors) and the lineages as rows of `width` entries (`ancestors`, padded with -1); kept_q: the members each kept
   node must end up with; per request (n of them) attach (-1 or a kept node) and seq (its
   length). out: seven int64 arrays of nodes = num_kept + n entries (tok, start, parent, depth, q, rep, ending),
   req_ptr (nodes + 1), last_node (n), req_flat and entry_node (entries = sum(kept_q) + n each), then req32 (int32)
   and ends_here (bytes), each from an int64 boundary. The node order is the kept nodes, then request r's leaf at
   num_kept + r; each node's requests in request order. These are PrefixForest's arrays and its derived ones
   (PrefixForest._get). Returns 0; -1 when a leaf would be empty (a request no longer than its attach node's end), -2
   when the members do not add up to kept_q (or an attach or ancestor is out of range, or n < 1); then the outputs are
   not valid. No memory is allocated: the per-node fill positions live in `rep` until the end. */

#include <stdint.h>
#include <string.h>

#include "host_plan.h"

int64_t pat_edit_forest(int64_t num_kept, int64_t width, const int64_t *kept, const int64_t *kept_q, int64_t n,
                        const int64_t *attach, const int64_t *seq, int64_t *out, int64_t entries) {
    const int64_t *kept_tok = kept, *kept_start = kept + num_kept, *kept_parent = kept + 2 * num_kept;
    const int64_t *kept_depth = kept + 3 * num_kept, *kept_end = kept + 4 * num_kept;
    const int64_t *num_ancestors = kept_end + num_kept + 1, *ancestors = num_ancestors + num_kept + 1;
    const int64_t nodes = num_kept + n;
    int64_t *tok = out, *start = out + nodes, *parent = out + 2 * nodes, *depth = out + 3 * nodes;
    int64_t *q = out + 4 * nodes, *rep = out + 5 * nodes, *ending = out + 6 * nodes, *req_ptr = out + 7 * nodes;
    int64_t *last_node = req_ptr + nodes + 1;
    int64_t *req_flat = last_node + n, *entry_node = req_flat + entries;
    int32_t *req32 = (int32_t *)(entry_node + entries);
    uint8_t *ends_here = (uint8_t *)(req32 + 2 * ((entries + 1) / 2)); /* at the next int64 */

    if (n < 1) return -2;
    /* the leaves, and the kept nodes' member counts */
    memset(q, 0, (size_t)num_kept * sizeof(int64_t));
    for (int64_t r = 0; r < n; r++) {
        const int64_t row = attach[r] + 1;
        if (row < 0 || row > num_kept) return -2;
        const int64_t leaf = num_kept + r;
        const int64_t leaf_start = kept_end[row];
        if (seq[r] - leaf_start < 1) return -1;
        tok[leaf] = seq[r] - leaf_start;
        start[leaf] = leaf_start;
        parent[leaf] = attach[r];
        depth[leaf] = num_ancestors[row];
        q[leaf] = 1;
        ending[leaf] = 1;
        last_node[r] = leaf;
        const int64_t *line = ancestors + row * width;
        for (int64_t j = 0; j < num_ancestors[row]; j++) {
            if (line[j] < 0 || line[j] >= num_kept) return -2;
            q[line[j]]++;
        }
    }
    int64_t at = 0;
    for (int64_t k = 0; k < num_kept; k++) {
        if (q[k] != kept_q[k]) return -2;
        tok[k] = kept_tok[k];
        start[k] = kept_start[k];
        parent[k] = kept_parent[k];
        depth[k] = kept_depth[k];
        ending[k] = 0;
        req_ptr[k] = at;
        rep[k] = at; /* the next free entry of node k while filling */
        at += q[k];
    }
    if (at + n != entries) return -2;
    for (int64_t r = 0; r < n; r++) { /* members in request order: each node's run is filled by ascending r */
        const int64_t row = attach[r] + 1;
        const int64_t *line = ancestors + row * width;
        for (int64_t j = 0; j < num_ancestors[row]; j++) req_flat[rep[line[j]]++] = r;
        req_ptr[num_kept + r] = at + r;
        req_flat[at + r] = r;
    }
    req_ptr[nodes] = entries;
    for (int64_t i = 0; i < nodes; i++) {
        for (int64_t e = req_ptr[i]; e < req_ptr[i + 1]; e++) {
            entry_node[e] = i;
            ends_here[e] = i >= num_kept; /* a request's deepest node is its leaf */
        }
        rep[i] = req_flat[req_ptr[i]];
    }
    for (int64_t e = 0; e < entries; e++) req32[e] = (int32_t)req_flat[e];
    return 0;
}

/* pat_edit_places(n_real, n, old_of, num_old, old_attach, old_first, num_joiners, joiners, joined, attach, first,
   groups): where the requests of an edited batch sit before its kept nodes change (RadixIndex.edit's attach and first
   private keys, then RadixIndex._groups). Request r < n_real is old request old_of[r] (its attach node and first
   private key from old_attach and old_first, num_old each) or a joiner (old_of[r] = -1: -1 and -1 until the joiners
   are written); requests n_real..n-1 are padding (-1, -1); joiner i (request joiners[i]) then gets attach node
   joined[2 i] and first private key joined[2 i + 1]. Out: attach and first (n each), and per distinct first private
   key >= 0 of the joiners, ascending, that two requests or more now have: (key, count, the count requests ascending),
   one after another in groups (room: 2 * num_joiners + n). Returns the number of int64 written to groups; -1 (nothing
   valid) when an old index or a joiner's request is out of range. */
int64_t pat_edit_places(int64_t n_real, int64_t n, const int64_t *old_of, int64_t num_old, const int64_t *old_attach,
                        const int64_t *old_first, int64_t num_joiners, const int64_t *joiners, const int64_t *joined,
                        int64_t *attach, int64_t *first, int64_t *groups) {
    if (n_real > n) return -1;
    for (int64_t r = 0; r < n_real; r++) {
        const int64_t k = old_of[r];
        if (k >= num_old) return -1;
        attach[r] = k >= 0 ? old_attach[k] : -1;
        first[r] = k >= 0 ? old_first[k] : -1;
    }
    for (int64_t r = n_real; r < n; r++) attach[r] = first[r] = -1;
    for (int64_t i = 0; i < num_joiners; i++) {
        if (joiners[i] < 0 || joiners[i] >= n_real) return -1;
        attach[joiners[i]] = joined[2 * i];
        first[joiners[i]] = joined[2 * i + 1];
    }
    int64_t at = 0;
    for (int64_t key = pat_next_joiner_key(joined, num_joiners, -1); key >= 0;
         key = pat_next_joiner_key(joined, num_joiners, key)) { /* the joiners' distinct keys >= 0, ascending */
        int64_t count = 0;
        for (int64_t r = 0; r < n; r++) {
            if (first[r] == key) groups[at + 2 + count++] = r;
        }
        if (count > 1) {
            groups[at] = key;
            groups[at + 1] = count;
            at += 2 + count;
        }
    }
    return at;
}

int64_t pat_next_joiner_key(const int64_t *pairs, int64_t num, int64_t prev) {
    int64_t key = -1;
    for (int64_t i = 0; i < num; i++) {
        const int64_t k = pairs[2 * i + 1];
        if (k > prev && (key < 0 || k < key)) key = k;
    }
    return key;
}
