"""The main job (``make demo``): plan and run prefix-aware decode attention on a shared-prefix batch.

A realistic decode step: one system prompt shared by every request, a few tool templates below it
shared by groups of requests, and a unique suffix per request (prompt tail + generated tokens), laid
out in a paged SGLang-style KV pool. It plans the batch (pack), runs forward + merge (the NVRTC kernels
on a CUDA GPU, the torch reference executor on the CPU), checks the result against plain per-request
attention in float64, and prints the plan and the KV bytes PAT reads against per-request decode.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from . import HeadConfig, naive_decode, plan_forest, run
from .config import DeviceSpec
from .forest import PrefixForest


def shared_prefix_batch(
    batch: int, system_tokens: int, templates: int, template_tokens: int, own_tokens: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """kv_indptr, kv_indices and pool size of a system prompt / tool template / own suffix batch."""
    total = system_tokens + templates * template_tokens + batch * own_tokens
    pool = torch.randperm(total + 64, generator=gen)[:total]  # scattered slots, as in a busy pool
    system = pool[:system_tokens]
    tmpl = [
        pool[system_tokens + t * template_tokens : system_tokens + (t + 1) * template_tokens] for t in range(templates)
    ]
    base = system_tokens + templates * template_tokens
    rows = []
    for r in range(batch):
        own_len = own_tokens - (r * 7) % max(1, own_tokens // 4)  # requests at different decode positions
        own = pool[base + r * own_tokens : base + r * own_tokens + own_len]
        rows.append(torch.cat([system, tmpl[r % templates], own]))
    indptr = torch.tensor([0] + [len(x) for x in rows]).cumsum(0)
    return indptr, torch.cat(rows), total + 64


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--system-tokens", type=int, default=2048)
    ap.add_argument("--templates", type=int, default=4)
    ap.add_argument("--template-tokens", type=int, default=512)
    ap.add_argument("--own-tokens", type=int, default=256)
    ap.add_argument("--heads", default="32/8", help="q heads / kv heads (default Llama-3-8B)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    hq, hkv = (int(x) for x in args.heads.split("/"))
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    indptr, indices, num_slots = shared_prefix_batch(
        args.batch, args.system_tokens, args.templates, args.template_tokens, args.own_tokens, gen
    )
    heads = HeadConfig(hq, hkv, args.head_dim, dtype)
    dev_spec = DeviceSpec.from_torch(device) if device.type == "cuda" else DeviceSpec()

    t0 = time.perf_counter()
    forest = PrefixForest.from_flat(indptr, indices)
    plan = plan_forest(forest, heads, dev_spec)
    plan_us = (time.perf_counter() - t0) * 1e6

    q = torch.randn(args.batch, hq, args.head_dim, generator=gen).to(dtype)
    k = torch.randn(num_slots, hkv, args.head_dim, generator=gen).to(dtype)
    v = torch.randn(num_slots, hkv, args.head_dim, generator=gen).to(dtype)
    scale = 1.0 / math.sqrt(args.head_dim)
    executor = "NVRTC kernels" if device.type == "cuda" else "torch reference executor (no GPU)"
    out = run(plan.to(device), q.to(device), k.to(device), v.to(device), scale).cpu()
    ref = naive_decode(q, k, v, indptr, indices, scale)
    rel_err = float((out.double() - ref).norm() / ref.norm())
    max_err = float((out.double() - ref).abs().max())

    s = plan.stats
    print(f"pat-sglang demo: batch {args.batch}, heads {hq}/{hkv}, head_dim {args.head_dim}, {dtype}, {executor}")
    print(
        f"tree: system prompt {args.system_tokens} tokens -> {args.templates} tool templates of "
        f"{args.template_tokens} -> own suffixes up to {args.own_tokens}"
    )
    print(f"forest: {forest.num_nodes} nodes, {forest.unique_tokens()} unique tokens, {forest.request_tokens()} "
          f"request tokens; planned in {plan_us:.0f} us")
    print(f"plan: {len(plan.packs)} packs, {s.num_items} work items, {s.num_partials} partials; shared packs:")
    shared = [p for p in plan.packs if len(p.requests) > 1]
    print(plan.describe().splitlines()[0])
    for i, p in enumerate(plan.packs):
        if len(p.requests) > 1:
            print(f"{i:>4} {p.num_tokens:>7} {len(p.requests):>5} {p.row_blocks:>6} {p.splits:>6} {p.tile_m:>6}")
    print(f"     ... and {len(plan.packs) - len(shared)} single-request packs")
    mb = 1e6
    print(
        f"KV bytes per layer: per-request decode {s.kv_bytes_per_request / mb:.1f} MB, "
        f"PAT {s.kv_bytes_planned / mb:.1f} MB (+{s.partial_bytes / mb:.2f} MB partials), "
        f"unique floor {s.kv_bytes_unique / mb:.1f} MB: "
        f"{s.kv_bytes_per_request / (s.kv_bytes_planned + s.partial_bytes):.1f}x fewer bytes"
    )
    tol = 2e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-5
    print(f"check vs per-request float64 attention: max abs error {max_err:.2e}, relative {rel_err:.2e} "
          f"({'OK' if rel_err < tol else 'FAILED'}, bound {tol:g})")
    return 0 if rel_err < tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
