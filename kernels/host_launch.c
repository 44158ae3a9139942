/* An eager launch of a plan's kernels as one CUDA graph, in one call from Python (pat_sglang/launch.py KernelGraph).

   Role in pack-forward-merge: the last step of run outside CUDA graphs (SGLang's eager decode: one call per layer).
   The graph executable of the plan's forward and merge is built once; each call writes the kernels' parameter values
   into its nodes and launches it, unless the stream is being captured into someone else's graph (then the caller
   launches the kernels one by one, as nodes of that graph). Through ctypes that is 2 + (kernels) driver calls of
   ~0.4-1 us of Python and ctypes each beside the driver's own work; here it is one call of the extension module
   (host_glue.c's graph_launch) that makes the same driver calls, through libcuda's function pointers, which the
   caller takes from its ctypes handle of libcuda (so this file links nothing of CUDA and builds on any host).

   fns: cuStreamIsCapturing, cuGraphExecKernelNodeSetParams_v2, cuGraphLaunch (in that order). nodes[k], params[k]:
   the graph's kernel nodes and their CUDA_KERNEL_NODE_PARAMS_v2 (the driver copies the values behind each one's
   kernelParams when it is set). Returns 0 when launched, PAT_LAUNCH_CAPTURING when the stream is being captured
   (nothing set, nothing launched), else a failed call's CUresult times PAT_LAUNCH_STAGES plus its stage (1: the
   capture query, 2: a node's parameters, 3: the launch; nothing is launched after a failure). */

#include <stdint.h>

#include "host_launch.h"

typedef int (*is_capturing_fn)(void *stream, int *status);
typedef int (*set_params_fn)(void *exec, void *node, const void *params);
typedef int (*graph_launch_fn)(void *exec, void *stream);

int64_t pat_graph_launch(void *const *fns, void *exec, void *const *nodes, void *const *params, int64_t n,
                         void *stream) {
    int status = 0;
    int err = ((is_capturing_fn)fns[0])(stream, &status);
    if (err) return (int64_t)err * PAT_LAUNCH_STAGES + 1;
    if (status) return PAT_LAUNCH_CAPTURING;
    for (int64_t k = 0; k < n; k++) {
        err = ((set_params_fn)fns[1])(exec, nodes[k], params[k]);
        if (err) return (int64_t)err * PAT_LAUNCH_STAGES + 2;
    }
    err = ((graph_launch_fn)fns[2])(exec, stream);
    return err ? (int64_t)err * PAT_LAUNCH_STAGES + 3 : 0;
}
