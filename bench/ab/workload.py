"""Token-id workloads for the serving A/B (no tokenizer: requests carry ``input_ids``).

Two generators, both deterministic for a given seed:

* ``shared_prefix``: G groups x P prompts; every prompt of a group starts with that group's system prompt
  (``system_len`` tokens) and ends with its own question (``question_len`` tokens); fixed ``output_len``.
* ``mooncake``: the first N requests of the Mooncake conversation trace. Each 512-token block hash id becomes a fixed
  run of token ids derived from the id alone (equal ids -> equal tokens, so SGLang's radix cache sees the sharing);
  the last block is cut so that the prompt is exactly ``input_length`` tokens (optionally capped).

Token ids are drawn from ``[TOKEN_LO, TOKEN_HI)``, clear of Llama-3's special tokens (>= 128000).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The conversation trace shipped in the repository (data/traces/, Apache-2.0). The same path as
#: pat_sglang.experiments.workloads.DEFAULT_MOONCAKE_TRACE, not imported from there: that package pulls in torch,
#: which this client-side harness does not need.
DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "data" / "traces" / "mooncake_conversation_trace.jsonl"

TOKEN_LO = 1000
TOKEN_HI = 127_000
BLOCK_TOKENS = 512


@dataclass(frozen=True)
class Request:
    """One request: prompt token ids, how many tokens to generate, and a group label (prefix sharing)."""

    input_ids: tuple[int, ...]
    max_new_tokens: int
    group: str = ""
    arrival_s: float = 0.0


@dataclass
class Workload:
    """A named list of requests plus optional warm-up requests (sent first, one at a time, not measured)."""

    name: str
    requests: list[Request]
    warmup: list[Request] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.requests)


def _tokens(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(TOKEN_LO, TOKEN_HI) for _ in range(n))


def block_tokens(hash_id: int, n: int = BLOCK_TOKENS, salt: str = "mooncake") -> tuple[int, ...]:
    """The ``n`` token ids standing for trace block ``hash_id`` (a pure function of the id and salt)."""
    seed = int.from_bytes(hashlib.sha256(f"{salt}:{hash_id}".encode()).digest()[:8], "little")
    return _tokens(random.Random(seed), n)


def shared_prefix(
    groups: int, prompts_per_group: int, system_len: int, question_len: int, output_len: int, seed: int = 0
) -> Workload:
    """G x P prompts, each ``system_len`` group-shared tokens + ``question_len`` own tokens.

    One warm-up request per group (its system prompt + 1 token, 1 output token) fills the prefix cache first.
    """
    if min(groups, prompts_per_group, output_len) < 1 or min(system_len, question_len) < 0:
        raise ValueError("groups, prompts_per_group, output_len must be >= 1; lengths >= 0")
    rng = random.Random(seed)
    reqs: list[Request] = []
    warm: list[Request] = []
    for g in range(groups):
        system = _tokens(rng, system_len)
        warm.append(Request(system + _tokens(rng, 1), 1, group=f"g{g}"))
        for _ in range(prompts_per_group):
            reqs.append(Request(system + _tokens(rng, question_len), output_len, group=f"g{g}"))
    # Interleave groups so that a concurrency window mixes them (fixed order, seed-independent).
    order = sorted(range(len(reqs)), key=lambda i: (i % prompts_per_group, i // prompts_per_group))
    params = dict(groups=groups, prompts_per_group=prompts_per_group, system_len=system_len,
                  question_len=question_len, output_len=output_len, seed=seed)
    return Workload("shared_prefix", [reqs[i] for i in order], warm, params)


def load_trace(path: Path, n: int) -> list[dict]:
    """First ``n`` JSON lines of a Mooncake-format trace."""
    rows: list[dict] = []
    with open(path) as fh:
        for line in fh:
            if len(rows) >= n:
                break
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def mooncake_prompt(hash_ids: Sequence[int], input_length: int, block: int = BLOCK_TOKENS) -> tuple[int, ...]:
    """Prompt tokens for one trace row: the blocks of ``hash_ids`` concatenated, cut to ``input_length``.

    If the hash ids cover fewer tokens than ``input_length`` (it should not happen in the trace), the rest is filled
    from a block derived from the whole id list, so the result always has exactly ``input_length`` tokens.
    """
    out: list[int] = []
    for h in hash_ids:
        if len(out) >= input_length:
            break
        out.extend(block_tokens(int(h), block))
    k = 0
    while len(out) < input_length:
        out.extend(block_tokens(k, block, salt="fill:" + ",".join(map(str, hash_ids))))
        k += 1
    return tuple(out[:input_length])


def mooncake(
    path: Path,
    n: int,
    max_input_len: int | None = None,
    max_output_len: int | None = None,
    output_len: int | None = None,
) -> Workload:
    """The first ``n`` trace requests as token ids; inputs capped at ``max_input_len`` (keeping the prefix), outputs
    at ``max_output_len`` or all set to ``output_len``; arrival times kept (seconds) for an open-loop replay."""
    rows = load_trace(path, n)
    reqs: list[Request] = []
    t0 = rows[0]["timestamp"] if rows else 0
    for row in rows:
        length = int(row["input_length"])
        if max_input_len is not None:
            length = min(length, max_input_len)
        out_len = int(output_len if output_len is not None else row["output_length"])
        if max_output_len is not None:
            out_len = min(out_len, max_output_len)
        ids = [int(h) for h in row["hash_ids"]]
        reqs.append(Request(mooncake_prompt(ids, length), max(1, out_len), group=str(ids[0]) if ids else "",
                            arrival_s=(row["timestamp"] - t0) / 1000.0))
    params = dict(trace=str(path), n=len(rows), max_input_len=max_input_len, max_output_len=max_output_len,
                  output_len=output_len)
    return Workload("mooncake", reqs, [], params)


def shared_token_fraction(requests: Sequence[Request]) -> float:
    """Fraction of prompt tokens that a perfect prefix cache would not have to compute (sharing measure)."""
    seen: set[tuple[int, ...]] = set()
    total = saved = 0
    for r in requests:
        ids = r.input_ids
        total += len(ids)
        for start in range(0, len(ids), BLOCK_TOKENS):
            key = ids[: start + BLOCK_TOKENS]
            if len(key) == start + BLOCK_TOKENS and key in seen:
                saved += BLOCK_TOKENS
            seen.add(key)
    return saved / total if total else 0.0
