/* The prefix forest of flat request rows, compiled for the host (pat_sglang/host_core.py loads it with ctypes).

   Role in pack-forward-merge: part of *pack*. The standalone plan() builds its prefix forest from the caller's flat
   kv_indices (pat_sglang/forest.py, PrefixForest.from_flat): rows that share a first slot form a group, and the
   group's node ends where two of its rows first differ (or its shortest row ends); the rows that go on are grouped
   again by their slot there, and so on. Every slot a plan can read is then checked (none negative) and their maximum
   found, which the caller compares with the KV pool size. The numpy version (forest._flat_forest, _node_ends,
   _read_max) does this one tree level at a time, ~30 numpy calls a level plus a canonical reordering at the end (at
   256 rows x 4k tokens most of its time is those calls, not the slots), and finds the maximum in a second pass over
   the unique slots. Here it is one call, one read of each row:

   pat_flat_forest: the canonical forest (forest.py's module docstring) in its canonical node order, depth-first with
   a node's children in the order of their smallest request, which is the order the numpy version sorts its nodes
   into, so the arrays are equal. A group's node length is found by comparing its neighbouring rows in place, in
   memcmp-sized chunks, up to the group's shortest difference so far (rows agree on a range iff every two neighbours
   do); the node's slots are then the last compared row's first `tok` slots, still in cache, so the maximum of the
   node is taken there. A node of one row (a private leaf) is read once, for its maximum. The maximum is of the
   slots as unsigned integers: a negative slot makes it exceed the signed range, which the caller refuses.

   Arguments: ind (ind_len elements of elem_bytes 4: int32, 8: int64) holds request r's row at [row_base[r],
   row_base[r] + len[r]) (all len >= 1, all rows within ind: else INT64_MIN is returned and nothing read). Out: node_out holds seven arrays of 2 * n_req entries
   (room for the at most 2 * n_req - 1 nodes: every canonical node has a request ending in it or two children or more):
   per node tok, start, parent, depth, q (its requests), rep (its smallest request), ending (requests whose deepest
   node it is); req_ptr (nodes + 1); per entry (each node's requests in request order; room for cap_entries) req_flat,
   entry_node (its node), req32 (req_flat as int32), ends_here (1: the entry's node is its request's deepest); per
   request last_node (its deepest node); *top (the unsigned maximum). These are PrefixForest's arrays and its derived
   ones (PrefixForest._get), so the planner computes none of them again. Returns the number of nodes; -(entries
   needed) when the entry arrays have too little room (nothing else is then valid: call again with more), or 0 when
   scratch memory cannot be allocated. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_sort.h"

#define CHUNK_ELEMS 64 /* a chunk memcmp compares before the exact position is looked for inside it */

/* The first of the `width` elements (`elem` bytes each) where a and b differ, or width. */
static int64_t first_difference(const char *a, const char *b, int64_t width, int64_t elem) {
    int64_t j = 0;
    while (j + CHUNK_ELEMS <= width && memcmp(a + j * elem, b + j * elem, CHUNK_ELEMS * elem) == 0) j += CHUNK_ELEMS;
    for (; j < width; j++)
        if (memcmp(a + j * elem, b + j * elem, elem) != 0) return j;
    return width;
}

/* The unsigned maximum of n >= 0 elements. The loop is the same in each version; the x86 build adds an AVX2 copy
   picked at run time: a private leaf comes from L3 at ~23 GB/s on the project's VM with AVX2 (as fast as numpy's
   max), ~2.4x slower with the baseline SSE2 (no unsigned 32-bit max instruction), ~4x with the -O2 scalar loop (one
   dependent compare a slot). */
#define MAX_LOOP(T)                                                                                                    \
    T m = 0;                                                                                                           \
    for (int64_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;                                                           \
    return m;

__attribute__((optimize("O3", "tree-vectorize"))) static uint32_t max_u32_plain(const uint32_t *p, int64_t n) {
    MAX_LOOP(uint32_t)
}
__attribute__((optimize("O3", "tree-vectorize"))) static uint64_t max_u64_plain(const uint64_t *p, int64_t n) {
    MAX_LOOP(uint64_t)
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"), optimize("O3", "tree-vectorize"))) static uint32_t max_u32_avx2(const uint32_t *p,
                                                                                               int64_t n) {
    MAX_LOOP(uint32_t)
}
__attribute__((target("avx2"), optimize("O3", "tree-vectorize"))) static uint64_t max_u64_avx2(const uint64_t *p,
                                                                                               int64_t n) {
    MAX_LOOP(uint64_t)
}
static int have_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return known;
}
#endif

static uint64_t max_unsigned(const char *p, int64_t n, int64_t elem) {
#if defined(__x86_64__) || defined(__i386__)
    if (have_avx2())
        return elem == 4 ? max_u32_avx2((const uint32_t *)p, n) : max_u64_avx2((const uint64_t *)p, n);
#endif
    return elem == 4 ? max_u32_plain((const uint32_t *)p, n) : max_u64_plain((const uint64_t *)p, n);
}

static int64_t slot_at(const char *p, int64_t elem) {
    if (elem == 4) {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

typedef struct {
    int64_t slot, req;
} keyed;

/* x[0, n) by .slot, stably (host_sort.h) */
#define SLOT_BEFORE(later, earlier, ctx) ((later)->slot < (earlier)->slot)
PAT_STABLE_SORT(sort_by_slot, keyed, SLOT_BEFORE)

typedef struct {
    int64_t lo, hi, start, parent, depth;
} group;

/* The members mem[lo, hi) (request order) that go on past position `end` become child groups, grouped by their slot
   at `end`: written back into mem[lo, ...) child by child, each in request order, and pushed so that the child with
   the smallest request is popped first. */
static void push_children(const char *base, int64_t elem, const int64_t *row_base, const int64_t *len, int64_t *mem,
                          int64_t lo, int64_t hi, int64_t end, int64_t parent, int64_t depth, keyed *pairs, keyed *runs,
                          keyed *tmp, group *stack, int64_t *sp) {
    int64_t n = 0;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t r = mem[i];
        if (len[r] > end) {
            pairs[n].slot = slot_at(base + (row_base[r] + end) * elem, elem);
            pairs[n].req = r;
            n++;
        }
    }
    if (n == 0) return;
    sort_by_slot(pairs, tmp, n, NULL); /* stable: a run's requests stay in request order */
    int64_t n_runs = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || pairs[i].slot != pairs[i - 1].slot) {
            runs[n_runs].slot = pairs[i].req; /* the run's smallest request, as the key its children are sorted by */
            runs[n_runs].req = i;
            n_runs++;
        }
    sort_by_slot(runs, tmp, n_runs, NULL); /* by smallest request (the runs are in slot order) */
    int64_t at = lo;
    const int64_t first = *sp;
    for (int64_t k = 0; k < n_runs; k++) {
        const int64_t from = runs[k].req;
        int64_t to = from + 1;
        while (to < n && pairs[to].slot == pairs[from].slot) to++;
        group g = {at, at + (to - from), end, parent, depth};
        for (int64_t i = from; i < to; i++) mem[at++] = pairs[i].req;
        stack[first + (n_runs - 1 - k)] = g; /* reversed: the smallest request's child on top */
    }
    *sp = first + n_runs;
}

int64_t pat_flat_forest(const void *ind, int64_t elem_bytes, int64_t ind_len, const int64_t *row_base,
                        const int64_t *len, int64_t n_req, int64_t cap_entries, int64_t *node_out, int64_t *req_ptr, int64_t *req_flat,
                        int64_t *entry_node, int32_t *req32, uint8_t *ends_here, int64_t *last_node, uint64_t *top) {
    for (int64_t r = 0; r < n_req; r++)
        if (len[r] < 1 || row_base[r] < 0 || row_base[r] > ind_len - len[r]) return INT64_MIN;
    const char *base = (const char *)ind;
    const int64_t elem = elem_bytes, room = 2 * n_req;
    int64_t *tok = node_out, *start = tok + room, *parent = start + room, *depth = parent + room, *q = depth + room,
            *rep = q + room, *ending = rep + room;
    int64_t *mem = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_req);
    keyed *pairs = (keyed *)malloc(sizeof(keyed) * (size_t)n_req);
    keyed *runs = (keyed *)malloc(sizeof(keyed) * (size_t)n_req);
    keyed *tmp = (keyed *)malloc(sizeof(keyed) * (size_t)n_req);
    group *stack = (group *)malloc(sizeof(group) * (size_t)room);
    if (!mem || !pairs || !runs || !tmp || !stack) {
        free(mem), free(pairs), free(runs), free(tmp), free(stack);
        return 0;
    }
    for (int64_t r = 0; r < n_req; r++) mem[r] = r;
    int64_t sp = 0, nodes = 0, entries = 0;
    uint64_t high = 0;
    push_children(base, elem, row_base, len, mem, 0, n_req, 0, -1, 0, pairs, runs, tmp, stack, &sp);
    while (sp > 0) {
        const group g = stack[--sp];
        const int64_t id = nodes++;
        req_ptr[id] = entries;
        for (int64_t i = g.lo; i < g.hi; i++, entries++) {
            last_node[mem[i]] = id; /* depth-first: a request's deepest node is the last to list it */
            if (entries < cap_entries) {
                req_flat[entries] = mem[i];
                entry_node[entries] = id;
            }
        }
        int64_t w = INT64_MAX;
        for (int64_t i = g.lo; i < g.hi; i++)
            if (len[mem[i]] - g.start < w) w = len[mem[i]] - g.start;
        for (int64_t i = g.lo + 1; i < g.hi && w > 0; i++) {
            const char *a = base + (row_base[mem[i - 1]] + g.start) * elem;
            const char *b = base + (row_base[mem[i]] + g.start) * elem;
            const int64_t k = first_difference(a, b, w, elem);
            if (k < w) w = k;
        }
        const uint64_t m = max_unsigned(base + (row_base[mem[g.hi - 1]] + g.start) * elem, w, elem);
        if (m > high) high = m;
        tok[id] = w;
        start[id] = g.start;
        parent[id] = g.parent;
        depth[id] = g.depth;
        q[id] = g.hi - g.lo;
        rep[id] = mem[g.lo]; /* its smallest request */
        ending[id] = 0;
        push_children(base, elem, row_base, len, mem, g.lo, g.hi, g.start + w, id, g.depth + 1, pairs, runs, tmp,
                      stack, &sp);
    }
    req_ptr[nodes] = entries;
    *top = high;
    free(mem), free(pairs), free(runs), free(tmp), free(stack);
    if (entries > cap_entries) return -entries;
    for (int64_t e = 0; e < entries; e++) { /* where requests end (PrefixForest's ends_here, ending) */
        req32[e] = (int32_t)req_flat[e];
        ends_here[e] = last_node[req_flat[e]] == entry_node[e];
        ending[entry_node[e]] += ends_here[e];
    }
    return nodes;
}
