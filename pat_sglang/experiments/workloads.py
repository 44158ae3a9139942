"""Request workloads for the radix-cache replay: the Mooncake trace and two synthetic shapes.

Role in pack-forward-merge: none at run time. These produce the decode batches whose prefix sharing the
*pack* stage exploits, so the replay (``replay.py``) can measure how much KV traffic PAT would save.

A request is a compact spec: an arrival time and a list of (segment id, length) runs. Segment id ``s``
stands for the token ids ``s * SEGMENT_STRIDE_TOKENS + [0, length)``, so two requests whose segment lists
agree give equal token ids exactly as far as they agree (and a shorter run of the same id is a prefix of a
longer one: the Mooncake trace's partial last block). Token arrays are only built when a request is
admitted, so memory stays bounded by the running batch, not by the trace.
"""

from __future__ import annotations

import json
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEGMENT_STRIDE_TOKENS = 1 << 24  # token-id space of one segment id: segments are never longer than this
# Generated (output) tokens live above every prompt token id; each request gets its own run, so outputs are
# private KV exactly as in a real server (sampled text does not match another request's prompt here).
OUTPUT_TOKEN_BASE = 1 << 52
MOONCAKE_BLOCK_TOKENS = 512  # tokens behind one hash id in the Mooncake trace release
# The trace ships in the repository (data/traces/, Apache-2.0, see its README); an installed wheel does not carry it,
# so from an installed package pass the path explicitly (``--trace`` / ``load_mooncake(path)``).
DEFAULT_MOONCAKE_TRACE = Path(__file__).resolve().parents[2] / "data" / "traces" / "mooncake_conversation_trace.jsonl"


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload: when it arrives, what its prompt is made of, how many tokens it generates."""

    rid: int
    arrival_ms: float
    segments: tuple[tuple[int, int], ...]  # (segment id, tokens), in prompt order
    output_len: int  # generated tokens; the first comes out of prefill, the rest out of decode steps

    @property
    def input_len(self) -> int:
        return sum(n for _, n in self.segments)

    def prompt_tokens(self) -> array:
        """The prompt's token ids as ``array('q')``, the type SGLang's ``RadixKey`` compares."""
        # numpy + frombytes: array.extend(range(...)) costs about 1 ms per 12k-token prompt
        parts = [np.arange(n, dtype=np.int64) + seg * SEGMENT_STRIDE_TOKENS for seg, n in self.segments]
        out = array("q")
        out.frombytes(np.concatenate(parts).tobytes())
        return out

    def output_tokens(self, count: int) -> array:
        """The first ``count`` generated token ids (private to this request)."""
        base = OUTPUT_TOKEN_BASE + self.rid * SEGMENT_STRIDE_TOKENS
        out = array("q")
        out.frombytes(np.arange(base, base + count, dtype=np.int64).tobytes())
        return out


def _check(spec: RequestSpec) -> RequestSpec:
    if spec.output_len < 1:
        raise ValueError(f"request {spec.rid}: output_len must be >= 1, got {spec.output_len}")
    if spec.input_len < 1:
        raise ValueError(f"request {spec.rid}: empty prompt")
    for seg, n in spec.segments:
        if seg < 0 or not 0 < n <= SEGMENT_STRIDE_TOKENS:
            raise ValueError(f"request {spec.rid}: bad segment ({seg}, {n})")
    return spec


def load_mooncake(
    path: str | Path = DEFAULT_MOONCAKE_TRACE,
    limit: int | None = None,
    time_scale: float = 1.0,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
) -> list[RequestSpec]:
    """Read a Mooncake trace (one JSON object a line: timestamp ms, input_length, output_length, hash_ids).

    Each hash id becomes ``block_tokens`` tokens; the last block holds what ``input_length`` leaves (it may be
    partial). Arrival times are multiplied by ``time_scale`` (0.5 = arrivals twice as dense)."""
    if time_scale <= 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Mooncake trace not found: {path} (the repository ships it as "
            f"data/traces/mooncake_conversation_trace.jsonl; pass another file with --trace PATH, "
            f"or load_mooncake(path=...))"
        )
    specs: list[RequestSpec] = []
    with open(path) as f:
        for line in f:
            if limit is not None and len(specs) >= limit:
                break
            if not line.strip():
                continue
            rec = json.loads(line)
            ids = [int(h) for h in rec["hash_ids"]]
            n_in = int(rec["input_length"])
            last = n_in - block_tokens * (len(ids) - 1)
            if not ids or not 0 < last <= block_tokens:
                raise ValueError(
                    f"trace line {len(specs)}: input_length {n_in} does not fit {len(ids)} blocks of {block_tokens}"
                )
            segs = tuple((h, block_tokens) for h in ids[:-1]) + ((ids[-1], last),)
            rid = len(specs)
            specs.append(
                _check(RequestSpec(rid, float(rec["timestamp"]) * time_scale, segs, int(rec["output_length"])))
            )
    return specs


def generated_shared_prefix(
    num_groups: int = 64,
    prompts_per_group: int = 16,
    system_prompt_len: int = 2048,
    question_len: int = 128,
    output_len: int = 256,
    shuffle: bool = True,
    seed: int = 0,
) -> list[RequestSpec]:
    """SGLang's ``generated-shared-prefix`` benchmark shape (``sglang.bench_serving --dataset-name
    generated-shared-prefix``, defaults of 0.5.17 with ``range_ratio=1``): ``num_groups`` system prompts, each
    followed by ``prompts_per_group`` distinct questions; every request arrives at t=0 (request rate inf) and
    the list is shuffled as the benchmark does unless ``shuffle=False``."""
    if min(num_groups, prompts_per_group, system_prompt_len, question_len, output_len) < 1:
        raise ValueError("generated-shared-prefix sizes must all be >= 1")
    shapes = []
    for g in range(num_groups):
        for p in range(prompts_per_group):
            question_seg = num_groups + g * prompts_per_group + p  # unique per request, disjoint from groups
            shapes.append(((g, system_prompt_len), (question_seg, question_len)))
    if shuffle:
        random.Random(seed).shuffle(shapes)
    return [_check(RequestSpec(i, 0.0, segs, output_len)) for i, segs in enumerate(shapes)]


def rollout(
    num_prompts: int = 32,
    samples_per_prompt: int = 8,
    prompt_len: int = 1024,
    min_gen_len: int = 128,
    max_gen_len: int = 1024,
    seed: int = 0,
) -> list[RequestSpec]:
    """Beam search / RL rollout shape: ``num_prompts`` prompts, each sampled ``samples_per_prompt`` times
    (``n=S`` parallel sampling: the samples share the prompt and generate private tokens). All arrive at t=0,
    samples of one prompt adjacent; generated lengths are uniform in [min_gen_len, max_gen_len] (seeded)."""
    if min(num_prompts, samples_per_prompt, prompt_len, min_gen_len) < 1 or max_gen_len < min_gen_len:
        raise ValueError("rollout sizes must be >= 1 and max_gen_len >= min_gen_len")
    rng = np.random.default_rng(seed)
    gen = rng.integers(min_gen_len, max_gen_len + 1, size=num_prompts * samples_per_prompt)
    specs = []
    for p in range(num_prompts):
        for s in range(samples_per_prompt):
            rid = p * samples_per_prompt + s
            specs.append(_check(RequestSpec(rid, 0.0, ((p, prompt_len),), int(gen[rid]))))
    return specs
