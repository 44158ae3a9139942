"""Where the Python part of an eager CUDA ``run`` goes (a128), with the kernels and the launch stood in for and CPU
tensors of the same shapes: api.run's CUDA entry, ``launch_plan``, ``plan_launch``'s cache lookup, and
``PlanLaunch.__call__`` alone (best of 15 bursts of 2000 calls). Run from the checkout's root."""

import functools
import sys
import timeit
import types

import torch

sys.path.insert(0, ".")
import pat_sglang  # noqa: E402
from pat_sglang import api  # noqa: E402
from pat_sglang import kernels as K  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.workloads import make_qkv, standard_batch  # noqa: E402

heads = HeadConfig(32, 8, 128, torch.bfloat16)
b = standard_batch("a128")
plan = pat_sglang.plan(b.kv_indptr, b.kv_indices, heads, DeviceSpec())
q, k, v = make_qkv(b.batch, 32, 8, 128, b.num_slots, torch.bfloat16, "cpu", seed=1)
out = torch.empty_like(q)
variant = types.SimpleNamespace(threads=128, smem_bytes=0, max_tile_m=64, wide_stages=0)
kern = types.SimpleNamespace(forward=1, merge=2, wide=None, variant=variant)
tensors = {n: getattr(plan, n) for n in K._PLAN_TENSORS}
tensors["part_o"] = torch.empty((max(plan.num_partials, 1), 32, 128), dtype=torch.bfloat16)
tensors["part_lse"] = torch.empty((max(plan.num_partials, 1), 32))
pl = K.PlanLaunch(kern, heads, tensors, plan.num_items, plan.num_requests, merge=plan.num_partials > 0,
                  check_inputs=functools.partial(api.check_run_inputs, plan.heads, plan.num_requests, plan.max_slot))
pl.launch = lambda stream, device_index=None: None
K._raw_stream = lambda idx: 0
plan.__dict__["_launch"] = {(q.device, None): pl}
g = dict(api=api, plan=plan, q=q, k=k, v=v, out=out, pl=pl, K=K)
STATEMENTS = (
    "api._launch_plan()(plan, q, k, v, 0.1, out)",
    "K.launch_plan(plan, q, k, v, 0.1, out)",
    "K.plan_launch(plan, q.device, None)",
    "pl(q, k, v, out, 0.1)",
)
for stmt in STATEMENTS:
    best = min(timeit.repeat(stmt, globals=g, number=2000, repeat=15)) / 2000 * 1e6
    print(f"{best:6.2f} us  {stmt}")
