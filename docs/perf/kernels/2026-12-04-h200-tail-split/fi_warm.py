"""JIT-compile FlashInfer's decode modules (CUDA-core and tensor-core, bf16 and FP8 e4m3 KV, d128) on a tiny batch."""
import torch
import flashinfer

ws = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
for kv in (torch.bfloat16, torch.float8_e4m3fn):
    for tc in (False, True):
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=tc)
        b, n = 2, 64
        indptr = torch.tensor([0, n, 2 * n], dtype=torch.int32, device="cuda")
        idx = torch.arange(2 * n, dtype=torch.int32, device="cuda")
        w.plan(indptr, idx, torch.ones(b, dtype=torch.int32, device="cuda"), 32, 8, 128, 1,
               q_data_type=torch.bfloat16, kv_data_type=kv, sm_scale=0.088)
        k = torch.randn(2 * n, 1, 8, 128, device="cuda").to(kv)
        q = torch.randn(b, 32, 128, device="cuda", dtype=torch.bfloat16)
        extra = {"k_scale": 1.0, "v_scale": 1.0} if kv != torch.bfloat16 else {}
        w.run(q, (k, k), **extra)
        print("warm", kv, tc, flush=True)
