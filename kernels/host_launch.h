/* pat_graph_launch (host_launch.c): one eager launch of a plan's CUDA graph; its return codes, which
   pat_sglang/launch.py reads (GRAPH_LAUNCH_CAPTURING, GRAPH_LAUNCH_STAGES). */
#ifndef PAT_HOST_LAUNCH_H
#define PAT_HOST_LAUNCH_H

#include <stdint.h>

#define PAT_LAUNCH_CAPTURING (-1) /* the stream is being captured: nothing done */
#define PAT_LAUNCH_STAGES 4       /* a failure returns CUresult * PAT_LAUNCH_STAGES + its stage (1-3) */

int64_t pat_graph_launch(void *const *fns, void *exec, void *const *nodes, void *const *params, int64_t n,
                         void *stream);

#endif
