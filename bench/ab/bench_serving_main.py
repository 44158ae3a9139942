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
outputs per record, which ``calculate_metrics`` cannot pair with records in 0.5.17 either.

Beside ``--output-file X.jsonl`` it also writes ``X.times.tsv``: each finished request's send time, TTFT and latency on
the client's clock (``ab.bench_serving.read_client_times``), so that ``bench/loop_trace.py`` can tell the first
token's time outside the server's scheduler thread (to it, and from it to the client) from its time on it. Nothing
else changes; the arguments are bench_serving's own.

    python bench/ab/bench_serving_main.py --backend sglang ...      (same arguments as python -m sglang.bench_serving)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this folder would lead sys.path, and its modules would shadow the standard library's (profile.py
# shadows the `profile` that cProfile imports): bench_serving must see the interpreter's own path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]


#: Beside ``--output-file X.jsonl``, ``X.times.tsv``: a header with this process's ``time.time() -
#: time.perf_counter()``, then one line per finished request: its send time (bench_serving's
#: ``RequestFuncOutput.start_time``, ``perf_counter`` seconds), TTFT and latency (seconds), 1/0 for success. Read by
#: ``ab.bench_serving.read_client_times``.
CLIENT_TIMES_HEADER = "# client-times"
CLIENT_TIMES_SUFFIX = ".times.tsv"


def client_times_file(output_file: Path) -> Path:
    """The client-times file of the point whose result goes to ``output_file`` (``bench-x.jsonl`` ->
    ``bench-x.times.tsv``)."""
    return output_file.with_suffix(CLIENT_TIMES_SUFFIX)


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


def record_client_times(path: Path) -> None:
    """Wrap each of bench_serving's request functions so that every finished request appends its send time
    (``perf_counter``), TTFT, latency and success to ``path`` (header first: this process's wall - perf offset).
    Written as each request ends, so a run stopped part way keeps what it measured."""
    from sglang.benchmark import serving

    out = open(path, "w", buffering=1)  # noqa: SIM115 (open for the process's life; line-buffered)
    out.write(f"{CLIENT_TIMES_HEADER}\twall_minus_perf={time.time() - time.perf_counter():.6f}\n")

    def timed(func: Any) -> Any:
        async def request(*args: Any, **kwargs: Any) -> Any:
            result = await func(*args, **kwargs)
            out.write(f"{result.start_time:.6f}\t{result.ttft:.6f}\t{result.latency:.6f}\t{int(bool(result.success))}\n")
            return result

        return request

    for name, func in list(serving.ASYNC_REQUEST_FUNCS.items()):
        serving.ASYNC_REQUEST_FUNCS[name] = timed(func)


def output_file_arg(argv: list[str]) -> Path | None:
    """bench_serving's ``--output-file`` in ``argv`` (``--output-file X`` or ``--output-file=X``), else None."""
    for i, arg in enumerate(argv):
        if arg == "--output-file" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--output-file="):
            return Path(arg.split("=", 1)[1])
    return None


def main() -> None:
    patch_mooncake_records()
    output = output_file_arg(sys.argv[1:])
    if output is not None:
        record_client_times(client_times_file(output))
    from sglang.benchmark.serving import cli_main

    cli_main()


if __name__ == "__main__":
    main()
