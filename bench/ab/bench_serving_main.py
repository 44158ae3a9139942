"""``python -m sglang.bench_serving``, with SGLang 0.5.17's Mooncake replay made to run.

In SGLang 0.5.17 the Mooncake replay hands ``sglang.benchmark.serving.benchmark`` plain dicts (trace records) where
the rest of the benchmark reads request objects: its multi-turn check reads ``input_requests[0].prompt`` before it
branches on ``--dataset-name mooncake``, and ``calculate_metrics`` reads ``input_requests[i].prompt_len`` (and the
text / vision split) of the i-th output. Every Mooncake replay stops with ``AttributeError: 'dict' object has no
attribute 'prompt'`` (seen on the H200, 2026-11-29). Here the records are :class:`MooncakeRecord`: still the dicts
the replay reads, with ``prompt = None`` (the multi-turn check then reads "not multi-turn", which a one-round
session is) and the prompt lengths of the request the replay built from them, recorded as it yields it (the replay
sorts the records by timestamp in place and yields one request per record in that order, so the i-th output is the
i-th record's). One round per session only (``--mooncake-num-rounds 1``, the default): several rounds make several
outputs per record, which ``calculate_metrics`` cannot pair with records in 0.5.17 either. Nothing else changes;
the arguments are bench_serving's own.

    python bench/ab/bench_serving_main.py --backend sglang ...      (same arguments as python -m sglang.bench_serving)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Run as a script, this folder would lead sys.path, and its modules would shadow the standard library's (profile.py
# shadows the `profile` that cProfile imports): bench_serving must see the interpreter's own path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]


class MooncakeRecord(dict):
    """One Mooncake trace record, as the replay reads it (a dict), with the attributes the metrics read."""

    prompt = None
    prompt_len = 0  # set when the replay yields this record's request
    text_prompt_len = 0
    vision_prompt_len = 0


def patch_mooncake_records() -> None:
    """Make SGLang's Mooncake dataset return :class:`MooncakeRecord` items and its replay record each request's
    prompt lengths on its record (idempotent)."""
    from sglang.benchmark import serving
    from sglang.benchmark.datasets import mooncake

    load = mooncake.MooncakeDataset.load
    if getattr(load, "_pat_records", False):
        return

    def load_records(self: Any, tokenizer: Any = None, model_id: Any = None) -> list[MooncakeRecord]:
        return [MooncakeRecord(r) for r in load(self, tokenizer, model_id)]

    replay = serving.get_mooncake_request_over_time

    async def replay_recording(input_requests: list, tokenizer: Any, slowdown_factor: float, num_rounds: int):
        if num_rounds != 1:
            raise SystemExit("bench_serving_main: Mooncake replays of one round per session only (see its docstring)")
        i = 0
        async for row in replay(input_requests, tokenizer, slowdown_factor, num_rounds):
            record = input_requests[i]  # sorted by timestamp in place before the first yield
            record.prompt_len, record.text_prompt_len = row.prompt_len, row.text_prompt_len
            record.vision_prompt_len = row.vision_prompt_len
            i += 1
            yield row

    load_records._pat_records = True  # type: ignore[attr-defined]
    mooncake.MooncakeDataset.load = load_records
    serving.get_mooncake_request_over_time = replay_recording


def main() -> None:
    patch_mooncake_records()
    from sglang.benchmark.serving import cli_main

    cli_main()


if __name__ == "__main__":
    main()
