"""How often the split the model picks would overflow the CUDA-graph buffers' partial slots (CPU; forty-first session).

Shared-prefix windows as level trees (GROUPS prompts of PROMPT tokens, BS requests with private leaves of LEAF tokens)
under seven head configurations, 16-bit and FP8 KV, planned without limits on an H200 (132 SMs); a window overflows
where its plan needs more items, entries or partial slots than the backend's buffers for that batch hold, with
``max_partials`` = PER_REQUEST x BS + 2 x target CTAs. Run from the repository root:

    .venv/bin/python docs/perf/host/2026-12-02-fortyfirst-partials-capacity.py 4 8 16
"""

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from pat_sglang.backend import graph_capacity  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402
from pat_sglang.planner import plan_forest  # noqa: E402
from pat_sglang.workloads import tree_batch  # noqa: E402

HEADS = [(32, 8), (28, 4), (64, 8), (40, 8), (48, 4), (64, 4), (32, 32)]
device = DeviceSpec(sm_count=132)
windows = []
for (hq, hkv), kv, bs, groups, prompt, leaf in itertools.product(
        HEADS, [None, torch.float8_e4m3fn], [64, 128, 256], [1, 4, 16], [1024, 4096, 16384], [64, 257, 1024]):
    heads = HeadConfig(hq, hkv, 128, torch.bfloat16, kv)
    batch = tree_batch([(groups, prompt), (bs, leaf)])
    plan = plan_forest(PrefixForest.from_flat(batch.kv_indptr, batch.kv_indices), heads, device)
    cap = graph_capacity(bs, device, heads)
    items = min(cap.max_items, 2 * bs + cap.split_items)  # StaticPlanBuffers.limits_for(bs)
    name = f"{hq}/{hkv} {'fp8' if kv else 'bf16'} bs{bs} {groups}x{prompt}+{leaf}"
    windows.append((name, bs, plan.num_items <= items, plan.num_partials, int(plan.item_req.shape[0])))
for per_request in map(int, sys.argv[1:] or ["4", "8", "16"]):
    over = []
    for name, bs, items_fit, partials, entries in windows:
        max_partials = per_request * bs + 2 * device.target_ctas
        if not (items_fit and partials <= max_partials and entries <= max_partials + bs):
            over.append(f"    {name}: {partials} partial slots of {max_partials}")
    print(f"max_partials = {per_request} x bs + 2 x {device.target_ctas}: {len(over)} of {len(windows)} windows "
          "overflow at the model's pick")
    print("\n".join(over[:8] + ([f"    ... {len(over) - 8} more"] if len(over) > 8 else [])))
