"""JIT-compile FlashInfer's decode modules (CUDA-core and tensor-core) for one (q/KV dtype, head dim) on a tiny batch."""
import sys

import flashinfer
import torch

dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[sys.argv[1]]
d = int(sys.argv[2])
ws = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
for tc in (False, True):
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=tc)
    b, n = 2, 64
    indptr = torch.tensor([0, n, 2 * n], dtype=torch.int32, device="cuda")
    idx = torch.arange(2 * n, dtype=torch.int32, device="cuda")
    w.plan(indptr, idx, torch.ones(b, dtype=torch.int32, device="cuda"), 32, 8, d, 1,
           q_data_type=dtype, kv_data_type=dtype, sm_scale=d ** -0.5)
    k = torch.randn(2 * n, 1, 8, d, device="cuda").to(dtype)
    q = torch.randn(b, 32, d, device="cuda", dtype=dtype)
    w.run(q, (k, k))
    print("warm", dtype, d, tc, flush=True)
