/* host_pass.c: a planning pass's decisions before its items, in one call (planner._plan).

   Role in pack-forward-merge: part of *pack*. On a changed decode step the planner's pass over the forest was a chain
   of ~20 numpy and extension-module calls, each cheap, together ~60 us run cold between two steps on the project's
   2-core VM (docs/perf/host/2026-12-04-fiftieth-vm-statement-costs.txt): the packs (planner._choose_packs and the
   pack arrays), their row blocks and numbers (_pack_numbers), the split length kept from last step or the only
   candidate (_split_candidates), the split counts (_split_numbers), the limits (_fits) and the last wave's cut
   (_tail_split). pat_plan_packs makes the same arrays and numbers from the forest's arrays; the extension module
   (host_glue.c plan_pass) then lays out the items with host_items.c and hands everything back for the plan's objects.
   The numpy version stays the fallback and the reference (tests/test_plan_pass.py compares the two).

   The split search (several candidate lengths, none kept) and the coarser re-choice (a chosen length whose plan
   overflows the limits: the coarser candidates that fit, searched again) call host_simulate.c's pat_split_length as
   planner._split_length does. What it leaves to the numpy version (PAT_PASS_PYTHON): a search over packs that are all
   alike (planner._uniform_launch_costs' model, in Python), and forests it does not take. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_plan.h"
#include "host_sort.h"

static int bit_length(int64_t v) {
    int n = 0;
    for (uint64_t u = (uint64_t)v; u; u >>= 1) n++;
    return n;
}

/* planner._coarse: tokens rounded down to 8 steps per octave */
static int64_t coarse(int64_t tokens) {
    if (tokens < 16) return tokens;
    const int64_t grain = (int64_t)1 << (bit_length(tokens) - 4);
    return tokens / grain * grain;
}

/* planner._coarse_up: the next length above tokens on the coarse grid */
static int64_t coarse_up(int64_t tokens) {
    if (tokens < 16) return tokens + 1;
    return coarse(tokens + ((int64_t)1 << (bit_length(tokens) - 4)));
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static void add_length(int64_t *lengths, int64_t *n, int64_t length) {
    for (int64_t i = 0; i < *n; i++)
        if (lengths[i] == length) return;
    lengths[(*n)++] = length;
}

/* planner._split_candidates into lengths (room for 1 + n_ladder + max_waves * (steps_up + 1)), longest first; returns
   their count */
static int64_t split_candidates(const PatPassIn *in, int64_t longest, int64_t planned, int64_t *lengths) {
    /* Python's int / int is the correctly rounded quotient; both sides are exact doubles here (< 2^53) */
    const double one_wave = (double)(planned * in->num_kv_heads) / (double)in->target;
    const int64_t finest = max64(in->min_split_tokens, coarse((int64_t)ceil(one_wave / (double)in->max_waves)));
    int64_t n = 0;
    add_length(lengths, &n, max64(coarse_up(longest), finest));
    for (int64_t f = 0; f < in->n_ladder; f++)
        add_length(lengths, &n, max64(finest, coarse((int64_t)ceil(one_wave * in->ladder[f]))));
    for (int64_t waves = 1; waves <= in->max_waves; waves++) {
        int64_t length = max64(finest, coarse((int64_t)ceil(one_wave / (double)waves)));
        for (int64_t s = 0; s <= in->steps_up; s++) {
            add_length(lengths, &n, length);
            length = coarse_up(length);
        }
    }
    for (int64_t i = 1; i < n; i++) /* a few dozen at most: insertion sort, descending */
        for (int64_t j = i; j > 0 && lengths[j] > lengths[j - 1]; j--) {
            const int64_t t = lengths[j];
            lengths[j] = lengths[j - 1];
            lengths[j - 1] = t;
        }
    return n;
}

/* Python's // for b > 0: the numpy versions' integer division, negative operands included */
static int64_t floor_div(int64_t a, int64_t b) {
    const int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* planner._choose_packs' test of one node of q requests and `tokens` KV tokens: its own pack saves more than its
   partials cost, (q - ceil(q / rpb)) * tok_bytes * tokens > q * partial_bytes, in int64 as numpy computes it */
static int pays(int64_t q, int64_t tokens, int64_t rpb, int64_t tok_bytes, int64_t partial_bytes) {
    const uint64_t saved = (uint64_t)(q - floor_div(q + (rpb - 1), rpb)) * (uint64_t)tok_bytes;
    return (int64_t)(saved * (uint64_t)tokens) > (int64_t)((uint64_t)q * (uint64_t)partial_bytes);
}

int pat_packs_all_pay(int64_t nodes, const int64_t *q, const int64_t *tok, const uint8_t *shared, int64_t rpb,
                      int64_t tok_bytes, int64_t partial_bytes) {
    for (int64_t i = 0; i < nodes; i++)
        if ((shared != NULL ? shared[i] : q[i] > 1) && !pays(q[i], tok[i], rpb, tok_bytes, partial_bytes)) return 0;
    return 1;
}

int64_t pat_pack_numbers(int64_t packs, const int64_t *tokens, const int64_t *offsets, const int64_t *counts,
                         int64_t rpb, int64_t *blocks, int64_t *limit, int64_t *longest) {
    int64_t end = offsets[0] + tokens[0], most = tokens[0];
    uint64_t planned = 0;
    for (int64_t p = 0; p < packs; p++) {
        blocks[p] = floor_div(counts[p] + (rpb - 1), rpb);
        end = offsets[p] + tokens[p] > end ? offsets[p] + tokens[p] : end;
        most = tokens[p] > most ? tokens[p] : most;
        planned += (uint64_t)tokens[p] * (uint64_t)blocks[p];
    }
    *limit = end;
    *longest = most;
    return (int64_t)planned;
}

void pat_split_numbers(int64_t packs, const int64_t *tokens, int64_t length, const int64_t *blocks,
                       const int64_t *counts, int64_t *splits, int64_t *items, int64_t *entries) {
    uint64_t it = 0, en = 0;
    for (int64_t p = 0; p < packs; p++) {
        const int64_t k = floor_div(tokens[p] + (length - 1), length);
        splits[p] = k > 1 ? k : 1;
        it += (uint64_t)splits[p] * (uint64_t)blocks[p];
        en += (uint64_t)splits[p] * (uint64_t)counts[p];
    }
    *items = (int64_t)it;
    *entries = (int64_t)en;
}

/* planner._fits; per_request: scratch of in->requests */
static int fits(const PatPassIn *in, int64_t packs, const int64_t *splits, int64_t items, int64_t entries,
                const int32_t *pack_req, const int64_t *counts, int64_t *per_request) {
    if (items > in->max_items || entries > in->max_entries) return 0;
    if (entries <= in->max_partials) return 1; /* partial slots are at most the entries */
    memset(per_request, 0, sizeof(int64_t) * (size_t)in->requests);
    for (int64_t p = 0, e = 0; p < packs; p++)
        for (int64_t k = 0; k < counts[p]; k++, e++) per_request[pack_req[e]] += splits[p];
    int64_t slots = 0;
    for (int64_t r = 0; r < in->requests; r++)
        if (per_request[r] > 1) slots += per_request[r];
    return slots <= in->max_partials;
}

typedef struct {
    const int64_t *item_tokens;
} TailOrder;

/* descending by item tokens (a stable sort keeps equal ones in pack order: numpy's argsort of -tokens, stable) */
#define TAIL_BEFORE(a, b, ctx) (((const TailOrder *)(ctx))->item_tokens[*(a)] > ((const TailOrder *)(ctx))->item_tokens[*(b)])
PAT_STABLE_SORT(sort_tail, int64_t, TAIL_BEFORE)

/* planner._tail_split: the split counts with the last wave cut finer written to cut; 1 where cut, 0 where they stay.
   scratch: 3 * packs int64 */
static int tail_split(const PatPassIn *in, int64_t packs, const int64_t *splits, int64_t num_items,
                      const int64_t *tokens, const int64_t *blocks, int64_t *cut, int64_t *scratch) {
    const int64_t ctas = num_items * in->num_kv_heads, target = in->target;
    const int64_t rest = ctas % target;
    if (!in->tail_on || ctas <= target || rest == 0 || rest * in->tail_divisor > target) return 0;
    int64_t *item_tokens = scratch, *order = scratch + packs, *tmp = scratch + 2 * packs;
    uint64_t short_items = 0;
    for (int64_t p = 0; p < packs; p++) {
        item_tokens[p] = floor_div(tokens[p] + splits[p] - 1, splits[p]);
        if (item_tokens[p] < 2 * in->min_split) short_items += (uint64_t)(splits[p] * blocks[p]);
        order[p] = p;
    }
    if ((int64_t)short_items * in->num_kv_heads >= rest) return 0;
    const TailOrder ctx = {item_tokens};
    sort_tail(order, tmp, packs, &ctx);
    /* the packs whose items start the last wave: from the launch's end back until `rest` CTAs are covered
       (searchsorted(cumsum(reversed), rest): the first reversed position whose running sum reaches rest) */
    int64_t first = packs, sum = 0;
    for (int64_t i = 0; i < packs; i++) {
        sum += splits[order[packs - 1 - i]] * blocks[order[packs - 1 - i]] * in->num_kv_heads;
        if (sum >= rest) {
            first = i;
            break;
        }
    }
    const int64_t from = packs - first - 1 > 0 ? packs - first - 1 : 0;
    int any = 0;
    memcpy(cut, splits, sizeof(int64_t) * (size_t)packs);
    for (int64_t i = from; i < packs; i++) {
        const int64_t p = order[i];
        int64_t factor = item_tokens[p] / in->min_split;
        factor = factor < in->tail_factor ? factor : in->tail_factor;
        if (factor > 1) {
            any = 1;
            cut[p] = splits[p] * factor;
        }
    }
    return any;
}

/* planner._split_length among candidates[0..n) (longest first): the only one, or pat_split_length's pick; -3 where
   every pack is alike (the numpy version's uniform model decides), -1 without scratch memory */
static int64_t search(const PatPassIn *in, const int64_t *candidates, int64_t n, int64_t longest, int64_t packs,
                      const int64_t *tokens, const int64_t *blocks, const int64_t *counts, const int32_t *pack_req,
                      int64_t pack_entries) {
    if (n == 1) return candidates[0];
    int uniform = 1;
    for (int64_t p = 0; p < packs && uniform; p++) uniform = tokens[p] == longest && counts[p] == counts[0];
    if (uniform) return -3;
    const int64_t slots = in->target / in->num_kv_heads > 1 ? in->target / in->num_kv_heads : 1;
    const int64_t got = pat_split_length(candidates, n, longest, tokens, blocks, counts, pack_req, pack_entries,
                                         in->requests, packs, slots, in->block_token_bytes, in->block_overheads,
                                         in->n_block_costs, in->long_tokens, in->chain_cost, in->cost_tolerance,
                                         in->run_batch_items);
    return got < 0 ? -1 : got;
}

int64_t pat_plan_packs(const PatPassIn *in, PatPassOut *out) {
    const int64_t nodes = in->nodes, entries = in->entries, rpb = in->rpb;
    const int64_t *q = in->q, *tok = in->tok;
    int64_t status = PAT_PASS_OK;
    /* scratch: kv_begin, tokens x2, top x2, ending (nodes each); entry_node (entries); last (requests); then what fits
       and tail_split use (the more of the two), then the candidate lengths; packed x2, ends_here (bytes) */
    const int64_t candidates_cap = 1 + in->n_ladder + in->max_waves * (in->steps_up + 1);
    const int64_t scratch_len = max64(in->requests, 3 * nodes) + candidates_cap;
    int64_t *w = (int64_t *)malloc(sizeof(int64_t) * (size_t)(6 * nodes + entries + in->requests + scratch_len + 1));
    uint8_t *flags = (uint8_t *)malloc((size_t)(2 * nodes + entries + 1));
    if (w == NULL || flags == NULL) {
        free(w);
        free(flags);
        return PAT_PASS_NO_MEMORY;
    }
    int64_t *kv_begin = w, *tokens = w + nodes, *tokens2 = w + 2 * nodes, *top = w + 3 * nodes, *top2 = w + 4 * nodes;
    int64_t *ending = w + 5 * nodes, *entry_node = w + 6 * nodes, *last = entry_node + entries;
    int64_t *scratch = last + in->requests;
    uint8_t *packed = flags, *packed2 = flags + nodes, *ends_here = flags + 2 * nodes;

    int64_t unique = 0, request_tokens = 0;
    for (int64_t i = 0; i < nodes; i++) {
        if (q[i] < 1) { /* every node has a request (the numpy version indexes its first) */
            status = PAT_PASS_PYTHON;
            goto done;
        }
        kv_begin[i] = in->row_base[in->req32[in->req_ptr[i]]] + in->start[i];
        unique += tok[i];
    }
    for (int64_t r = 0; r < in->requests; r++) request_tokens += in->request_lengths[r];
    out->unique_tokens = unique;
    out->request_tokens = request_tokens;

    /* _choose_packs: the fast check (every shared node pays for its own pack), else the profit model's rounds */
    const int64_t tb = in->tok_bytes, pb = in->partial_bytes;
    const int all_pay = pat_packs_all_pay(nodes, q, tok, NULL, rpb, tb, pb);
    out->all_pay = all_pay;
    int64_t packs;
    const int64_t *pack_tokens, *pack_counts;
    const int32_t *pack_req;
    if (all_pay) {
        packs = nodes;
        pack_tokens = tok;
        pack_counts = q;
        pack_req = in->req32;
        memcpy(out->kv_offset, kv_begin, sizeof(int64_t) * (size_t)nodes);
        for (int64_t i = 0; i < nodes; i++) out->leaf_pack[i] = q[i] == 1;
        out->pack_entries = entries;
    } else {
        for (int64_t i = 0; i < nodes; i++) {
            tokens[i] = tok[i];
            top[i] = i;
            packed[i] = q[i] == 1 || pays(q[i], tok[i], rpb, tb, pb);
        }
        for (;;) { /* the rounds as numpy makes them: every node from the last round's values at once */
            int same = 1;
            for (int64_t i = 0; i < nodes; i++) {
                const int64_t par = in->parent[i];
                const int inherit = par >= 0 && !packed[par];
                tokens2[i] = tok[i] + (inherit ? tokens[par] : 0);
                top2[i] = inherit ? top[par] : i;
                packed2[i] = q[i] == 1 || pays(q[i], tokens2[i], rpb, tb, pb);
                same &= tokens2[i] == tokens[i] && top2[i] == top[i] && packed2[i] == packed[i];
            }
            if (same) break;
            int64_t *t = tokens;
            tokens = tokens2;
            tokens2 = t;
            t = top;
            top = top2;
            top2 = t;
            uint8_t *f = packed;
            packed = packed2;
            packed2 = f;
        }
        /* where requests end (PrefixForest._get): an entry's node is its request's deepest (largest index) */
        for (int64_t r = 0; r < in->requests; r++) last[r] = -1;
        for (int64_t i = 0; i < nodes; i++) {
            ending[i] = 0;
            for (int64_t e = in->req_ptr[i]; e < in->req_ptr[i + 1]; e++) {
                entry_node[e] = i;
                if (i > last[in->req32[e]]) last[in->req32[e]] = i;
            }
        }
        for (int64_t e = 0; e < entries; e++) {
            ends_here[e] = last[in->req32[e]] == entry_node[e];
            ending[entry_node[e]] += ends_here[e];
        }
        packs = 0;
        for (int64_t i = 0; i < nodes; i++) {
            if (!packed[i] && ending[i] == 0) continue;
            out->pack_node[packs] = i;
            out->pack_counts[packs] = packed[i] ? q[i] : ending[i];
            out->pack_tokens[packs] = tokens[i];
            out->kv_offset[packs] = kv_begin[i] + tok[i] - tokens[i];
            out->leaf_pack[packs] = q[i] == 1;
            packs++;
        }
        int64_t kept = 0;
        for (int64_t e = 0; e < entries; e++)
            if (packed[entry_node[e]] || ends_here[e]) out->pack_req[kept++] = in->req32[e];
        out->pack_entries = kept;
        out->pack_ptr[0] = 0;
        for (int64_t p = 0; p < packs; p++) out->pack_ptr[p + 1] = out->pack_ptr[p] + out->pack_counts[p];
        memcpy(out->top, top, sizeof(int64_t) * (size_t)nodes);
        pack_tokens = out->pack_tokens;
        pack_counts = out->pack_counts;
        pack_req = out->pack_req;
    }
    out->packs = packs;
    if (packs == 0) {
        status = PAT_PASS_PYTHON;
        goto done;
    }

    int64_t limit, longest;
    const int64_t planned = pat_pack_numbers(packs, pack_tokens, out->kv_offset, pack_counts, rpb, out->pack_blocks,
                                             &limit, &longest);
    out->kv_limit = limit;
    out->planned_tokens = planned;
    if (limit > in->table_len) {
        status = PAT_PASS_BEYOND_TABLE;
        goto done;
    }

    /* the split length: given, kept from last step, the only candidate, or the cost model's pick */
    int64_t split = in->fixed_split, chosen_for = 0, n = 0;
    int64_t *candidates = scratch + max64(in->requests, 3 * packs); /* after what fits / tail_split use */
    if (split < 1) {
        chosen_for = planned;
        const int kept = in->keep_split > 0 &&
                         (double)llabs(planned - in->keep_for) <= in->keep_fraction * (double)in->keep_for;
        int64_t found = 0;
        if (!(kept && in->keep_split >= longest)) {
            n = split_candidates(in, longest, planned, candidates);
            for (int64_t i = 0; i < n; i++) found |= candidates[i] == in->keep_split;
        }
        if (kept && (n == 0 || found)) {
            split = in->keep_split;
            chosen_for = in->keep_for;
        } else {
            out->searched = n > 1;
            split = search(in, candidates, n, longest, packs, pack_tokens, out->pack_blocks, pack_counts, pack_req,
                           out->pack_entries);
            if (split < 0) {
                status = split == -1 ? PAT_PASS_NO_MEMORY : PAT_PASS_PYTHON;
                goto done;
            }
        }
    }
    int64_t items, pack_entries;
    pat_split_numbers(packs, pack_tokens, split, out->pack_blocks, pack_counts, out->splits, &items, &pack_entries);
    const int limited = in->limited != 0;
    if (chosen_for && limited && !fits(in, packs, out->splits, items, pack_entries, pack_req, pack_counts, scratch)) {
        /* the chosen length's plan overflows the buffers: choose again among the coarser candidates whose plans fit */
        if (n == 0) n = split_candidates(in, longest, planned, candidates);
        int64_t fitting = 0;
        for (int64_t i = 0; i < n; i++) {
            if (candidates[i] <= split) continue;
            int64_t c_items, c_entries;
            pat_split_numbers(packs, pack_tokens, candidates[i], out->pack_blocks, pack_counts, out->cut, &c_items,
                          &c_entries);
            if (fits(in, packs, out->cut, c_items, c_entries, pack_req, pack_counts, scratch))
                candidates[fitting++] = candidates[i]; /* in place: longest first, as the list was */
        }
        if (fitting) {
            out->coarser = 1;
            out->searched |= fitting > 1;
            split = search(in, candidates, fitting, longest, packs, pack_tokens, out->pack_blocks, pack_counts,
                           pack_req, out->pack_entries);
            if (split < 0) {
                status = split == -1 ? PAT_PASS_NO_MEMORY : PAT_PASS_PYTHON;
                goto done;
            }
            pat_split_numbers(packs, pack_tokens, split, out->pack_blocks, pack_counts, out->splits, &items,
                          &pack_entries);
        }
    }
    out->split_tokens = split;
    out->chosen_for_tokens = chosen_for;
    if (tail_split(in, packs, out->splits, items, pack_tokens, out->pack_blocks, out->cut, scratch)) {
        uint64_t t_items = 0, t_entries = 0;
        for (int64_t p = 0; p < packs; p++) {
            t_items += (uint64_t)out->cut[p] * (uint64_t)out->pack_blocks[p];
            t_entries += (uint64_t)out->cut[p] * (uint64_t)pack_counts[p];
        }
        if (!limited || fits(in, packs, out->cut, (int64_t)t_items, (int64_t)t_entries, pack_req, pack_counts,
                             scratch)) {
            memcpy(out->splits, out->cut, sizeof(int64_t) * (size_t)packs);
            items = (int64_t)t_items;
            pack_entries = (int64_t)t_entries;
        }
    }
    out->num_items = items;
    out->num_entries = pack_entries;
    if (limited && (items > in->max_items || pack_entries > in->max_entries)) status = PAT_PASS_OVER_LIMITS;
done:
    free(w);
    free(flags);
    return status;
}
