/* A prefix forest built from radix paths, compiled for the host (kernels/host_glue.c's forest_from_paths calls it).

   Role in pack-forward-merge: part of *pack*. When a changed decode batch's shared structure changed (a radix split on
   a path the forest edit cannot follow, a wave of arrivals), the decode step builds its forest again from the published
   paths (pat_sglang/forest.py PrefixForest.from_paths): ~60 numpy calls over the path entries, ~220 us warm and
   580-720 us run cold between two decode steps at 256 requests on the project's 2-core VM, the Mooncake replay's
   slowest steps without a garbage collection. Here the same arrays come from one stable sort of the entries by
   (depth, key) and a few passes over entries, nodes and requests.

   pat_forest_from_paths(n_req, seq, n, e_req, e_key, e_len, index, work, out, shape): entry e says request e_req[e]
   passes through the radix node e_key[e] of e_len[e] tokens, a request's entries consecutive (root first), requests
   in increasing order; seq[r] is request r's length (what lies past its entries is its private leaf). Entries of no
   tokens are skipped, as the numpy version drops them. The forest is numpy's exactly: the kept shared nodes (a shared
   node absorbed into its only child when that child holds all its requests is not kept), in (depth, key) order of
   their radix nodes, then one leaf per request with tokens past its last kept node, in request order.

   work: 16 n + 4 n_req + 2 int64 of scratch. out (int64), with N = n + n_req (n: entries given, with tokens or not):
   tok, start, parent, depth (N each), req_ptr (N + 1), req_flat (N), then for `index` the radix index
   (forest.RADIX_INDEX, forest_edit.RadixIndex's input): the shared nodes' keys and the kept node each one's chain was
   absorbed into (n each), the kept nodes' keys and path depths (n each), and per request the key of its first private
   entry or -1 (n_req). shape[0..3]: kept
   nodes, leaves, shared nodes, req_flat entries. The index is written only where every request has a leaf (numpy's
   condition): else shape[2] is -1.

   Returns 0; -1 where the numpy version raises (entries not grouped by request in order, a request out of range, a
   path longer than its request, a request of no tokens, one key with two positions, lengths or parents, one key at
   two depths) or could order nodes otherwise (a negative key, or one of 2^48 or more); -2 where no entry has tokens
   (numpy's all-private forest). Then the outputs are not valid and the caller runs the numpy version, which gives
   the error. */

#include <stdint.h>
#include <string.h>

#include "host_plan.h"
#include "host_sort.h"

typedef struct {
    const int64_t *depth, *key;
} PathsOrder;

/* entry *a before entry *b in (depth, key) order; equal pairs keep entry order (the sort is stable) */
#define PATHS_BEFORE(a, b, ctx)                                                       \
    (((const PathsOrder *)(ctx))->depth[*(a)] < ((const PathsOrder *)(ctx))->depth[*(b)] || \
     (((const PathsOrder *)(ctx))->depth[*(a)] == ((const PathsOrder *)(ctx))->depth[*(b)] && \
      ((const PathsOrder *)(ctx))->key[*(a)] < ((const PathsOrder *)(ctx))->key[*(b)]))
PAT_STABLE_SORT(sort_entries, int64_t, PATHS_BEFORE)
#define VALUE_BEFORE(a, b, ctx) (*(a) < *(b))
PAT_STABLE_SORT(sort_values, int64_t, VALUE_BEFORE)

#define PAT_KEY_LIMIT ((int64_t)1 << 48) /* forest._KEY_BITS: numpy sorts by one int64 (depth << 48) + key below it */

int64_t pat_forest_from_paths(int64_t n_req, const int64_t *seq, int64_t n_in, const int64_t *e_req_in,
                              const int64_t *e_key_in, const int64_t *e_len_in, int index, int64_t *work,
                              int64_t *out, int64_t *shape) {
    if (n_req < 1) return -1;
    for (int64_t r = 0; r < n_req; r++)
        if (seq[r] < 1) return -1;
    /* the entries with tokens */
    int64_t *req = work, *key = req + n_in, *len = key + n_in, *end = len + n_in, *depth = end + n_in;
    int64_t *node_of = depth + n_in, *parent_e = node_of + n_in, *order = parent_e + n_in, *tmp = order + n_in;
    int64_t *prev_end = tmp + n_in, *prev_idx = prev_end + n_in, *kept_excl = prev_idx + n_in;
    int64_t *node_first = kept_excl + n_in, *node_q = node_first + n_in, *node_flag = node_q + n_in;
    int64_t *kept_id = node_flag + n_in;
    int64_t *first = kept_id + n_in, *count = first + n_req, *leaf_start = count + n_req;
    int64_t *last_kept = leaf_start + n_req;
    int64_t n = 0;
    for (int64_t i = 0; i < n_in; i++) {
        if (e_len_in[i] <= 0) continue;
        req[n] = e_req_in[i];
        key[n] = e_key_in[i];
        len[n] = e_len_in[i];
        n++;
    }
    if (n == 0) return -2;
    /* grouping, positions (each request's entries tile [0, cached) of its row) and depths */
    if (req[0] < 0 || req[n - 1] >= n_req) return -1;
    for (int64_t r = 0; r < n_req; r++) first[r] = count[r] = 0;
    for (int64_t e = 0; e < n; e++) {
        if (key[e] < 0 || key[e] >= PAT_KEY_LIMIT) return -1;
        if (e > 0 && req[e] < req[e - 1]) return -1;
        const int starts = e == 0 || req[e] != req[e - 1];
        if (starts) first[req[e]] = e;
        depth[e] = starts ? 0 : depth[e - 1] + 1;
        end[e] = (starts ? 0 : end[e - 1]) + len[e];
        count[req[e]]++;
    }
    for (int64_t r = 0; r < n_req; r++)
        if (count[r] > 0 && end[first[r] + count[r] - 1] > seq[r]) return -1;
    /* radix nodes: entries in (depth, key) order, a node per distinct pair (parents before children) */
    for (int64_t e = 0; e < n; e++) order[e] = e;
    const PathsOrder ctx = {depth, key};
    sort_entries(order, tmp, n, &ctx);
    int64_t nodes = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t e = order[i];
        if (i == 0 || depth[e] != depth[order[i - 1]] || key[e] != key[order[i - 1]]) {
            node_first[nodes] = e; /* the node's first entry in entry order (the sort is stable) */
            node_q[nodes] = 0;
            nodes++;
        }
        node_of[e] = nodes - 1;
        node_q[nodes - 1]++;
    }
    for (int64_t e = 0; e < n; e++) parent_e[e] = depth[e] > 0 ? node_of[e - 1] : -1;
    /* one position, length and parent per key, and one depth per key */
    for (int64_t e = 0; e < n; e++) {
        const int64_t at = node_first[node_of[e]];
        if (end[at] != end[e] || len[at] != len[e] || parent_e[at] != parent_e[e]) return -1;
    }
    for (int64_t k = 0; k < nodes; k++) tmp[k] = key[node_first[k]];
    sort_values(tmp, prev_end, nodes, NULL); /* (prev_end: scratch until its own pass below) */
    for (int64_t k = 1; k < nodes; k++)
        if (tmp[k] == tmp[k - 1]) return -1;
    /* kept nodes: shared (two requests or more) and not absorbed into a child holding all their requests */
    for (int64_t k = 0; k < nodes; k++) node_flag[k] = node_q[k] > 1; /* bit 0: shared, bit 1: absorbed */
    for (int64_t k = 0; k < nodes; k++) {
        const int64_t p = parent_e[node_first[k]];
        if (p >= 0 && node_q[k] > 1 && node_q[k] == node_q[p]) node_flag[p] |= 2;
    }
    int64_t num_kept = 0, num_shared = 0;
    for (int64_t k = 0; k < nodes; k++) {
        num_shared += node_flag[k] & 1;
        num_kept += node_flag[k] == 1;
        kept_id[k] = num_kept - 1;
    }
    /* per entry, along its path: the end of the last kept entry before it on the path (0: none), the last kept entry
       before it anywhere (-1: none) and the kept entries before it; per request, the same after its last entry */
    int64_t path_end = 0, last_idx = -1, kept_before = 0;
    for (int64_t e = 0; e < n; e++) {
        if (depth[e] == 0) path_end = 0;
        prev_end[e] = path_end;
        prev_idx[e] = last_idx;
        kept_excl[e] = kept_before;
        if (node_flag[node_of[e]] == 1) {
            path_end = end[e];
            last_idx = e;
            kept_before++;
        }
        if (e + 1 == n || req[e + 1] != req[e]) {
            leaf_start[req[e]] = path_end;
            last_kept[req[e]] = last_idx;
        }
    }
    const int64_t N = n_in + n_req; /* the outputs' layout is the input's (n_in entries), not the entries kept */
    int64_t *tok = out, *start = out + N, *parent = out + 2 * N, *dep = out + 3 * N, *req_ptr = out + 4 * N;
    int64_t *req_flat = req_ptr + N + 1, *chain_key = req_flat + N, *chain_kept = chain_key + n_in;
    int64_t *kept_key = chain_kept + n_in, *kept_depth = kept_key + n_in, *private_key = kept_depth + n_in;
    /* the kept nodes, read through their first entry, and their requests (entry order within a node) */
    int64_t at = 0, flat = 0;
    req_ptr[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t e = order[i], k = node_of[e];
        if (node_flag[k] != 1) continue;
        req_flat[flat++] = req[e];
        if (node_first[k] != e) continue;
        const int64_t p = prev_idx[e];
        tok[at] = end[e] - prev_end[e];
        start[at] = prev_end[e];
        parent[at] = p >= first[req[e]] ? kept_id[node_of[p]] : -1;
        dep[at] = kept_excl[e] - kept_excl[first[req[e]]];
        kept_key[at] = key[e];
        kept_depth[at] = depth[e];
        req_ptr[at + 1] = req_ptr[at] + node_q[k];
        at++;
    }
    /* a leaf per request with tokens past its last kept node */
    int64_t leaves = 0;
    for (int64_t r = 0; r < n_req; r++) {
        const int with_path = count[r] > 0;
        const int64_t from = with_path ? leaf_start[r] : 0;
        if (seq[r] <= from) continue;
        const int64_t p = with_path ? last_kept[r] : -1;
        tok[at] = seq[r] - from;
        start[at] = from;
        parent[at] = with_path && p >= first[r] ? kept_id[node_of[p]] : -1;
        dep[at] = with_path ? (p >= first[r] ? kept_excl[p] + 1 - kept_excl[first[r]] : 0) : 0;
        req_ptr[at + 1] = req_ptr[at] + 1;
        req_flat[flat++] = r;
        at++;
        leaves++;
    }
    shape[0] = num_kept;
    shape[1] = leaves;
    shape[2] = -1;
    shape[3] = flat;
    if (!index || leaves != n_req) return 0;
    /* the radix index: each shared node's chain ends in the next kept entry on its path (the deepest shared node on a
       path is kept); a request's first private entry follows its shared ones */
    int64_t next = n - 1; /* the first kept entry at or after e (numpy's reversed minimum: n - 1 where none) */
    for (int64_t e = n - 1; e >= 0; e--) {
        if (node_flag[node_of[e]] == 1) next = e;
        tmp[e] = next;
    }
    int64_t shared_at = 0;
    for (int64_t k = 0; k < nodes; k++) {
        if (!(node_flag[k] & 1)) continue;
        chain_key[shared_at] = key[node_first[k]];
        chain_kept[shared_at] = kept_id[node_of[tmp[node_first[k]]]];
        shared_at++;
    }
    for (int64_t r = 0; r < n_req; r++) {
        int64_t shared_here = 0;
        for (int64_t e = first[r]; e < first[r] + count[r]; e++) shared_here += node_flag[node_of[e]] & 1;
        const int64_t i = first[r] + shared_here;
        private_key[r] = count[r] > 0 && shared_here < count[r] ? key[i < n ? i : n - 1] : -1;
    }
    shape[2] = num_shared;
    return 0;
}
