/* Where the rows of a prefix group stop agreeing, compiled for the host (pat_sglang/host_core.py loads it with ctypes).

   Role in pack-forward-merge: part of *pack*. The standalone plan() builds its prefix forest from the caller's flat
   kv_indices (pat_sglang/forest.py, PrefixForest.from_flat): rows that share a first slot form a group, and the
   group's node ends where two of its rows first differ. Rows agree on a range iff every two neighbours do, so the
   node's length is the minimum over neighbouring pairs of their first difference. The numpy version
   (forest._node_ends) gathers each row's window into a copy, compares the copies and takes an argmax: three passes
   over the group's tokens plus temporaries. Here each pair is compared in place, in memcmp-sized chunks, up to the
   shortest difference found so far in its group: about one read of each row's node tokens.

   pat_group_agreement: groups g = 0 .. groups-1; the rows of group g start at ind[row[i]] for i in
   [gptr[g], gptr[g + 1]) (element offsets, int64); width[g] (in, out): the positions every row of the group has
   from its start (its shortest row's end), lowered to the first position where two neighbouring rows differ. Every
   row[i] + width[g] lies within ind (the caller's invariant). elem_bytes: 4 (int32 slots) or 8 (int64). */

#include <stdint.h>
#include <string.h>

#define CHUNK_ELEMS 64 /* a chunk memcmp compares before the exact position is looked for inside it */

/* The first of the `width` elements (`elem` bytes each) where a and b differ, or width. */
static int64_t first_difference(const char *a, const char *b, int64_t width, int64_t elem) {
    int64_t j = 0;
    while (j + CHUNK_ELEMS <= width && memcmp(a + j * elem, b + j * elem, CHUNK_ELEMS * elem) == 0) j += CHUNK_ELEMS;
    for (; j < width; j++)
        if (memcmp(a + j * elem, b + j * elem, elem) != 0) return j;
    return width;
}

void pat_group_agreement(const void *ind, int64_t elem_bytes, const int64_t *row, const int64_t *gptr,
                         int64_t groups, int64_t *width) {
    const char *base = (const char *)ind;
    for (int64_t g = 0; g < groups; g++) {
        int64_t w = width[g];
        for (int64_t i = gptr[g] + 1; i < gptr[g + 1] && w > 0; i++) {
            const char *a = base + row[i - 1] * elem_bytes, *b = base + row[i] * elem_bytes;
            const int64_t k = first_difference(a, b, w, elem_bytes);
            if (k < w) w = k;
        }
        width[g] = w;
    }
}
