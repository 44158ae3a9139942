/* The split search's launch simulation, compiled for the host (pat_sglang/host_core.py loads it with ctypes).

   Role in pack-forward-merge: part of *pack*. The planner costs a few candidate KV split lengths per changed decode
   step by simulating the forward launch: items in launch order, each started on the CTA slot that frees first
   (pat_sglang/planner.py: _launch_costs, _greedy_makespan). In Python that simulation is a heap of a few hundred
   steps per candidate plus numpy calls to lay the items out, ~35 us a candidate on the project's 2-core VM; here it
   is one call of a few microseconds. The arithmetic is the Python version's, operation for operation, so the results
   are equal bit for bit (tests/test_host_core.py).

   candidate_makespan: one candidate of _launch_costs. Its packs are laid out longest item first (a stable sort
   of the packs by item_tokens, descending: numpy's argsort(-item_tokens, kind="stable")), each pack's full row blocks
   before its last (reps / durs hold (full, last) pairs per pack), runs of equal durations merged, zero-item entries
   dropped; then _greedy_makespan over those runs.

   pat_launch_costs: the whole of _launch_costs (each candidate's items, merge chain and lower bound, then
   _simulated_costs: candidates simulated in the order of their bounds, with its early stops), so that a split search
   makes one call instead of ~20 numpy calls and one per simulated candidate. Its sums over packs run in pack order,
   as the Python version's cumulative sums do. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_plan.h"
#include "host_sort.h"

static void sift_down(double *h, int64_t n, int64_t i) {
    double v = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static void heapify(double *h, int64_t n) {
    for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(h, n, i);
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double largest(const double *loads, int64_t n) {
    double m = loads[0];
    for (int64_t i = 1; i < n; i++)
        if (loads[i] > m) m = loads[i];
    return m;
}

/* _greedy_makespan: loads has room for `slots` doubles; batch_items is RUN_BATCH_ITEMS. */
double pat_greedy_makespan(const double *values, const int64_t *counts, int64_t n_runs, int64_t slots, double limit,
                           int64_t batch_items, double *loads) {
    int64_t filled = 0, r = 0, carry = 0;
    /* the first wave: every slot starts at 0 */
    for (;; r++) {
        if (r == n_runs) return filled ? largest(loads, filled) : 0.0;
        double d = values[r];
        int64_t n = counts[r];
        if (filled == 0 && n >= slots) { /* whole rounds, the rest one each: ascending, a heap as it is */
            int64_t rounds = n / slots, rest = n % slots;
            for (int64_t i = 0; i < slots - rest; i++) loads[i] = d * (double)rounds;
            for (int64_t i = slots - rest; i < slots; i++) loads[i] = d * (double)(rounds + 1);
            r++;
            break;
        }
        int64_t room = slots - filled;
        if (n < room) {
            for (int64_t i = 0; i < n; i++) loads[filled++] = d;
            continue;
        }
        for (int64_t i = 0; i < room; i++) loads[filled++] = d;
        heapify(loads, slots);
        carry = n - room; /* the run's rest goes on after the first wave */
        if (carry == 0) r++;
        break;
    }
    for (; r < n_runs; r++) {
        double d = values[r];
        int64_t n = carry ? carry : counts[r];
        carry = 0;
        if (n == 1) {
            double end = loads[0] + d;
            if (end > limit) return end;
            loads[0] = end;
            sift_down(loads, slots, 0);
            continue;
        }
        if (n >= batch_items && largest(loads, slots) - loads[0] <= d) {
            int64_t rounds = n / slots;
            n = n % slots;
            if (rounds) {
                if (loads[0] + (double)rounds * d > limit) return loads[0] + (double)rounds * d;
                double add = (double)rounds * d;
                for (int64_t i = 0; i < slots; i++) loads[i] = loads[i] + add;
            }
            if (n) {
                qsort(loads, (size_t)slots, sizeof(double), ascending);
                if (loads[n - 1] + d > limit) return loads[n - 1] + d;
                for (int64_t i = 0; i < n; i++) loads[i] = loads[i] + d;
                heapify(loads, slots);
            }
            continue;
        }
        for (int64_t k = 0; k < n; k++) {
            double end = loads[0] + d;
            if (end > limit) return end;
            loads[0] = end;
            sift_down(loads, slots, 0);
        }
    }
    return largest(loads, slots);
}

/* Pack indices by a key descending, ties by index ascending: the order numpy's argsort(-key, kind="stable") gives from
   0..n-1, which any stable sort with this total order gives from any starting order (host_sort.h; ctx: the keys). */
#define KEY_DESC_BEFORE(later, earlier, ctx)                                                                           \
    (((const double *)(ctx))[*(later)] > ((const double *)(ctx))[*(earlier)] ||                                      \
     (((const double *)(ctx))[*(later)] == ((const double *)(ctx))[*(earlier)] && *(later) < *(earlier)))
PAT_RUN_SORT(sort_descending, int64_t, KEY_DESC_BEFORE)
/* the same over int64 keys (the packs' tokens) */
#define TOKENS_DESC_BEFORE(later, earlier, ctx)                                                                        \
    (((const int64_t *)(ctx))[*(later)] > ((const int64_t *)(ctx))[*(earlier)] ||                                    \
     (((const int64_t *)(ctx))[*(later)] == ((const int64_t *)(ctx))[*(earlier)] && *(later) < *(earlier)))
PAT_STABLE_SORT(sort_by_tokens, int64_t, TOKENS_DESC_BEFORE)

/* by_tokens: the packs by their tokens, descending (sort_by_tokens). A candidate's items are its packs' tokens over
   their split counts, and a split count grows with the tokens, so in that order the item sizes fall in a few runs (one
   per split count) and the launch order is a few merges away. scratch: 5 * packs + 1 int64 + 2 * packs doubles (run
   values) + slots doubles (loads), as one double array of 7 * packs + 1 + slots entries. */
static double candidate_makespan(const double *item_tokens, const int64_t *reps, const double *durs,
                                 const int64_t *by_tokens, int64_t packs, int64_t slots, double limit,
                                 int64_t batch_items, double *scratch) {
    int64_t *order = (int64_t *)scratch;
    int64_t *tmp = order + packs;
    int64_t *run_counts = tmp + packs;
    int64_t *sort_runs = run_counts + 2 * packs; /* packs + 1 */
    double *run_values = scratch + 5 * packs + 1;
    double *loads = run_values + 2 * packs;
    memcpy(order, by_tokens, sizeof(int64_t) * (size_t)packs);
    sort_descending(order, tmp, sort_runs, packs, item_tokens);
    int64_t n_runs = 0;
    for (int64_t i = 0; i < packs; i++) {
        int64_t p = order[i];
        for (int64_t j = 0; j < 2; j++) {
            int64_t n = reps[2 * p + j];
            if (n <= 0) continue;
            double v = durs[2 * p + j];
            if (n_runs && run_values[n_runs - 1] == v) {
                run_counts[n_runs - 1] += n;
            } else {
                run_values[n_runs] = v;
                run_counts[n_runs] = n;
                n_runs++;
            }
        }
    }
    return pat_greedy_makespan(run_values, run_counts, n_runs, slots, limit, batch_items, loads);
}

/* An item's duration in slot bytes: its share of the pack's tokens at `token_bytes` each, plus its fixed cost. The
   product before the division, as numpy's `pack_tokens * token_bytes / splits` rounds it (bit-equal costs). */
static inline double item_duration(int64_t tokens, int64_t token_bytes, int64_t splits, double overhead) {
    return (double)(tokens * token_bytes) / (double)splits + overhead;
}

/* _launch_costs + _simulated_costs (pat_sglang/planner.py) for `cands` candidate rows of splits (cands x packs, the
   KV splits of each pack). pack_tokens: each pack's KV tokens; full_blocks: its row blocks before the last;
   full_token_bytes / last_token_bytes[p]: a KV token's cost (slot bytes of one KV head) in an item of a full block /
   of pack p's last block; full_overhead / last_overhead[p]: an item's fixed cost there. Items go in launch order by
   their KV tokens, longest first (the kernel's order). pack_req
   (n_entries) lists each pack's requests, pack by pack (pack_req_count[p] of them); one_each: every request sits in
   one pack (n_entries == num_requests). Writes cost[c] (inf: not simulated, it cannot win) and items[c].
   scratch: (13 * packs + 1 + slots + num_requests + 3 * cands) doubles. */
void pat_launch_costs(const int64_t *splits, const int64_t *pack_tokens, const int64_t *full_blocks,
                      int64_t full_token_bytes, const int64_t *last_token_bytes, double full_overhead,
                      const double *last_overhead, const int64_t *pack_req, const int64_t *pack_req_count,
                      int64_t n_entries, int64_t num_requests, int64_t cands, int64_t packs, int64_t slots,
                      double chain_slot_bytes, double tolerance, int64_t batch_items, double *cost, int64_t *items,
                      double *scratch) {
    double *item_tokens = scratch;                    /* packs: the launch order's key */
    double *durs = item_tokens + packs;               /* 2 * packs: (full, last) per pack */
    int64_t *reps = (int64_t *)(durs + 2 * packs);    /* 2 * packs */
    int64_t *by_tokens = reps + 2 * packs;            /* packs: sorted once, before the first simulation */
    double *sim = (double *)(by_tokens + packs);      /* 7 * packs + 1 + slots: candidate_makespan's scratch */
    double *partials = sim + 7 * packs + 1 + slots;   /* num_requests (int64 counts) */
    double *bound = partials + num_requests;          /* cands */
    double *chain_cost = bound + cands;               /* cands */
    int64_t *order = (int64_t *)(chain_cost + cands); /* cands */
    int one_each = n_entries == num_requests;
    for (int64_t c = 0; c < cands; c++) {
        const int64_t *s = splits + c * packs;
        int64_t n_items = 0, chain = 0;
        double total_full = 0.0, total_last = 0.0, longest_full = 0.0, longest_last = 0.0;
        for (int64_t p = 0; p < packs; p++) {
            double dur_full = item_duration(pack_tokens[p], full_token_bytes, s[p], full_overhead);
            double dur_last = item_duration(pack_tokens[p], last_token_bytes[p], s[p], last_overhead[p]);
            int64_t count = s[p] * (full_blocks[p] + 1);
            n_items += count;
            total_full += dur_full * (double)(count - s[p]);
            total_last += dur_last * (double)s[p];
            double f = full_blocks[p] > 0 ? dur_full : 0.0;
            if (p == 0 || f > longest_full) longest_full = f;
            if (p == 0 || dur_last > longest_last) longest_last = dur_last;
            if (one_each && pack_req_count[p] > 0 && s[p] > chain) chain = s[p];
        }
        if (!one_each) { /* a request's partials: the sum of its packs' splits */
            int64_t *per_req = (int64_t *)partials;
            memset(per_req, 0, (size_t)num_requests * sizeof(int64_t));
            int64_t e = 0;
            for (int64_t p = 0; p < packs; p++) { /* (locals: per_req's stores could alias them, re-read per entry) */
                const int64_t count = pack_req_count[p], add = s[p];
                for (int64_t k = 0; k < count; k++, e++) per_req[pack_req[e]] += add;
            }
            for (int64_t r = 0; r < num_requests; r++)
                if (per_req[r] > chain) chain = per_req[r];
        }
        double longest = longest_full > longest_last ? longest_full : longest_last;
        double total = total_full + total_last;
        double per_slot = total / (double)slots;
        chain_cost[c] = chain_slot_bytes * (double)(chain < 2 ? 0 : chain);
        bound[c] = (longest > per_slot ? longest : per_slot) + chain_cost[c];
        items[c] = n_items;
        cost[c] = bound[c];
        order[c] = c;
    }
    /* candidates by bound, ascending and stable (Python's sorted): insertion sort, a few dozen at most */
    for (int64_t i = 1; i < cands; i++) {
        int64_t v = order[i], j = i;
        while (j > 0 && bound[order[j - 1]] > bound[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    double best = INFINITY;
    int sorted_by_tokens = 0;
    for (int64_t i = 0; i < cands; i++) {
        int64_t c = order[i];
        if (bound[c] > best) break;
        if (items[c] > slots) {
            if (bound[c] < best && best <= bound[c] * (1.0 + tolerance)) { /* would save less than the tolerance */
                cost[c] = INFINITY;
                continue;
            }
            const int64_t *s = splits + c * packs;
            if (!sorted_by_tokens) {
                int64_t *tmp = (int64_t *)sim;
                for (int64_t p = 0; p < packs; p++) by_tokens[p] = p;
                sort_by_tokens(by_tokens, tmp, packs, pack_tokens);
                sorted_by_tokens = 1;
            }
            for (int64_t p = 0; p < packs; p++) {
                item_tokens[p] = (double)pack_tokens[p] / (double)s[p];
                durs[2 * p] = item_duration(pack_tokens[p], full_token_bytes, s[p], full_overhead);
                durs[2 * p + 1] = item_duration(pack_tokens[p], last_token_bytes[p], s[p], last_overhead[p]);
                reps[2 * p] = s[p] * full_blocks[p];
                reps[2 * p + 1] = s[p];
            }
            cost[c] = candidate_makespan(item_tokens, reps, durs, by_tokens, packs, slots, best - chain_cost[c],
                                         batch_items, sim) + chain_cost[c];
        }
        if (cost[c] < best) best = cost[c];
    }
}

/* x / d rounded down for 0 <= x < 2^52, d >= 1, inverse = 1.0 / d: the double product is within one of the quotient,
   and the integer checks make it exact. An integer division per (candidate, pack) cost most of the split search's
   setup (~40 cycles each here). */
static inline int64_t floor_quotient(int64_t x, int64_t d, double inverse) {
    if (x >= ((int64_t)1 << 52)) return x / d; /* beyond doubles' exact integers (never a pack's tokens) */
    int64_t q = (int64_t)((double)x * inverse);
    while (q > 0 && q * d > x) q--;
    while ((q + 1) * d <= x) q++;
    return q;
}

/* planner._split_length's choice among candidate split lengths, after its candidates (_split_candidates) are made:
   the whole non-uniform path in one call. lengths[0..n_lengths): the candidates, longest first; longest: the longest
   pack's tokens. A length that holds the longest pack cuts nothing, so of those only the first stays; each remaining
   length cuts pack p into max(1, ceil(pack_tokens[p] / length)) splits (_split_counts), and of neighbouring lengths
   that cut every pack alike only the longer stays. Their costs are pat_launch_costs' (full blocks: pack_blocks - 1;
   block_token_bytes[n] / block_overheads[n]: a KV token's cost and an item's fixed cost in a row block of n
   requests, n in 0..rpb, rpb = n_overheads / 2 - 1, and at rpb + 1 + n in a pack of long_tokens or more:
   planner._block_costs); the cheapest wins, on a tie the one with more items, then the first
   (_cheapest). pack_req: int32. The caller takes packs that are all alike (equal tokens and requests) to its uniform
   model first. Returns the chosen length; -1 when scratch memory cannot be allocated, -2 without candidates. */
int64_t pat_split_length(const int64_t *lengths, int64_t n_lengths, int64_t longest, const int64_t *pack_tokens,
                         const int64_t *pack_blocks, const int64_t *pack_req_count, const int32_t *pack_req,
                         int64_t n_entries, int64_t num_requests, int64_t packs, int64_t slots,
                         const int64_t *block_token_bytes, const double *block_overheads, int64_t n_overheads,
                         int64_t long_tokens, double chain_slot_bytes, double tolerance, int64_t batch_items) {
    if (n_lengths < 1) return -2;
    int64_t *kept = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_lengths);
    int64_t *splits = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n_lengths * packs));
    int64_t *per_pack = (int64_t *)malloc(sizeof(int64_t) * (size_t)(3 * packs + n_entries + 1));
    double *doubles = (double *)malloc(sizeof(double) * (size_t)(packs + 2 * n_lengths + 13 * packs + 1 + slots +
                                                                  num_requests + 3 * n_lengths));
    if (!kept || !splits || !per_pack || !doubles) {
        free(kept), free(splits), free(per_pack), free(doubles);
        return -1;
    }
    int64_t cands = 0;
    for (int64_t c = 0; c < n_lengths; c++) {
        int64_t length = lengths[c];
        if (c > 0 && length >= longest) continue; /* cuts nothing: the first candidate already does */
        int64_t *row = splits + cands * packs;
        int same = cands > 0;
        const double inverse = 1.0 / (double)length;
        for (int64_t p = 0; p < packs; p++) {
            int64_t s = floor_quotient(pack_tokens[p] + (length - 1), length, inverse);
            row[p] = s > 1 ? s : 1;
            if (same && row[p] != row[p - packs]) same = 0;
        }
        if (!same) kept[cands++] = length; /* a length that cuts as the one before costs as it: keep the longer */
    }
    int64_t chosen = kept[0];
    if (cands > 1) {
        int64_t *last_token_bytes = per_pack, *full = per_pack + packs, *req = per_pack + 3 * packs;
        double *last_overhead = doubles, *cost = doubles + packs, *scratch = cost + 2 * n_lengths;
        int64_t *items = (int64_t *)(cost + cands);
        /* a full block's rows are more than half the largest tile m: the same tile, and entry, in both halves */
        int64_t rpb = n_overheads / 2 - 1;
        for (int64_t p = 0; p < packs; p++) {
            full[p] = pack_blocks[p] - 1;
            int64_t last_size = pack_req_count[p] - full[p] * rpb + (pack_tokens[p] >= long_tokens ? rpb + 1 : 0);
            last_token_bytes[p] = block_token_bytes[last_size];
            last_overhead[p] = block_overheads[last_size];
        }
        for (int64_t e = 0; e < n_entries; e++) req[e] = pack_req[e];
        pat_launch_costs(splits, pack_tokens, full, block_token_bytes[rpb], last_token_bytes, block_overheads[rpb],
                         last_overhead, req, pack_req_count, n_entries, num_requests, cands, packs, slots,
                         chain_slot_bytes, tolerance, batch_items, cost, items, scratch);
        int64_t best = 0;
        for (int64_t c = 1; c < cands; c++)
            if (cost[c] < cost[best] || (cost[c] == cost[best] && items[c] > items[best])) best = c;
        chosen = kept[best];
    }
    free(kept), free(splits), free(per_pack), free(doubles);
    return chosen;
}
