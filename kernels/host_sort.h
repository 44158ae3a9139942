/* The host library's one stable sort (kernels/host_rows.c, host_simulate.c and host_items.c include it;
   pat_sglang/host_core.py writes it beside them when it compiles them).

   PAT_STABLE_SORT(name, type, BEFORE) defines
       static void name(type *x, type *tmp, int64_t n, const void *ctx)
   a bottom-up merge sort of x[0, n), tmp holding n more elements: stable, so an element moves ahead of an earlier one
   only where BEFORE(&later, &earlier, ctx) holds. Bottom-up merging in place of glibc's qsort, which allocates and
   calls back a comparison per step (~20 us of the 256 singleton leaves of a batch without sharing, this ~3 us); a
   macro so that each file's comparison is inlined into its sort. */
#ifndef PAT_HOST_SORT_H
#define PAT_HOST_SORT_H

#include <stdint.h>
#include <string.h>

/* Merges src[lo, mid) and src[mid, hi) into dst[lo, hi), stably: an element of the second run goes first only where
   BEFORE(its, the first run's) holds. The one merge both sorts below make. */
#define PAT_MERGE_INTO(dst, src, lo, mid, hi, BEFORE, ctx)                                                   \
    do {                                                                                                     \
        int64_t i_ = (lo), j_ = (mid), k_ = (lo);                                                            \
        while (i_ < (mid) && j_ < (hi)) (dst)[k_++] = BEFORE(&(src)[j_], &(src)[i_], ctx) ? (src)[j_++] : (src)[i_++]; \
        while (i_ < (mid)) (dst)[k_++] = (src)[i_++];                                                        \
        while (j_ < (hi)) (dst)[k_++] = (src)[j_++];                                                         \
    } while (0)

/* After a pass: the merged array is the next pass's source. At the end: the result copied to x where the passes left
   it in the scratch. */
#define PAT_PASS_DONE(type, src, dst) \
    do {                              \
        type *swap_ = (src);          \
        (src) = (dst);                \
        (dst) = swap_;                \
    } while (0)
#define PAT_SORTED_INTO(x, src, n) \
    if ((src) != (x)) memcpy((x), (src), sizeof(*(x)) * (size_t)(n))

#define PAT_STABLE_SORT(name, type, BEFORE)                                                              \
    static void name(type *x, type *tmp, int64_t n, const void *ctx) {                                  \
        type *src = x, *dst = tmp;                                                                       \
        for (int64_t width = 1; width < n; width *= 2) {                                                 \
            for (int64_t lo = 0; lo < n; lo += 2 * width) {                                              \
                const int64_t mid = lo + width < n ? lo + width : n;                                     \
                PAT_MERGE_INTO(dst, src, lo, mid, lo + 2 * width < n ? lo + 2 * width : n, BEFORE, ctx); \
            }                                                                                            \
            PAT_PASS_DONE(type, src, dst);                                                               \
        }                                                                                                \
        PAT_SORTED_INTO(x, src, n);                                                                      \
        (void)ctx;                                                                                       \
    }

/* PAT_RUN_SORT(name, type, BEFORE) defines
       static void name(type *x, type *tmp, int64_t *runs, int64_t n, const void *ctx)
   the same sort for input that is mostly in order already: it finds the runs of x[0, n) in which no element is BEFORE
   the one ahead of it, then merges neighbouring runs pairwise until one is left (k runs cost log2(k) passes instead of
   log2(n)); runs holds n + 1 more entries. Stable as PAT_STABLE_SORT, so the two give the same order for the same
   BEFORE and input. */
#define PAT_RUN_SORT(name, type, BEFORE)                                                                 \
    static void name(type *x, type *tmp, int64_t *runs, int64_t n, const void *ctx) {                   \
        int64_t count = 0;                                                                               \
        runs[count++] = 0;                                                                               \
        for (int64_t i = 1; i < n; i++)                                                                  \
            if (BEFORE(&x[i], &x[i - 1], ctx)) runs[count++] = i;                                        \
        runs[count] = n; /* run r: [runs[r], runs[r + 1]) */                                             \
        type *src = x, *dst = tmp;                                                                       \
        while (count > 1) {                                                                              \
            int64_t merged = 0;                                                                          \
            for (int64_t r = 0; r < count; r += 2) { /* runs[merged] is written after runs[r..r+2] are read */ \
                const int64_t lo = runs[r], mid = runs[r + 1];                                           \
                PAT_MERGE_INTO(dst, src, lo, mid, r + 1 < count ? runs[r + 2] : mid, BEFORE, ctx);       \
                runs[merged++] = lo;                                                                     \
            }                                                                                            \
            runs[merged] = n;                                                                            \
            count = merged;                                                                              \
            PAT_PASS_DONE(type, src, dst);                                                               \
        }                                                                                                \
        PAT_SORTED_INTO(x, src, n);                                                                      \
        (void)ctx;                                                                                       \
    }

#endif
