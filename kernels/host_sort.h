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

#define PAT_STABLE_SORT(name, type, BEFORE)                                                              \
    static void name(type *x, type *tmp, int64_t n, const void *ctx) {                                  \
        type *src = x, *dst = tmp;                                                                       \
        for (int64_t width = 1; width < n; width *= 2) {                                                 \
            for (int64_t lo = 0; lo < n; lo += 2 * width) {                                              \
                const int64_t mid = lo + width < n ? lo + width : n;                                     \
                const int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;                              \
                int64_t i = lo, j = mid, k = lo;                                                         \
                while (i < mid && j < hi) dst[k++] = BEFORE(&src[j], &src[i], ctx) ? src[j++] : src[i++]; \
                while (i < mid) dst[k++] = src[i++];                                                     \
                while (j < hi) dst[k++] = src[j++];                                                      \
            }                                                                                            \
            type *swap = src;                                                                            \
            src = dst;                                                                                   \
            dst = swap;                                                                                  \
        }                                                                                                \
        if (src != x) memcpy(x, src, sizeof(type) * (size_t)n);                                          \
        (void)ctx;                                                                                       \
    }

/* PAT_RUN_SORT(name, type, BEFORE) defines
       static void name(type *x, type *tmp, int64_t *runs, int64_t n, const void *ctx)
   the same sort for input that is mostly in order already: it finds the runs of x[0, n) in which no element is BEFORE
   the one ahead of it, then merges neighbouring runs pairwise until one is left (a run of k runs costs log2(k)
   passes instead of log2(n)); runs holds n + 1 more entries. Stable as PAT_STABLE_SORT, so the two give the same
   order for the same BEFORE and input. */
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
            for (int64_t r = 0; r < count; r += 2) {                                                     \
                const int64_t lo = runs[r], mid = runs[r + 1];                                           \
                const int64_t hi = r + 1 < count ? runs[r + 2] : mid;                                    \
                int64_t i = lo, j = mid, k = lo;                                                         \
                while (i < mid && j < hi) dst[k++] = BEFORE(&src[j], &src[i], ctx) ? src[j++] : src[i++]; \
                while (i < mid) dst[k++] = src[i++];                                                     \
                while (j < hi) dst[k++] = src[j++];                                                      \
                runs[merged++] = lo;                                                                     \
            }                                                                                            \
            runs[merged] = n;                                                                            \
            count = merged;                                                                              \
            type *swap = src;                                                                            \
            src = dst;                                                                                   \
            dst = swap;                                                                                  \
        }                                                                                                \
        if (src != x) memcpy(x, src, sizeof(type) * (size_t)n);                                          \
        (void)ctx;                                                                                       \
    }

#endif
