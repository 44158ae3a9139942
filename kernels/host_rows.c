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
   ones (PrefixForest._get), so the planner computes none of them again. *top is the maximum of every node; with a
   leaf_scan (a scan job of room for n_req ranges, below) of the shared nodes and short leaves only: the private
   leaves (nodes of one request) of LEAF_SCAN_MIN_ELEMS slots or more are posted in it as a scan, which the caller
   finishes (pat_scan_finish) after its next work, on every return above 0 (none is started otherwise). Returns the
   number of nodes; -(entries needed) when the entry arrays have too little room (nothing else is then valid: call
   again with more), or 0 when scratch memory cannot be allocated. */

#define _POSIX_C_SOURCE 200809L /* pthreads under -std=c99 */

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_sort.h"

#define CHUNK_ELEMS 64 /* a chunk memcmp compares before the exact position is looked for inside it */

/* The first of the `width` elements (`elem` bytes each) where a and b differ, or width. Most pairs a group compares
   agree over the whole width (they differ only where the node ends, which the group's first differing pair finds),
   so one memcmp over it goes first: a chunk loop's calls cost ~10% more at 256 rows x 4k tokens. */
static int64_t first_difference(const char *a, const char *b, int64_t width, int64_t elem) {
    if (memcmp(a, b, (size_t)(width * elem)) == 0) return width;
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

/* The library's worker thread: pat_flat_forest compares a large group's rows on two threads, and plan() checks the
   private leaves' slots on it while it plans in Python (pat_scan_start below; ctypes calls release the interpreter
   lock, and the worker never takes it). One detached thread, started on first use (and again in a forked child:
   pthread_atfork), asleep on a condition variable between jobs; it serves one job at a time. A job is work in
   claimable pieces (an atomic counter in the job): the poster claims pieces too, so the thread that is free first does
   more, and a job the worker has not woken for by the time the poster has claimed every piece is taken back (the
   VM's other core busy: no wait for a context switch). A job posted while the worker is busy with another (a second
   thread planning at the same time), or where no thread can be made, is done by its poster alone. On the project's
   2-core VM a wake-up takes ~6 us when the other core is idle, ~100 us (all of the poster's piece time) when it is
   busy. */

typedef struct worker_job {
    void (*run)(struct worker_job *); /* claims and does pieces until none is left */
    int64_t worker_on;                /* the worker is in run (under the lock) */
} worker_job;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    worker_job *posted; /* the job the worker is to take next */
    int started, idle, atfork;
} worker = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0};

static void *worker_loop(void *unused) {
    (void)unused;
    pthread_mutex_lock(&worker.lock);
    for (;;) {
        while (worker.posted == NULL) pthread_cond_wait(&worker.wake, &worker.lock);
        worker_job *job = worker.posted;
        worker.posted = NULL;
        pthread_mutex_unlock(&worker.lock);
        job->run(job);
        pthread_mutex_lock(&worker.lock);
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

/* Hands job to the worker if it is free; 1 if it was. The job stays alive until worker_join(job). */
static int64_t worker_post(worker_job *job) {
    job->worker_on = 0;
    pthread_mutex_lock(&worker.lock);
    if (!worker.atfork) worker.atfork = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
    if (!worker.started && worker.atfork) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        worker.started = worker.idle = pthread_create(&t, &attr, worker_loop, NULL) == 0;
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

/* The poster's share of job (every piece left), then the worker's: on return job is done and the worker out of it. */
static void worker_join(worker_job *job) {
    job->run(job);
    pthread_mutex_lock(&worker.lock);
    if (worker.posted == job) { /* the worker never woke: the poster did every piece */
        worker.posted = NULL;
        worker.idle = 1;
        job->worker_on = 0;
    }
    while (job->worker_on) pthread_cond_wait(&worker.done, &worker.lock);
    pthread_mutex_unlock(&worker.lock);
}

static void atomic_max_u64(uint64_t *at, uint64_t v) {
    uint64_t old = __atomic_load_n(at, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(at, &old, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static void atomic_min_i64(int64_t *at, int64_t v) {
    int64_t old = __atomic_load_n(at, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(at, &old, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* A group's node length on two threads: the first difference of the neighbouring rows mem[i - 1], mem[i] (i in
   [lo + 1, hi)) from position start, at most w, claimed COMPARE_PAIRS_PER_CLAIM pairs at a time; each pair is compared
   up to the smallest difference found so far by either thread (the minimum is the same in any order). */
#define COMPARE_PAIRS_PER_CLAIM 8
#define COMPARE_THREADED_ELEMS (1 << 18) /* (pairs x w) below this: one thread (a handoff costs ~6-10 us) */

typedef struct {
    worker_job head;
    const char *base;
    const int64_t *row_base, *mem;
    int64_t elem, lo, hi, start, next, w; /* next: the next unclaimed pair index (from lo + 1); w: atomic minimum */
} compare_job;

static void compare_run(worker_job *head) {
    compare_job *job = (compare_job *)head;
    for (;;) {
        const int64_t first = __atomic_fetch_add(&job->next, COMPARE_PAIRS_PER_CLAIM, __ATOMIC_RELAXED);
        if (first >= job->hi) return;
        const int64_t last = first + COMPARE_PAIRS_PER_CLAIM < job->hi ? first + COMPARE_PAIRS_PER_CLAIM : job->hi;
        for (int64_t i = first; i < last; i++) {
            const int64_t w = __atomic_load_n(&job->w, __ATOMIC_RELAXED);
            if (w == 0) return;
            const char *a = job->base + (job->row_base[job->mem[i - 1]] + job->start) * job->elem;
            const char *b = job->base + (job->row_base[job->mem[i]] + job->start) * job->elem;
            const int64_t k = first_difference(a, b, w, job->elem);
            if (k < w) atomic_min_i64(&job->w, k);
        }
    }
}

/* The first position (from start, below w) where two neighbouring rows of mem[lo, hi) differ, or w. */
static int64_t group_width(const char *base, int64_t elem, const int64_t *row_base, const int64_t *mem, int64_t lo,
                           int64_t hi, int64_t start, int64_t w) {
    compare_job job = {{compare_run, 0}, base, row_base, mem, elem, lo, hi, start, lo + 1, w};
    if ((hi - lo - 1) * w >= COMPARE_THREADED_ELEMS) worker_post(&job.head);
    worker_join(&job.head);
    return job.w;
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

/* The slot check of flat rows beside the caller's work: a scan job (SCAN_JOB_WORDS int64 words, then per range its
   begin, its count and its first chunk, then the number of chunks) is the unsigned maximum of the ranges
   ind[begin[k], begin[k] + count[k]), in SCAN_CHUNK_ELEMS-slot chunks; posted to the worker, and pat_scan_finish
   takes its share of what is left and waits for the worker's. plan() posts what pat_flat_forest did not read for its
   maximum (with a leaf_scan: the private leaves, each read once and cold; the private forest: the whole table up to
   kv_indptr[-1], which the rows tile, pat_scan_start) and goes on planning in Python meanwhile. At 256 rows x 4k int32
   slots the whole table is ~180-200 us on the project's VM, about as long as plan_forest, and the 4 MB it reads
   would push the interpreter's own data out of the planning core's 2 MB L2 (the numpy calls after a 4 MB pass on the
   same core take 3-5x as long). Scans of fewer than SCAN_MIN_THREADED_ELEMS slots are not posted (pat_scan_finish
   does them). */

#define SCAN_CHUNK_ELEMS (1 << 16)         /* 256 KB of int32 slots: the whole 1M-slot table is 16 chunks */
#define SCAN_MIN_THREADED_ELEMS (1 << 16) /* below: the caller's own pass costs less than a handoff (~6-10 us) */
/* Private leaves shorter than this keep their maximum in the walk, where the reads before them (their parent's
   comparison) have brought their first lines in: left to the scan, the 4-level tree's 256 leaves of 128 slots cost
   ~50-75 us more (scattered cold reads of 512 bytes, latency-bound; paired in one process on the project's VM). */
#define LEAF_SCAN_MIN_ELEMS 1024
#define SCAN_JOB_WORDS 10                 /* a job's own words, before its per-range ones */
/* The one definition of a job's size: host_core.py reads it here to allocate SCAN_JOB_WORDS + 3 per range + 1 words. */
const int64_t pat_scan_job_words = SCAN_JOB_WORDS;

typedef struct {
    worker_job head;
    const char *base;
    int64_t elem, ranges, chunks, next; /* next: the next unclaimed chunk */
    uint64_t high;                      /* the maximum so far (atomic) */
} scan_job;

typedef char scan_job_fits[sizeof(scan_job) <= SCAN_JOB_WORDS * sizeof(int64_t) ? 1 : -1];

static int64_t *scan_begin(int64_t *job_words) { return job_words + SCAN_JOB_WORDS; }

static void scan_run(worker_job *head) {
    scan_job *job = (scan_job *)head;
    const int64_t *begin = scan_begin((int64_t *)job), *count = begin + job->ranges, *first_chunk = count + job->ranges;
    uint64_t high = 0;
    int64_t r = 0; /* the range of the last chunk claimed: a thread claims chunks in increasing order */
    for (;;) {
        const int64_t c = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (c >= job->chunks) break;
        while (first_chunk[r + 1] <= c) r++;
        const int64_t lo = (c - first_chunk[r]) * SCAN_CHUNK_ELEMS;
        const int64_t left = count[r] - lo;
        const uint64_t m = max_unsigned(job->base + (begin[r] + lo) * job->elem,
                                        left < SCAN_CHUNK_ELEMS ? left : SCAN_CHUNK_ELEMS, job->elem);
        if (m > high) high = m;
    }
    atomic_max_u64(&job->high, high);
}

/* The job's ranges (written at scan_begin: begins, then counts) made into chunks, and the job posted where it is
   worth a handoff: 1 where the worker took it. */
static int64_t scan_post(int64_t *job_words, const char *base, int64_t elem, int64_t n_ranges) {
    scan_job *job = (scan_job *)job_words;
    const int64_t *count = scan_begin(job_words) + n_ranges;
    int64_t *first_chunk = scan_begin(job_words) + 2 * n_ranges;
    job->head.run = scan_run;
    job->head.worker_on = 0;
    job->base = base;
    job->elem = elem;
    job->ranges = n_ranges;
    job->next = 0;
    job->high = 0;
    int64_t chunks = 0, elems = 0;
    for (int64_t r = 0; r < n_ranges; r++) {
        first_chunk[r] = chunks;
        chunks += (count[r] + SCAN_CHUNK_ELEMS - 1) / SCAN_CHUNK_ELEMS;
        elems += count[r];
    }
    first_chunk[n_ranges] = job->chunks = chunks;
    return elems >= SCAN_MIN_THREADED_ELEMS ? worker_post(&job->head) : 0;
}

/* A scan of the ranges ind[begin[k], begin[k] + count[k]) (k < n_ranges). ind (ind_len elements of elem_bytes 4 or
   8) and job_words (SCAN_JOB_WORDS + 3 n_ranges + 1, any content) stay alive and unchanged until
   pat_scan_finish(job_words) returns. Returns 1 where the worker was handed the scan, 0 where pat_scan_finish will do
   it all, -1 (nothing started, nothing to finish) where a range is not within ind. */
int64_t pat_scan_start(const void *ind, int64_t elem_bytes, int64_t ind_len, const int64_t *begin,
                       const int64_t *count, int64_t n_ranges, int64_t *job_words) {
    for (int64_t r = 0; r < n_ranges; r++)
        if (count[r] < 0 || begin[r] < 0 || begin[r] > ind_len - count[r]) return -1;
    memcpy(scan_begin(job_words), begin, sizeof(int64_t) * (size_t)n_ranges);
    memcpy(scan_begin(job_words) + n_ranges, count, sizeof(int64_t) * (size_t)n_ranges);
    return scan_post(job_words, (const char *)ind, elem_bytes, n_ranges);
}

/* The unsigned maximum of a started scan (pat_scan_start, or pat_flat_forest's leaf_scan), once done. */
uint64_t pat_scan_finish(int64_t *job_words) {
    scan_job *job = (scan_job *)job_words;
    worker_join(&job->head);
    return job->high;
}

int64_t pat_flat_forest(const void *ind, int64_t elem_bytes, int64_t ind_len, const int64_t *row_base,
                        const int64_t *len, int64_t n_req, int64_t cap_entries, int64_t *leaf_scan, int64_t *node_out,
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
    int64_t sp = 0, nodes = 0, entries = 0, leaves = 0;
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
        if (g.hi - g.lo > 1 && w > 0) w = group_width(base, elem, row_base, mem, g.lo, g.hi, g.start, w);
        if (leaf_scan != NULL && g.hi - g.lo == 1 && w >= LEAF_SCAN_MIN_ELEMS) { /* a long private leaf: scanned */
            scan_begin(leaf_scan)[leaves] = row_base[mem[g.lo]] + g.start;
            scan_begin(leaf_scan)[n_req + leaves++] = w;
        } else {
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
    if (leaf_scan != NULL) { /* the counts moved down to follow the begins: the layout scan_post reads */
        memmove(scan_begin(leaf_scan) + leaves, scan_begin(leaf_scan) + n_req, sizeof(int64_t) * (size_t)leaves);
        scan_post(leaf_scan, base, elem, leaves);
    }
    for (int64_t e = 0; e < entries; e++) { /* where requests end (PrefixForest's ends_here, ending) */
        req32[e] = (int32_t)req_flat[e];
        ends_here[e] = last_node[req_flat[e]] == entry_node[e];
        ending[entry_node[e]] += ends_here[e];
    }
    return nodes;
}
