"""Graph-replay time of the merge at the forward's tail (one launch, ``tail-merge.diff`` applied) against the separate
merge kernel, and both outputs against float64 attention after replays (the counts must return to zero). Run from the
repository root with the diff applied: ``PYTHONPATH=$PWD python3 <this file> a128 a64 b e gsp256 mooncake96``."""
import sys

import numpy as np
import torch

sys.path.insert(0, "bench")  # run from the repository root
from bench_kernels import time_graph  # noqa: E402
from tile_sweep import case_batch  # noqa: E402

from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.kernels import plan_launch  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402
from pat_sglang.reference import naive_decode  # noqa: E402
from pat_sglang.workloads import make_qkv  # noqa: E402

heads = HeadConfig(32, 8, 128, torch.bfloat16)
rng = np.random.default_rng(0)
print("case partials tail_merge_us merge_kernel_us ratio err_tail err_kernel")
for name in sys.argv[1:]:
    indptr, indices, slots = case_batch(name, rng)
    q, k, v = make_qkv(indptr.shape[0] - 1, 32, 8, 128, slots, torch.bfloat16, "cuda", seed=1)
    plan = plan_forest(PrefixForest.from_flat(indptr, indices), heads, DeviceSpec.from_torch()).to("cuda")
    sel = np.linspace(0, q.shape[0] - 1, 8).astype(int)
    ip = indptr.tolist()
    sub_ptr = torch.tensor([0] + list(np.cumsum([ip[i + 1] - ip[i] for i in sel])), dtype=torch.int64)
    sub_idx = torch.cat([indices[ip[i] : ip[i + 1]] for i in sel])
    ref = naive_decode(q[sel].cpu().double(), k.cpu().double(), v.cpu().double(), sub_ptr, sub_idx, 0.088)
    launch = plan_launch(plan, q.device)
    errs = []
    times = []
    for fused in (True, False):
        if not fused:
            launch.fused = False
            launch.fwd.merge_count = None
        out = torch.full_like(q, float("nan"))
        for _ in range(3):  # replays: the counts must be back at zero after each
            out.fill_(float("nan"))
            launch(q, k, v, out, 0.088)
        torch.cuda.synchronize()
        errs.append(float((out[sel].double().cpu() - ref).norm() / ref.norm()))
        times.append(time_graph(lambda _, out=out, launch=launch, q=q, k=k, v=v: launch(q, k, v, out, 0.088), 1, 30))
        out.fill_(float("nan"))
        launch(q, k, v, out, 0.088)
        torch.cuda.synchronize()
        errs[-1] = max(errs[-1], float((out[sel].double().cpu() - ref).norm() / ref.norm()))  # after graph replays
    ratio = times[0] / times[1]
    print(f"{name} {plan.num_partials} {times[0]:.1f} {times[1]:.1f} {ratio:.3f} {errs[0]:.1e} {errs[1]:.1e}")
