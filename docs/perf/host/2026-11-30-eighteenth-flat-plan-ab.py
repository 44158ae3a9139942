"""from_flat and pat_sglang.plan of the checkout in the working directory (run it from that checkout's root): per case,
the least of 5 medians of 100 runs (a contested VM inflates single medians). Cases: bench/plan_speed.py's 256 x 4k
private, shared2048 and levels, plus ragged2048 (the shared 2048-token prefix, then 1536-2560 private tokens each) and
tiny (8 requests of 5 tokens sharing 3: numpy call overhead only).

    cd <checkout> && .venv/bin/python <this file>
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path.cwd()), str(Path.cwd() / "bench")]

from plan_speed import flat_cases, median_us  # noqa: E402

import pat_sglang  # noqa: E402
from pat_sglang.config import DeviceSpec, HeadConfig  # noqa: E402
from pat_sglang.forest import PrefixForest  # noqa: E402


def main() -> int:
    heads, device = HeadConfig(32, 8, 128, torch.bfloat16), DeviceSpec()
    cases = {name: case for name, case in flat_cases().items() if name != "ragged2048"}
    gen = np.random.default_rng(1)
    lengths = gen.integers(1536, 2561, 256) + 2048
    prefix = gen.permutation(10**7)[:2048]
    own = gen.permutation(10**7)[: int((lengths - 2048).sum())] + 10**7
    rows = np.split(own, np.cumsum(lengths - 2048)[:-1])
    indptr = torch.zeros(257, dtype=torch.int32)
    indptr[1:] = torch.from_numpy(np.cumsum(lengths).astype(np.int32))
    cases["ragged2048"] = (indptr, torch.from_numpy(np.concatenate([np.r_[prefix, r] for r in rows]).astype(np.int32)))
    tiny = [[1, 2, 3, 100 + r, 7] for r in range(8)]
    cases["tiny"] = (torch.arange(9, dtype=torch.int32) * 5, torch.tensor(sum(tiny, []), dtype=torch.int32))
    print(f"{pat_sglang.__file__}")
    for name, (ip, ind) in cases.items():
        f = min(median_us(lambda: PrefixForest.from_flat(ip, ind), 100) for _ in range(5))  # noqa: B023
        p = min(median_us(lambda: pat_sglang.plan(ip, ind, heads, device), 100) for _ in range(5))  # noqa: B023
        print(f"{name:<12} from_flat {f:7.1f}  plan {p:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
