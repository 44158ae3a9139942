"""Python part of eager run on CUDA (launch stubbed), main vs branch, CPU tensors: api.run's CUDA branch emulated."""
import functools
import sys
import time
import types

import torch

sys.path.insert(0, ".")
import pat_sglang  # noqa: E402
from pat_sglang import api  # noqa: E402
from pat_sglang import kernels as K  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402

heads = HeadConfig(32, 8, 128, torch.bfloat16)
res = {}
for wl in ("a32", "a128", "e"):
    b = standard_batch(wl)
    plan = pat_sglang.plan(b.kv_indptr, b.kv_indices, heads, DeviceSpec())
    q, k, v = make_qkv(b.batch, 32, 8, 128, b.num_slots, torch.bfloat16, "cpu", seed=1)
    out = torch.empty_like(q)
    variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
    kern = types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
    tensors = {n: getattr(plan, n) for n in K._PLAN_TENSORS}
    tensors["part_o"] = torch.empty((max(plan.num_partials, 1), 32, 128), dtype=torch.bfloat16)
    tensors["part_lse"] = torch.empty((max(plan.num_partials, 1), 32))
    branch = hasattr(api, "_launch_plan")
    extra = {}
    if branch:
        extra["check_inputs"] = functools.partial(api.check_run_inputs, plan.heads, plan.num_requests, plan.max_slot)
    pl = K.PlanLaunch(kern, heads, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0, **extra)
    pl.launch = lambda stream, device_index=None: None
    K._raw_stream = lambda idx: 0
    plan.__dict__["_launch"] = {(q.device, None): pl}
    if branch:
        def call(plan=plan, q=q, k=k, v=v, out=out):
            return api._launch_plan()(plan, q, k, v, 0.1, out)
    else:
        def call(plan=plan, q=q, k=k, v=v, out=out):
            key = (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device)
            checked = plan.__dict__.setdefault("_checked_inputs", set())
            if key not in checked:
                api.check_run_inputs(plan, q, k, v)
                checked.add(key)
            from pat_sglang.kernels import launch_plan
            return launch_plan(plan, q, k, v, 0.1, out)
    call()
    r = []
    for _ in range(40):
        t0 = time.perf_counter()
        for _ in range(2000):
            call()
        r.append((time.perf_counter() - t0) / 2000 * 1e6)
    res[wl] = min(r)
print("branch" if branch else "main", {k: round(x, 2) for k, x in res.items()})
