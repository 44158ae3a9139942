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

#endif
