"""Bench-only timestamps of SGLang's scheduler loop: where a request's first token waits, per backend, same hook.

Why: the serving sweep measures TTFT at the client (tokenizer, scheduler, GPU, detokenizer, HTTP together). When two
servers differ only in the decode attention backend and their TTFTs differ, the difference is on the scheduler thread,
and this says where: ``install()`` wraps four ``Scheduler`` methods of ``sglang.srt.managers.scheduler`` (SGLang 0.5.17)
and records, per call, its start and end (``time.perf_counter``, the clock of SGLang's own request time stats):

* ``recv``: ``process_input_requests`` with at least one request; the ids of the generate requests received;
* ``next``: ``get_next_batch_to_run``; the mode and size of the batch it chose;
* ``run``: ``run_batch``: the host side of a forward (``ForwardBatch.init_new``, the attention backend's metadata, the
  kernel or graph launches); the batch's mode, size, and request ids when it is a prefill (extend) batch;
* ``proc``: ``process_batch_result``: under the overlap scheduler it waits for that batch's GPU results, then hands out
  its tokens (a prefill's first token leaves here); the same fields as ``run``.

A request's path to its first token is then ``recv`` -> ``run`` of its prefill -> ``proc`` of that prefill (the k-th
``proc`` is the k-th ``run``'s: the overlap loop processes results in launch order), and between that ``run`` and its
``proc`` the loop launches the next batch (a decode batch the request has joined). ``bench/loop_trace.py`` reads the
files and splits each first token's server time into these parts.

With ``PAT_BENCH_LOOP_TRACE=<folder>`` in a server's environment, ``sitecustomize.py`` installs the hook in every
process of it; the scheduler writes ``<folder>/loop-<pid>.tsv``: a header line (``# loop-trace`` with the attention
backend, the pid and ``time.time() - time.perf_counter()`` at start, to place records on the wall clock), then one
tab-separated line per call (event, start s, end s, forward mode, batch size, comma-separated request ids or ``-``,
the scheduler thread's CPU seconds in the call, the seconds the process spent collecting garbage in it),
appended every ``FLUSH_INTERVAL_S`` seconds from the scheduler thread (the idle loop's polls flush the last ones).
The cost: a few microseconds per wrapped call.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__:  # the harness side (``ab.dummy_weights``)
    from .pat_bench_import_hook import install_patch
else:  # the server side: this folder's files are top-level modules
    from pat_bench_import_hook import install_patch

#: The environment variable naming the folder the traces go to (unset or empty: no hook).
ENV_VAR = "PAT_BENCH_LOOP_TRACE"
TARGET_MODULE = "sglang.srt.managers.scheduler"
FLUSH_INTERVAL_S = 2.0
HEADER = "# loop-trace"
EVENTS = ("recv", "next", "run", "proc")
_WRAPPED_ATTR = "_pat_bench_loop_trace"


class LoopTrace:
    """The records of one process, appended to its file every ``FLUSH_INTERVAL_S`` seconds."""

    def __init__(self, folder: Path, backend: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"loop-{os.getpid()}.tsv"
        self.lines: list[str] = []
        self.last_flush = time.perf_counter()
        offset = time.time() - time.perf_counter()
        with open(self.path, "a") as f:
            f.write(f"{HEADER}\tbackend={backend}\tpid={os.getpid()}\twall_minus_perf={offset:.6f}\n")

    def record(self, event: str, start: float, end: float, mode: str, size: int, rids: str, cpu_s: float,
               gc_s: float) -> None:
        self.lines.append(f"{event}\t{start:.6f}\t{end:.6f}\t{mode}\t{size}\t{rids}\t{cpu_s:.6f}\t{gc_s:.6f}\n")
        if end - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush(end)

    def flush(self, now: float | None = None) -> None:
        self.last_flush = time.perf_counter() if now is None else now
        if self.lines:
            with open(self.path, "a") as f:
                f.writelines(self.lines)
            self.lines.clear()


_trace: LoopTrace | None = None


class _GcClock:
    """Seconds this process spent in CPython's cyclic collector (a ``gc.callbacks`` entry, installed with the hook)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


_GC = _GcClock()


def _trace_for(scheduler: Any) -> LoopTrace:
    """The process's trace, made at the first wrapped call (the scheduler knows its backend by then)."""
    global _trace
    if _trace is None:
        args = getattr(scheduler, "server_args", None)
        backend = str(getattr(args, "attention_backend", None) or getattr(args, "decode_attention_backend", None))
        _trace = LoopTrace(Path(os.environ[ENV_VAR]), backend)
    return _trace


def _batch_fields(batch: Any) -> tuple[str, int, str]:
    """(forward mode, batch size, the request ids of a prefill batch or ``-``) of a ``ScheduleBatch`` (or None)."""
    if batch is None:
        return "none", 0, "-"
    mode = getattr(batch, "forward_mode", None)
    reqs = getattr(batch, "reqs", None) or ()
    extend = mode is not None and mode.is_extend()
    rids = ",".join(str(req.rid) for req in reqs) if extend else "-"
    return (mode.name if mode is not None else "?"), len(reqs), rids or "-"


def _wrap(method: Callable[..., Any], event: str, fields: Callable[[tuple, Any], tuple[str, int, str]] | None
          ) -> Callable[..., Any]:
    """``method`` timed; ``fields(args, result)`` gives the record's mode, size and ids (None: nothing recorded)."""

    @functools.wraps(method)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        gc_start, cpu_start, start = _GC.seconds, time.thread_time(), time.perf_counter()
        result = method(self, *args, **kwargs)
        end, cpu_end, gc_end = time.perf_counter(), time.thread_time(), _GC.seconds
        described = fields(args, result) if fields is not None else ("-", 0, "-")
        if described is not None:
            _trace_for(self).record(event, start, end, *described, cpu_end - cpu_start, gc_end - gc_start)
        elif _trace is not None and end - _trace.last_flush >= FLUSH_INTERVAL_S:
            _trace.flush(end)  # idle polls flush the last records of a busy period
        return result

    setattr(timed, _WRAPPED_ATTR, True)
    return timed


def _recv_fields(args: tuple, result: Any) -> tuple[str, int, str] | None:
    reqs = args[0] if args else ()
    if not reqs:
        return None  # the idle polls: nothing to place
    rids = [str(r.rid) for r in reqs if getattr(r, "rid", None) is not None and hasattr(r, "input_ids")]
    return "recv", len(reqs), ",".join(rids) or "-"


def _next_fields(args: tuple, result: Any) -> tuple[str, int, str] | None:
    batch = getattr(result, "batch_to_run", result)
    mode, size, _ = _batch_fields(batch)
    return mode, size, "-"


def _batch_arg_fields(args: tuple, result: Any) -> tuple[str, int, str] | None:
    return _batch_fields(args[0] if args else None)


_METHODS: dict[str, tuple[str, Callable[[tuple, Any], tuple[str, int, str] | None]]] = {
    "process_input_requests": ("recv", _recv_fields),
    "get_next_batch_to_run": ("next", _next_fields),
    "run_batch": ("run", _batch_arg_fields),
    "process_batch_result": ("proc", _batch_arg_fields),
}


def patch_module(module: ModuleType) -> None:
    """Wrap the ``Scheduler`` methods of ``_METHODS`` (once); a missing method is reported, not guessed at."""
    scheduler = getattr(module, "Scheduler", None)
    if scheduler is None:
        print(f"[pat-bench] {module.__name__} has no Scheduler: no loop trace", file=sys.stderr, flush=True)
        return
    for name, (event, fields) in _METHODS.items():
        method = getattr(scheduler, name, None)
        if method is None:
            print(f"[pat-bench] Scheduler.{name} missing: not traced", file=sys.stderr, flush=True)
        elif not getattr(method, _WRAPPED_ATTR, False):
            setattr(scheduler, name, _wrap(method, event, fields))
    print(f"[pat-bench] scheduler loop trace -> {os.environ.get(ENV_VAR)}", file=sys.stderr, flush=True)


def install() -> None:
    """Trace the scheduler loop of this process if ``PAT_BENCH_LOOP_TRACE`` names a folder."""
    if os.environ.get(ENV_VAR):
        if _GC not in gc.callbacks:
            gc.callbacks.append(_GC)
        install_patch(TARGET_MODULE, patch_module)
