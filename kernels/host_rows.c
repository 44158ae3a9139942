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
   ones (PrefixForest._get), so the planner computes none of them again. leaf_max 1: *top is the maximum of every node;
   0: of the shared ones only (the private leaves, nodes of one request, are left to the caller: pat_scan_start below
   scans them beside the caller's next work). Returns the number of nodes; -(entries
   needed) when the entry arrays have too little room (nothing else is then valid: call again with more), or 0 when
   scratch memory cannot be allocated. */

#define _POSIX_C_SOURCE 200809L /* pthreads under -std=c99 */

#include <pthread.h>
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
                        const int64_t *len, int64_t n_req, int64_t cap_entries, int64_t leaf_max, int64_t *node_out,
                        int64_t *req_ptr, int64_t *req_flat, int64_t *entry_node, int32_t *req32, uint8_t *ends_here,
                        int64_t *last_node, uint64_t *top) {
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
        if (leaf_max || g.hi - g.lo > 1) {
            const uint64_t m = max_unsigned(base + (row_base[mem[g.hi - 1]] + g.start) * elem, w, elem);
            if (m > high) high = m;
        }
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

/* The slot check of flat rows on two threads: pat_scan_start hands the unsigned maximum of the ranges
   ind[begin[k], begin[k] + count[k]) to a worker thread and returns at once; pat_scan_finish takes its share of what
   is left and waits for the worker's. plan() hands it what pat_flat_forest did not read for its maximum (leaf_max 0:
   the private leaves, each read once and cold; the private forest: the whole table up to kv_indptr[-1], which the
   rows tile) and goes on planning in Python meanwhile (ctypes calls release the interpreter lock, and the worker
   never takes it). At 256 rows x 4k int32 slots the whole table is ~180-200 us on the project's 2-core VM (4 MB do
   not fit one core's 2 MB L2), about as long as plan_forest.

   The worker is one detached thread, started on first use (and again in a forked child: pthread_atfork), asleep on
   a condition variable between scans; it serves one scan at a time. The scan's state lives in the caller's job
   (SCAN_JOB_WORDS int64 words then one more per range plus one, alive until pat_scan_finish returns): both threads
   claim chunks (a range's SCAN_CHUNK_ELEMS-slot pieces) from job->next, so the one that finishes its other work first
   scans more. A scan started while the worker is busy with another (a second thread planning at the same time), or
   where no thread can be made, or smaller than SCAN_MIN_THREADED_ELEMS, is scanned whole by pat_scan_finish, and so
   is one the worker has not woken for by then (the VM's other core busy: the caller takes it back rather than wait
   for a context switch). pat_scan_start returns 1 where the worker was handed the scan, else 0. */

#define SCAN_CHUNK_ELEMS (1 << 16)         /* 256 KB of int32 slots: the whole 1M-slot table is 16 chunks */
#define SCAN_MIN_THREADED_ELEMS (1 << 16) /* below: the caller's own pass costs less than a handoff (~10 us) */
#define SCAN_JOB_WORDS 12                 /* host_core.py allocates a job of this many int64 words + ranges + 1 */

typedef struct {
    const char *base;
    const int64_t *begin, *count;
    int64_t elem, ranges, chunks, next, worker_on; /* next: the next unclaimed chunk; worker_on: the worker is in it */
    uint64_t high;                                 /* the maximum so far (under the lock) */
    int64_t *first_chunk;                          /* per range its first chunk, then the number of chunks */
} scan_job;

typedef char scan_job_fits[sizeof(scan_job) <= SCAN_JOB_WORDS * sizeof(int64_t) ? 1 : -1];

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    scan_job *posted; /* the scan the worker is to take next */
    int started, idle, atfork;
} worker = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0};

static uint64_t scan_chunks(scan_job *job) {
    uint64_t high = 0;
    int64_t r = 0; /* the range of the last chunk claimed: chunks are claimed in increasing order */
    for (;;) {
        const int64_t c = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (c >= job->chunks) return high;
        while (job->first_chunk[r + 1] <= c) r++;
        const int64_t lo = (c - job->first_chunk[r]) * SCAN_CHUNK_ELEMS;
        const int64_t left = job->count[r] - lo;
        const uint64_t m = max_unsigned(job->base + (job->begin[r] + lo) * job->elem,
                                        left < SCAN_CHUNK_ELEMS ? left : SCAN_CHUNK_ELEMS, job->elem);
        if (m > high) high = m;
    }
}

static void *scan_worker(void *unused) {
    (void)unused;
    pthread_mutex_lock(&worker.lock);
    for (;;) {
        while (worker.posted == NULL) pthread_cond_wait(&worker.wake, &worker.lock);
        scan_job *job = worker.posted;
        worker.posted = NULL;
        pthread_mutex_unlock(&worker.lock);
        const uint64_t m = scan_chunks(job);
        pthread_mutex_lock(&worker.lock);
        if (m > job->high) job->high = m;
        job->worker_on = 0;
        worker.idle = 1;
        pthread_cond_broadcast(&worker.done);
    }
    return NULL;
}

/* fork: the child has no worker thread (only the forking thread is copied), and the lock is taken around the fork so
   that the child's copy of it is free */
static void fork_prepare(void) { pthread_mutex_lock(&worker.lock); }
static void fork_parent(void) { pthread_mutex_unlock(&worker.lock); }
static void fork_child(void) {
    pthread_mutex_init(&worker.lock, NULL);
    pthread_cond_init(&worker.wake, NULL);
    pthread_cond_init(&worker.done, NULL);
    worker.posted = NULL;
    worker.started = 0;
    worker.idle = 0;
}

/* ind (ind_len elements of elem_bytes 4 or 8), begin and count (n_ranges each) and job_words (SCAN_JOB_WORDS +
   n_ranges + 1, any content) stay alive and unchanged until pat_scan_finish(job_words) returns. Returns -1 (nothing
   started, nothing to finish) where a range is not within ind. */
int64_t pat_scan_start(const void *ind, int64_t elem_bytes, int64_t ind_len, const int64_t *begin,
                       const int64_t *count, int64_t n_ranges, int64_t *job_words) {
    for (int64_t r = 0; r < n_ranges; r++)
        if (count[r] < 0 || begin[r] < 0 || begin[r] > ind_len - count[r]) return -1;
    scan_job *job = (scan_job *)job_words;
    job->base = (const char *)ind;
    job->begin = begin;
    job->count = count;
    job->elem = elem_bytes;
    job->ranges = n_ranges;
    job->next = 0;
    job->worker_on = 0;
    job->high = 0;
    job->first_chunk = job_words + SCAN_JOB_WORDS;
    int64_t chunks = 0, elems = 0;
    for (int64_t r = 0; r < n_ranges; r++) {
        job->first_chunk[r] = chunks;
        chunks += (count[r] + SCAN_CHUNK_ELEMS - 1) / SCAN_CHUNK_ELEMS;
        elems += count[r];
    }
    job->first_chunk[n_ranges] = job->chunks = chunks;
    if (elems < SCAN_MIN_THREADED_ELEMS) return 0;
    pthread_mutex_lock(&worker.lock);
    if (!worker.atfork) worker.atfork = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
    if (!worker.started && worker.atfork) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        worker.started = worker.idle = pthread_create(&t, &attr, scan_worker, NULL) == 0;
        pthread_attr_destroy(&attr);
    }
    const int64_t taken = worker.started && worker.idle;
    if (taken) {
        worker.idle = 0;
        worker.posted = job;
        job->worker_on = 1;
        pthread_cond_signal(&worker.wake);
    }
    pthread_mutex_unlock(&worker.lock);
    return taken;
}

uint64_t pat_scan_finish(int64_t *job_words) {
    scan_job *job = (scan_job *)job_words;
    const uint64_t m = scan_chunks(job);
    pthread_mutex_lock(&worker.lock);
    if (m > job->high) job->high = m;
    if (worker.posted == job) { /* the worker never woke (its core busy elsewhere): nothing to wait for */
        worker.posted = NULL;
        worker.idle = 1;
        job->worker_on = 0;
    }
    while (job->worker_on) pthread_cond_wait(&worker.done, &worker.lock);
    const uint64_t high = job->high;
    pthread_mutex_unlock(&worker.lock);
    return high;
}
