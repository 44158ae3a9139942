"""Serving sweep (issue 11): SGLang's own ``python -m sglang.bench_serving`` against one server per attention backend,
over several workloads and loads, resumable across device calls.

Per backend (default ``fa3,pat@fa3``; ``pat@NAME`` = pat with NAME serving prefill; the reference backend, default the
first, runs first) the harness

1. starts ``python -m sglang.launch_server`` on 127.0.0.1 with the dummy-weight model and the word-level tokenizer of
   ``ab/tokenizer.py`` (written next to the model's config.json under ``--served-model-dir``), offline; the dummy
   weights are ours by default (``--dummy-weights attn``, ``ab/dummy_weights/``: outputs that depend on attention),
   part of the server settings hash, so points measured with SGLang's flat ones are never mixed in;
2. sends the greedy check batch (token ids, temperature 0; kept in ``results.jsonl``, compared with the reference's
   in the report) and a short unmeasured warm-up at concurrency 64, so that JIT compiles and first-use costs stay out
   of every number;
3. runs every selected point not measured yet: one ``python -m sglang.bench_serving`` process each (its tqdm bar shows
   in our output; it flushes the prefix cache after its warm-up request), reads its JSON result and the server's
   "Decode batch" lines written meanwhile (decode step time at the largest running batch), and appends one line to
   ``<out>/results.jsonl``;
4. stops the server (its whole process group).

Then ``results.md``, ``results.csv`` and ``serving.png`` (TPOT and throughput against load) are written from all the
rows in ``results.jsonl``, and where a closed loop's TTFT goes from the per-request lines of ``logs/server-*.log``
(servers started with ``--enable-request-time-stats-logging``). ``--report-only`` and ``--merge`` read a folder's logs
from ``logs/`` or from ``logs.tgz`` and leave them packed there (``sweep.pack_logs``: committed evidence stays small,
since every device call carries the repository's tracked tree). ``--budget-s`` bounds the call: a point whose expected
time no longer fits is left for the next call (the same command again; measured points are skipped). ``--dry-run``
prints the plan and the bench_serving commands; ``--report-only`` rewrites the report; ``--warmup-only`` starts each
server once (JIT) and measures nothing. """

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from ab import bench_serving, client, report, sweep  # noqa: E402
from ab.server import (  # noqa: E402
    BackendLabel,
    ManagedProcess,
    ServerConfig,
    add_dummy_weights_option,
    add_server_args_option,
    backend_labels,
    dummy_weights_check,
    file_tag,
    free_port,
    gpu_name,
    log_size,
    read_from,
    server_args_joined,
    server_command,
    server_env,
    tail,
    wait_ready,
)
from ab.tokenizer import TOKENIZER_VERSION, build_served_model, served_model_id  # noqa: E402
from ab.workload import DEFAULT_TRACE, Workload, shared_prefix  # noqa: E402

# Seconds between PAT's stats lines on pat servers (unless the environment sets it): a point's PAT numbers start at the
# last line before it, so up to this long of the previous point's decode steps can be counted in it.
PAT_LOG_INTERVAL_S = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", type=backend_labels, default="fa3,pat@fa3",
                    help="comma-separated backend labels: NAME, pat@DELEGATE (DELEGATE serves prefill), "
                         "pat@DELEGATE+all (the dispatch gate off: PAT serves every decode batch)")
    ap.add_argument("--reference", default=None,
                    help="backend whose c256 capacity sets the x-loads and whose greedy outputs the others must match "
                         "(default: the first of --backends; give it explicitly when running the others alone)")
    ap.add_argument("--workloads", default="gsp,gsp-deep,mooncake,rollout,random")
    ap.add_argument("--loads", default=None,
                    help="comma-separated load labels for every selected workload (c<N>, x<F>, r<R>); default: "
                         "c64,c256 for all, plus x0.4,x0.7,x1.0 for gsp and mooncake")
    ap.add_argument("--capacity-load", default=sweep.CAPACITY_LOAD,
                    help="closed-loop point of the reference whose request throughput is the capacity of x-loads")
    ap.add_argument("--out", type=Path, default=None, help="default docs/perf/serving/<date>/")
    ap.add_argument("--prior", type=Path, action="append", default=[],
                    help="results.jsonl of earlier calls, merged into <out>/results.jsonl when that does not exist "
                         "yet (device calls write into a fresh folder)")
    ap.add_argument("--archive", type=Path, default=None,
                    help="when the run ends (done, cut short or failed), pack --out into this .tgz as one file "
                         "(members <out name>/...): the device returns a limited number of files per call, and a "
                         "sweep writes several per point")
    ap.add_argument("--redo", action="store_true", help="measure the selected points again even if measured")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each selected point up to this many times, every backend once per round in order "
                         "(fa3, pat, fa3, pat, ...: one server start per backend and round), so that a difference "
                         "between backends can be told from the spread between server instances (results.md: "
                         "'Repeated points'); a call cut short goes on where it stopped when called again")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and commands; start nothing")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite results.md/csv/png from results.jsonl (and <out>/logs/ or <out>/logs.tgz; the "
                         "folder's logs are left packed in logs.tgz)")
    ap.add_argument("--restep", action="store_true",
                    help="with --report-only: first recompute each point's step columns from <out>/logs/server-*.log "
                         "(the lines stamped within the point's run) with the current rule, and rewrite "
                         "results.jsonl; points the logs do not cover keep theirs")
    ap.add_argument("--merge", type=Path, nargs="+", default=[], metavar="CALL",
                    help="gather the folders of separate device calls (each its results.jsonl and logs/ or logs.tgz; "
                         "oldest first) into --out, then write the report as --report-only does (with --restep: "
                         "from the gathered server logs)")
    ap.add_argument("--warmup-only", action="store_true",
                    help="start each backend's server once (JIT compiles, greedy check), measure nothing")
    # model and server
    ap.add_argument("--model", type=Path, default=REPO / "configs/models/llama3-8b",
                    help="directory with the model's config.json (dummy weights)")
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "serving",
                    help="generated files (git-ignored; the device machine keeps them while warm): the served model "
                         "directory, module stubs, bench_serving's HOME")
    ap.add_argument("--served-model-dir", type=Path, default=None,
                    help="where config.json + the word-level tokenizer are written (default: under --cache-dir)")
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL for the replay")
    ap.add_argument("--mooncake-n", type=int, default=320, help="requests of the trace replayed (>= 300)")
    ap.add_argument("--cuda-graph-max-bs", type=int, default=256)
    ap.add_argument("--prefill-graphs", action="store_true",
                    help="keep SGLang's prefill CUDA graphs (its default; off here unless given: a server starts in "
                         "~65 s instead of ~327 s, but its prefills are launched one kernel at a time, ~20 ms of host "
                         "work per prefill on the H200, which TTFT then carries)")
    ap.add_argument("--max-running-requests", type=int, default=256,
                    help="server cap; with the CUDA-graph bs above, every decode step runs in a graph")
    ap.add_argument("--mem-fraction-static", type=float, default=0.80)
    ap.add_argument("--context-length", type=int, default=40960,
                    help="bench_serving's Mooncake prompts reach ~31k tokens (+ up to 2000 output) in the first "
                         "400 requests; written as max_position_embeddings into the served config (8192 in "
                         "configs/models: SGLang sizes the RoPE table by it)")
    add_server_args_option(ap)
    add_dummy_weights_option(ap)
    ap.add_argument("--port", type=int, default=31000, help="first port tried (127.0.0.1)")
    ap.add_argument("--seed", type=int, default=42, help="bench_serving --seed (its default) and server seed")
    # time
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock bound of this call")
    ap.add_argument("--startup-timeout-s", type=float, default=400.0,
                    help="a first FlashInfer start on a fresh machine JIT-compiles for ~280 s")
    ap.add_argument("--point-timeout-s", type=float, default=450.0, help="bound of one bench_serving run")
    ap.add_argument("--default-point-s", type=float, default=120.0,
                    help="expected time of a closed-loop point never measured by any backend")
    ap.add_argument("--expected-start-s", type=float, default=None,
                    help="seconds a server start is expected to take when budgeting a call (default: the backend's "
                         "last recorded start, which after a fresh machine's first start overestimates warm ones)")
    ap.add_argument("--min-server-s", type=float, default=150.0,
                    help="start a server for its greedy check or a warm-up only with this much budget left (a "
                         "server with pending points starts when one of them fits after the expected start)")
    ap.add_argument("--tqdm-interval-s", type=float, default=5.0, help="bench_serving's progress bar refresh")
    # greedy agreement (as ab_serving.py)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--check-tokens", type=int, default=32)
    ap.add_argument("--no-preflight", action="store_true", help="skip the 'import sglang.bench_serving' check")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the server and of bench_serving")
    args = ap.parse_args(server_args_joined(sys.argv[1:] if argv is None else argv))
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with the run (results.md lists every call)
    if args.mooncake_n < 1:
        ap.error("--mooncake-n must be >= 1")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------------------ setup
def selected_workloads(args: argparse.Namespace) -> list[sweep.SweepWorkload]:
    known = sweep.default_workloads(args.trace, args.mooncake_n)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(known)}")
    chosen = [known[n] for n in names]
    for w in chosen:
        if w.trace is not None and not w.trace.exists():
            raise SystemExit(f"Mooncake trace not found: {w.trace} (--trace PATH); bench_serving would download "
                             "one, which this harness never lets it do")
    return chosen


def selected_loads(args: argparse.Namespace, workloads: list[sweep.SweepWorkload]) -> dict[str, list[str]]:
    if args.loads:
        labels = [x.strip() for x in args.loads.split(",") if x.strip()]
        for label in labels:
            sweep.parse_load(label)
        return {w.name: labels for w in workloads}
    return {w.name: sweep.default_loads(w) for w in workloads}


def server_settings(args: argparse.Namespace, model_id: str) -> dict[str, object]:
    """What, besides the backend, shapes a measurement on the server side (hashed into every row's server_id).

    ``dummy_weights`` enters only when it is not "sglang": the rows measured before it existed (SGLang's weights)
    keep their server_id and stay comparable with ``--dummy-weights sglang``, never with the default "attn"."""
    settings: dict[str, object] = {
        "model": args.model.name, "served_model": model_id, "cuda_graph_max_bs": args.cuda_graph_max_bs,
        "max_running_requests": args.max_running_requests, "mem_fraction_static": args.mem_fraction_static,
        "context_length": args.context_length, "server_args": args.server_args, "seed": args.seed}
    if args.dummy_weights != "sglang":
        settings["dummy_weights"] = args.dummy_weights
    if args.prefill_graphs:  # only when on: the rows measured before the option keep their server_id
        settings["prefill_graphs"] = True
    return settings


def server_config(args: argparse.Namespace, backend: str, served: Path, port: int) -> ServerConfig:
    return ServerConfig(
        model_path=str(served), attention_backend=BackendLabel.parse(backend).attention_backend, port=port,
        cuda_graph_max_bs=args.cuda_graph_max_bs, mem_fraction_static=args.mem_fraction_static,
        context_length=args.context_length, max_running_requests=args.max_running_requests, random_seed=args.seed,
        skip_tokenizer_init=False, extra_args=tuple(args.server_args.split()) if args.server_args else (),
        python=args.python, dummy_weights=args.dummy_weights, prefill_cuda_graph=args.prefill_graphs,
    )


def rel(path: Path | str) -> str:
    """``path`` relative to the repository when inside it (commands in the report read the same on any machine)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def shown(cmd: list[str]) -> str:
    out = []
    for part in cmd:
        out.append(rel(part) if part.startswith("/") and Path(part).exists() else part)
    return " ".join(out)


def preflight(python: str, env: dict[str, str], timeout_s: float = 180.0) -> tuple[bool, str]:
    """Does ``import sglang.bench_serving`` work in the client environment? (Checked before any server starts.)"""
    try:
        res = subprocess.run([python, "-c", "import sglang.bench_serving"], env=env, capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"import took over {timeout_s:.0f} s"
    return res.returncode == 0, (res.stderr or res.stdout)[-1500:]


def check_workloads(seed: int, tokens: int) -> Workload:
    """The greedy-agreement batch of ab_serving.py (2 groups x 8 prompts, 1024-token shared system prompt)."""
    return shared_prefix(2, 8, 1024, 16, tokens, seed=seed + 1)


def warmup_workload(seed: int) -> Workload:
    """Unmeasured: prefill on cached prefixes, decode batches up to 64, then a sampled batch (JIT and first-use costs
    happen here)."""
    return shared_prefix(4, 16, 1024, 64, 16, seed=seed + 2)


# ------------------------------------------------------------------------------------------------------------ runs
class Sweep:
    """One call: the plan, the results file, the clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_s
        self.date = dt.date.today().isoformat()
        self.out: Path = args.out or REPO / "docs/perf/serving" / self.date
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = self.out / "logs"
        self.store = sweep.ResultStore(self.out / "results.jsonl", prior=args.prior)
        self.backends: list[str] = list(args.backends)
        self.reference = args.reference or self.backends[0]
        # the reference first: its c256 capacities set the x-loads of the others in the same call
        self.backends.sort(key=lambda b: b != self.reference)
        self.workloads = selected_workloads(args)
        self.loads = selected_loads(args, self.workloads)
        self.points = sweep.plan(self.backends, self.workloads, self.loads)
        self.wids = {w.name: sweep.workload_id(w) for w in self.workloads}
        cache: Path = args.cache_dir
        self.served = args.served_model_dir or cache / f"{args.model.name}-wordlevel-v{TOKENIZER_VERSION}"
        build_served_model(args.model, self.served, max_position_embeddings=args.context_length)
        self.model_id = served_model_id(self.served)
        self.server_id = sweep.short_hash(server_settings(args, self.model_id))
        stubs = bench_serving.stub_modules(cache / "stubs", python=args.python)
        # HOME of bench_serving: its generated-shared-prefix cache is keyed by tokenizer class name only
        self.client_env = bench_serving.offline_env(
            pythonpath_first=[stubs] if stubs else [], home=cache / f"home-{self.model_id}",
            tqdm_interval_s=args.tqdm_interval_s)
        self.gpu = gpu_name()
        self.failed_backends: list[str] = []
        self.round = 0  # the round being measured (--rounds), from 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def pending(self, backend: str) -> list[sweep.Point]:
        return [p for p in self.points if p.backend == backend and (
            self.args.redo or self.times_measured(p) <= self.round)]

    def times_measured(self, point: sweep.Point) -> int:
        """How often ``point`` was measured with these server settings (this folder's rows and ``--prior``'s): round
        r (from 0) measures the points measured at most r times, so a ``--rounds`` run cut short by its budget goes on
        where it stopped when called again."""
        key = sweep.point_key({"backend": point.backend, "workload": point.workload.name, "load": point.load,
                               "workload_id": self.wids[point.workload.name], "server_id": self.server_id})
        return sum(1 for row in self.store.rows if row.get("kind") == "point" and row.get("status") in sweep.MEASURED
                   and sweep.point_key(row) == key)

    def runnable(self, backend: str, todo: list[sweep.Point]) -> list[sweep.Point]:
        """``todo`` less the x-loads that must wait: no reference capacity yet, and (for the reference itself) its
        capacity point not among the points it is about to measure."""
        own_capacity = {p.workload.name for p in todo if p.load == self.args.capacity_load}
        return [p for p in todo if sweep.parse_load(p.load)[0] != "x" or self.rate_of(p) is not None
                or (backend == self.reference and p.workload.name in own_capacity)]

    def expected_start_s(self, backend: str) -> float:
        """``--expected-start-s`` if given, else the last start-up time of this backend's server (90 s if never
        started; a fresh machine's first start, JIT and all, can be twice a warm one's)."""
        if self.args.expected_start_s is not None:
            return self.args.expected_start_s
        row = self.store.latest("server", backend=backend, status="ok")
        return float(row["startup_s"]) if row and isinstance(row.get("startup_s"), (int, float)) else 90.0

    def rate_of(self, point: sweep.Point) -> float | None:
        capacity = sweep.reference_capacity(self.store, self.reference, point.workload.name,
                                            self.wids[point.workload.name], self.server_id, self.args.capacity_load)
        return sweep.target_rate(point.load, capacity)

    def bench_command(self, point: sweep.Point, port: int, output_file: Path) -> tuple[list[str], dict[str, object]]:
        """bench_serving's argument list for ``point`` and what the row records about its load."""
        kind, value = sweep.parse_load(point.load)
        info: dict[str, object] = {}
        if kind == "c":
            load = bench_serving.Load(concurrency=int(value))
        else:
            rate = self.rate_of(point)
            if rate is None:
                raise LookupError(f"needs {self.reference} {self.args.capacity_load} of {point.workload.name} first")
            load = bench_serving.Load(rate=rate)
            info["target_rate"] = rate
        trace_rate = None
        if point.workload.trace is not None and load.rate is not None:
            trace_rate = sweep.trace_rate(point.workload.trace, point.workload.requests)
            info["trace_rate"] = trace_rate
            info["mooncake_slowdown"] = trace_rate / load.rate
        cmd = bench_serving.command(self.args.python, port, self.served, point.workload.dataset_args, load,
                                    output_file, self.args.seed, mooncake_trace_rate=trace_rate)
        return cmd, info

    # -------------------------------------------------------------------------------------------------- dry run
    def dry_run(self) -> int:
        print(f"serving sweep plan: reference {self.reference}; out {rel(self.out)}; served model "
              f"{rel(self.served)} (id {self.model_id}); server_id {self.server_id}")
        for p in self.points:
            done = self.store.measured(p.backend, p.workload.name, p.load, self.wids[p.workload.name], self.server_id)
            try:
                cmd, info = self.bench_command(p, self.args.port, self.logs / "DRY.jsonl")
                est = sweep.estimate_s(self.store, p, self.wids[p.workload.name], info.get("target_rate"),
                                       self.args.default_point_s)
                state = "measured" if done and not self.args.redo else f"pending (~{est:.0f} s)"
                print(f"  [{p.backend}] {p.workload.name} {p.load}: {state}\n    {shown(cmd)}")
            except LookupError as err:
                print(f"  [{p.backend}] {p.workload.name} {p.load}: deferred ({err})")
        return 0

    # ---------------------------------------------------------------------------------------------- one backend
    def run_backend(self, backend: str) -> None:
        args = self.args
        todo = [] if args.warmup_only else self.runnable(backend, self.pending(backend))
        need_check = not args.no_check and self.store.latest("check", backend=backend,
                                                             server_id=self.server_id) is None
        if not todo and not need_check and not args.warmup_only:
            print(f"serving: [{backend}] nothing to do now (selected points measured, or waiting for the "
                  f"reference's {args.capacity_load})", flush=True)
            return
        if todo and not need_check and not args.warmup_only:  # a start is worth it if a point fits after it
            shortest = min(sweep.estimate_s(self.store, p, self.wids[p.workload.name],
                                            self.rate_of(p) if sweep.parse_load(p.load)[0] != "c" else None,
                                            args.default_point_s) for p in todo)
            if self.expected_start_s(backend) + 15 + shortest > self.left():
                print(f"serving: [{backend}] skipped: no pending point fits the {self.left():.0f} s left after a "
                      "server start", flush=True)
                return
        elif self.left() < args.min_server_s:  # a check or a warm-up only: no point's estimate to go by
            print(f"serving: [{backend}] skipped: {self.left():.0f} s left < --min-server-s", flush=True)
            return
        port = free_port(args.port)
        cfg = server_config(args, backend, self.served, port)
        cmd = server_command(cfg)
        log = server_log(self.logs, backend)
        env = server_env(cfg, bench_serving.offline_env(tqdm_interval_s=args.tqdm_interval_s))
        label = BackendLabel.parse(backend)
        env.update(label.env)
        if label.attention_backend == "pat":  # PAT's stats line often enough to attribute its steps to each point
            env.setdefault("PAT_SGLANG_LOG_INTERVAL_S", str(PAT_LOG_INTERVAL_S))
        print(f"serving: [{backend}] starting: {shown(cmd)} (dummy weights: {args.dummy_weights})", flush=True)
        log_start = log_size(log)  # the log grows over calls: this start's lines begin here
        proc = ManagedProcess(cmd, log, env=env)
        try:
            proc.start()
            try:
                startup = wait_ready(proc, port, timeout_s=max(10.0, min(args.startup_timeout_s, self.left() - 30)))
            except (RuntimeError, TimeoutError) as err:
                print(f"serving: [{backend}] START FAILED: {err}\n--- log tail ---\n{tail(log, 40)}\n---", flush=True)
                self.failed_backends.append(backend)
                self.store.append({"kind": "server", "backend": backend, "server_id": self.server_id,
                                   "status": f"start failed: {err}"[:300], "cmd": shown(cmd), "gpu": self.gpu,
                                   "date": self.date})
                return
            print(f"serving: [{backend}] ready in {startup:.1f} s", flush=True)
            hooked, warning = dummy_weights_check(args.dummy_weights, read_from(log, log_start), rel(log))
            if warning:
                print(f"serving: [{backend}] {warning}", flush=True)
            self.store.append({"kind": "server", "backend": backend, "server_id": self.server_id, "status": "ok",
                               "startup_s": round(startup, 1), "cmd": shown(cmd), "gpu": self.gpu,
                               "date": self.date, "settings": server_settings(args, self.model_id),
                               "dummy_weights": args.dummy_weights, "dummy_weights_hooked": hooked})
            self.warm_up(backend, port, need_check or args.warmup_only)
            for point in todo:
                if not proc.alive():
                    print(f"serving: [{backend}] server died; see {rel(log)}\n{tail(log, 30)}", flush=True)
                    self.failed_backends.append(backend)
                    break
                if not self.run_point(point, port, log):
                    break
        finally:
            code = proc.stop()
            print(f"serving: [{backend}] server stopped (exit {code})", flush=True)

    def warm_up(self, backend: str, port: int, with_check: bool) -> None:
        """Greedy check (recorded) and an unmeasured warm-up pass; failures are reported, never fatal."""
        args = self.args
        try:
            if with_check and not args.no_check:
                gen = client.greedy_check(port, check_workloads(args.seed, args.check_tokens), timeout_s=120)
                self.store.append({"kind": "check", "backend": backend, "server_id": self.server_id,
                                   "status": "ok", "outputs": gen.ids, "logprobs": gen.logprobs,
                                   "new_tokens": args.check_tokens})
            warm = warmup_workload(args.seed)
            results, wall = client.run_closed_loop(port, warm.requests, 64, deadline_s=min(90.0, self.left()),
                                                   timeout_s=90)
            # sampling (the rollout workload's temperature 1) may JIT-compile its own kernels (FlashInfer sampling)
            client.generate_batch(port, warm.requests[:8], timeout_s=90, temperature=1.0)
            print(f"serving: [{backend}] warm-up: {sum(r.ok for r in results)}/{len(results)} ok in {wall:.1f} s",
                  flush=True)
        except (OSError, RuntimeError, ValueError) as err:
            print(f"serving: [{backend}] warm-up/check failed (continuing): {err}", flush=True)

    def run_point(self, point: sweep.Point, port: int, server_log: Path) -> bool:
        """Measure one point and append its row; False when the backend should stop (budget or a hung run)."""
        args = self.args
        count = self.times_measured(point)
        repeat = count + 1 if count else None  # a point's second and later measurements carry their number
        name = point_name(point.backend, point.workload.name, point.load, repeat)
        output_file = point_file(self.logs, name, ".jsonl")
        try:
            cmd, info = self.bench_command(point, port, output_file)
        except LookupError as err:
            print(f"serving: [{point.backend}] {point.workload.name} {point.load}: deferred ({err})", flush=True)
            return True
        wid = self.wids[point.workload.name]
        estimate = sweep.estimate_s(self.store, point, wid, info.get("target_rate"), args.default_point_s)
        if estimate > self.left() - 10:
            print(f"serving: [{point.backend}] {point.workload.name} {point.load}: left for the next call "
                  f"(~{estimate:.0f} s expected, {self.left():.0f} s left)", flush=True)
            return True  # a shorter point may still fit
        for stale in (output_file, bench_serving.client_times_file(output_file)):  # a point measured again
            stale.unlink(missing_ok=True)
        print(f"serving: [{point.backend}] {point.workload.name} {point.load} ({point.workload.requests} requests, "
              f"~{estimate:.0f} s): {shown(cmd)}", flush=True)
        offset = log_size(server_log)
        started = dt.datetime.now().isoformat(timespec="seconds")
        t0 = time.monotonic()
        code, timed_out = bench_serving.run(cmd, self.client_env, point_file(self.logs, name, ".log"),
                                            timeout_s=min(args.point_timeout_s, self.left() - 5))
        wall = time.monotonic() - t0
        time.sleep(0.5)  # let the server's last log lines land
        during = read_from(server_log, offset) if server_log.exists() else ""
        steps = client.decode_steps(during)
        row: dict[str, object] = {
            "kind": "point", "backend": point.backend, "workload": point.workload.name, "load": point.load,
            "workload_id": wid, "server_id": self.server_id, "requests": point.workload.requests, **info,
            "started": started, "wall_s": round(wall, 1), "gpu": self.gpu, "bench_cmd": shown(cmd),
        }
        if repeat is not None:
            row["round"] = repeat
        if timed_out:
            print(f"serving: [{point.backend}] {point.workload.name} {point.load}: killed after {wall:.0f} s "
                  "(not recorded; the server may still be busy, so this backend stops here)", flush=True)
            return False
        try:
            bench_serving.keep_details(output_file)
            result = bench_serving.parse_result(output_file)
        except (OSError, ValueError) as err:
            row.update(status=f"failed: exit {code}: {err}"[:300])
            self.store.append(row)
            print(f"serving: [{point.backend}] {point.workload.name} {point.load}: FAILED (exit {code}); see "
                  f"{rel(point_file(self.logs, name, '.log'))}", flush=True)
            return True
        row.update(result)
        kind, value = sweep.parse_load(point.load)
        if kind == "c":  # a closed loop: its first wave's TTFT apart from the rest's
            row.update(bench_serving.ttft_split(output_file, int(value)))
        row.update(client.step_stats(steps))
        row.update(client.pat_step_stats(read_from(server_log, 0, offset) if server_log.exists() else "", during))
        completed = int(bench_serving.finite(result.get("completed")) or 0)
        # "partial" counts as measured (a rerun would fail the same requests again, e.g. a prompt over the context)
        if completed >= point.workload.requests:
            row["status"] = "ok"
        elif completed:
            row["status"] = "partial"
            row["status_detail"] = f"{completed}/{point.workload.requests} completed"
        else:
            row["status"] = "failed: no request completed"
        self.store.append(row)
        print(f"serving: [{point.backend}] {point.workload.name} {point.load}: {row['status']}, "
              f"{bench_serving.finite(result.get('request_throughput')):.2f} req/s, "
              f"{bench_serving.finite(result.get('output_throughput')):.0f} tok/s, TPOT p50 "
              f"{bench_serving.finite(result.get('median_tpot_ms')):.2f} ms, step@{int(row['step_full_bs'])} "
              f"{bench_serving.finite(row['step_ms_p50_full']):.2f} ms ({wall:.0f} s)", flush=True)
        return True

    def unreachable(self) -> list[str]:
        """Why selected x-loads can never run in this call: the reference's capacity point is not measured with these
        server settings (``server_id``) and is not among this call's points. Said before any server starts, because a
        server started for them would serve only its greedy check."""
        capacity = self.args.capacity_load
        coming = {p.workload.name for p in self.points if p.backend == self.reference and p.load == capacity}
        reasons = []
        for p in self.points:
            if sweep.parse_load(p.load)[0] != "x" or p.workload.name in coming or self.rate_of(p) is not None:
                continue
            if p not in self.pending(p.backend):
                continue
            elsewhere = sorted({str(r.get("server_id")) for r in self.store.rows
                                if r.get("kind") == "point" and r.get("backend") == self.reference
                                and r.get("workload") == p.workload.name and r.get("load") == capacity
                                and r.get("status") in sweep.MEASURED})
            hint = (f"; measured under other server settings (server_id {', '.join(elsewhere)}): the server args "
                    "must match that run's" if elsewhere else "")
            reasons.append(f"[{p.backend}] {p.workload.name} {p.load}: needs {self.reference} {capacity} of "
                           f"{p.workload.name} with server_id {self.server_id}{hint}")
        return reasons

    def run(self) -> int:
        if not self.args.warmup_only:
            stuck = self.unreachable()
            if stuck:
                print("serving: these points cannot run in this call (add the reference's capacity point, or pass "
                      "--prior with it):\n  " + "\n  ".join(stuck), flush=True)
                return 2
        if not self.args.no_preflight:
            ok, msg = preflight(self.args.python, self.client_env)
            if not ok:
                print(f"serving: 'import sglang.bench_serving' fails in the client environment:\n{msg}", flush=True)
                return 2
        self.store.append({"kind": "run", "argv": self.args.argv, "date": self.date, "gpu": self.gpu,
                           "server_id": self.server_id, "served_model": self.model_id,
                           "env": report.recorded_env(os.environ)})
        for repeat in range(self.args.rounds):
            self.round = repeat
            for backend in self.backends:
                self.run_backend(backend)
        write_report(self.out, self.store, self.reference, self.workloads, self.args.capacity_load)
        left = [p for b in self.backends for p in self.pending(b)] if not self.args.warmup_only else []
        print(f"serving: {len(left)} selected point(s) still to measure; {time.monotonic() - self.t0:.0f} s; "
              f"results in {rel(self.out)}", flush=True)
        for p in left:  # an x-load waiting for the reference's capacity point was never started: say why
            try:
                self.bench_command(p, self.args.port, self.logs / "DRY.jsonl")
            except LookupError as err:
                print(f"serving: [{p.backend}] {p.workload.name} {p.load}: deferred ({err})", flush=True)
        return 1 if self.failed_backends else 0


# ---------------------------------------------------------------------------------------------------------- report
def agreement_rows(store: sweep.ResultStore, reference: str) -> list[dict[str, object]]:
    """Greedy agreement (and log-probability gap, for checks that recorded them) of every backend's latest check
    with the reference's (same server settings)."""
    checks: dict[tuple[str, str], dict] = {}
    for row in store.rows:
        if row.get("kind") == "check" and row.get("status") == "ok":
            checks[(str(row["backend"]), str(row["server_id"]))] = row
    out = []
    for (backend, sid), row in checks.items():
        ref = checks.get((reference, sid))
        if backend == reference or ref is None:
            continue
        out.append(client.agreement_row(backend, reference, client.Generated(row["outputs"], row.get("logprobs")),
                                        client.Generated(ref["outputs"], ref.get("logprobs")), row.get("new_tokens")))
    return out


def dummy_weights_note(server_row: dict) -> str:
    """The dummy weights of a server row as results.md shows them (rows older than the option had SGLang's)."""
    mode = str(server_row.get("dummy_weights", "sglang"))
    if mode != "sglang" and server_row.get("dummy_weights_hooked") is False:
        return f"`{mode}` requested, NOT seen in the server log"
    return f"`{mode}`"


def write_report(out: Path, store: sweep.ResultStore, reference: str,
                 workloads: list[sweep.SweepWorkload] | None = None, capacity_load: str = sweep.CAPACITY_LOAD) -> str:
    """results.md / results.csv / serving.png from every point row in the store."""
    rows = report.with_ratios(store.points(), reference)
    order = {name: i for i, name in enumerate(sweep.default_workloads(DEFAULT_TRACE))}
    rows.sort(key=lambda r: (order.get(str(r["workload"]), 99), str(r["workload"]), sweep.load_order(str(r["load"])),
                             r["backend"] != reference, str(r["backend"])))
    servers = [r for r in store.rows if r.get("kind") == "server" and r.get("status") == "ok"]
    runs = [r for r in store.rows if r.get("kind") == "run"]
    gpus = sorted({str(r.get("gpu")) for r in servers + runs if r.get("gpu")})
    dates = sorted({str(r.get("date")) for r in runs if r.get("date")})
    known = workloads or list(sweep.default_workloads(DEFAULT_TRACE).values())
    preamble = [
        f"- dates: {', '.join(dates) or '-'}; GPU: {'; '.join(gpus) or '-'}; reference backend: `{reference}`",
        "- client: `python -m sglang.bench_serving --backend sglang` (SGLang's own benchmark), one process per point, "
        "`--flush-cache` after its warm-up request, seed as in `bench_cmd` (results.csv)",
        "- model: dummy weights, `configs/models/llama3-8b` shape, word-level tokenizer of `bench/ab/tokenizer.py` "
        "(every id decodes to one word, encode(decode(ids)) == ids); dummy weights `attn` (`bench/ab/dummy_weights/`: "
        "outputs depend on attention) unless a server line below says `sglang` (SGLang's own: flat logits, the greedy "
        "check compares nothing)",
        "- loads: `cN` closed loop with N in flight; `xF` open loop (Poisson; Mooncake: the trace's own arrival "
        f"times scaled) at F x the reference's `{capacity_load}` request throughput; `rR` R req/s",
        "- step ms @full bs: median of `#running-req / gen throughput` over the server's 'Decode batch' lines of "
        f"that point with the largest running batch seen on at least {client.FULL_BS_MIN_LINES} of them, counting "
        "only lines whose interval ran no prefill (no 'Prefill batch' line since the previous decode line; rule of "
        "2026-11-29, eleventh session: rows measured before it and not recomputed with `--restep` counted every "
        "line); `vs ref`: this backend / the reference at the same point",
        *[f"- workload `{w.name}`: {w.summary}; bench_serving `{' '.join(rel(a) for a in w.dataset_args)}`"
          for w in known],
        *[f"- server `{r['backend']}` ({r.get('date')}, start {r.get('startup_s')} s, dummy weights "
          f"{dummy_weights_note(r)}): `{r.get('cmd')}`"
          for r in {(r['backend'], r.get('server_id')): r for r in servers}.values()],
        *[f"- call {r.get('date')}: `{' '.join([*r.get('env', []), 'python bench/serving_sweep.py'])} "
          f"{report.command_line(r.get('argv', []))}`"
          for r in runs],
    ]
    # The TTFT parts are read from the folder's server logs here, when the report is written (as the `vs ref` ratios are
    # computed here from the rows), not stored in the rows by the run and --restep as the step columns are: their
    # ReqTimeStats lines come only from servers started with --enable-request-time-stats-logging, the folder keeps its
    # logs (the run writes logs/, --merge gathers them, main unpacks a committed logs.tgz for this), and a folder
    # measured before this table gets it from a plain --report-only, without a --restep that would re-window every
    # point's step columns as well (it moves the fifteenth folder's pat@triton mooncake c64 step from 13.58 to 13.40
    # ms). Rows carried in with --prior from another folder have no log lines here and get no row.
    log_texts: dict[Path, str] = {}
    for row in rows:  # copies (with_ratios): the store keeps only what was measured
        row.update(ttft_parts(row, out / "logs", log_texts))
    report.write_csv(rows, out / "results.csv", report.SWEEP_COLUMNS)
    extra = [
        *report_section(
            "PAT's host planning per point",
            "From the backend's cumulative stats line (`PAT_SGLANG_LOG_INTERVAL_S`): the point's decode steps, their "
            "mean host planning time and the share handed to the delegate by the dispatch gate; the maxima "
            "'(this point)' over the lines logged during the point (each covers the steps since the line before; "
            "lines of servers before 2026-11-30's twentieth session lack them), '(since start)' the server's since it "
            "started (its warm-up wave included).",
            [r for r in rows if r.get("pat_steps")], report.PAT_COLUMNS),
        *report_section(
            "TTFT of the first wave and of the rest (closed loops)",
            "bench_serving's per-request TTFTs in request order: the first N requests of a `cN` point start at once "
            "(the server prefills them back to back), each later one when a request finishes. With equal output "
            "lengths the first wave finishes together, so the second wave (requests N .. 2N-1) arrives together too; "
            "the requests after two waves are the closest to a steady state.",
            [r for r in rows if "ttft_rest_p50_ms" in r], report.TTFT_SPLIT_COLUMNS),
        *report_section(
            "Where a closed loop's TTFT goes (SGLang's per-request times)",
            "From the `ReqTimeStats` line SGLang logs for each finished request on a server started with "
            "`--enable-request-time-stats-logging`, read from the folder's `server-*.log` (`logs/` or `logs.tgz`) when "
            "this report is written: of "
            "the lines stamped within the point's run (health checks left out), the last `done` are its measured "
            "requests (the harness's warm-up and bench_serving's own warm-up request finish before them), taken only "
            "when their input lengths are bench_serving's. In order of their entry into the scheduler's wait queue: "
            "*queue* is that entry to the request's first forward, for the first wave (the first N) and for the "
            "rest; *slot gap*: in a closed loop request N+k (by entry, from 0) is sent when completion k (in time "
            "order, from 0; entry + queue + forward) frees its slot, so its entry minus that completion, over k >= 0, "
            "is the time spent outside the scheduler between one request's end and the next one's arrival (the "
            "response through the detokenizer and HTTP, bench_serving's turnaround, the next request through HTTP "
            "and tokenization). *TTFT the rest p50*: bench_serving's, of the requests after the first N in request "
            "order (as in the table above).",
            [r for r in rows if "slot_gap_p50_ms" in r], report.TTFT_PARTS_COLUMNS),
        *repeated_points_section(store, reference),
    ]
    text = report.write_markdown(rows, out / "results.md", "Serving sweep (sglang.bench_serving)", preamble,
                                 agreement_rows(store, reference), columns=report.SWEEP_COLUMNS, extra=extra)
    report.plot_sweep(rows, out / "serving.png", sweep.load_order)
    return text


REPEAT_METRICS = (("median_ttft_ms", "TTFT p50 ms"), ("median_tpot_ms", "TPOT p50 ms"),
                  ("output_throughput", "out tok/s"))


def repeated_points(store: sweep.ResultStore) -> dict[tuple, dict[str, list[dict]]]:
    """Every measured row (not only the latest) of the points measured more than once by some backend (``--rounds``,
    or ``--redo`` across calls), by (workload, load, workload_id, server_id) and then backend, in measurement order."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in store.rows:
        if row.get("kind") == "point" and row.get("status") in sweep.MEASURED:
            key = (row.get("workload"), row.get("load"), row.get("workload_id"), row.get("server_id"))
            groups.setdefault(key, {}).setdefault(str(row.get("backend")), []).append(row)
    return {k: v for k, v in groups.items() if any(len(rows) > 1 for rows in v.values())}


def repeated_points_section(store: sweep.ResultStore, reference: str) -> list[str]:
    """results.md's 'Repeated points': per point measured more than once, each backend's median and range over its
    measurements, and the ratio of its median to the reference's; then every measurement."""
    groups = repeated_points(store)
    if not groups:
        return []
    summary = ["| workload | load | backend | runs | " + " | ".join(
        f"{title} median [min - max] | vs {reference}" for _, title in REPEAT_METRICS) + " |",
        "|" + " --- |" * (4 + 2 * len(REPEAT_METRICS))]
    each = ["| workload | load | backend | round | started | " + " | ".join(t for _, t in REPEAT_METRICS) + " |",
            "|" + " --- |" * (5 + len(REPEAT_METRICS))]
    for (workload, load, _, _), by_backend in groups.items():
        ref_rows = by_backend.get(reference, [])
        for backend, rows in sorted(by_backend.items(), key=lambda kv: (kv[0] != reference, kv[0])):
            cells = [str(workload), str(load), backend, str(len(rows))]
            for metric, _ in REPEAT_METRICS:
                values = [v for r in rows if (v := bench_serving.finite(r.get(metric))) == v]  # drop NaN
                ref = [v for r in ref_rows if (v := bench_serving.finite(r.get(metric))) == v]
                if not values:
                    cells += ["-", "-"]
                    continue
                med = statistics.median(values)
                cells.append(f"{med:.2f} [{min(values):.2f} - {max(values):.2f}]")
                cells.append(f"{med / statistics.median(ref):.3f}" if ref and statistics.median(ref) else "-")
            summary.append("| " + " | ".join(cells) + " |")
            for r in rows:
                each.append("| " + " | ".join([str(workload), str(load), backend, str(r.get("round", 1)),
                                               str(r.get("started", "-"))] + [
                    f"{bench_serving.finite(r.get(m)):.2f}" for m, _ in REPEAT_METRICS]) + " |")
    text = ("Points measured more than once (`--rounds`: every backend once per round, one server start each, in "
            "the order of `--backends`): the median of each backend's measurements and their range, so a "
            "difference between backends can be set against the spread between server instances of one backend. "
            "The main table above shows each point's latest measurement only.")
    return ["## Repeated points", "", text, "", *summary, "", *each, ""]


def report_section(title: str, text: str, rows: list[dict], columns: Sequence[str]) -> list[str]:
    """A results.md section: its title, what it holds, and its table of ``rows``; nothing when no row has it."""
    return [f"## {title}", "", text, "", report.markdown_table(rows, columns), ""] if rows else []


def closed_loop_concurrency(row: dict) -> int:
    """N of a point row's ``cN`` load; 0 for an open loop or a load label that does not parse."""
    try:
        kind, value = sweep.parse_load(str(row.get("load")))
    except ValueError:
        return 0
    return int(value) if kind == "c" else 0


def server_log(logs: Path, backend: str) -> Path:
    """A backend's server log under ``logs`` (every start of it appends there)."""
    return logs / f"server-{file_tag(backend)}.log"


def point_name(backend: str, workload: str, load: str, repeat: int | None = None) -> str:
    """The stem of a point's files under ``logs`` (``bench-<name>.jsonl`` / ``.log``); ``repeat``: the round of a
    ``--rounds`` run after the first (``-round<N>``)."""
    stem = f"{file_tag(backend)}-{workload}-{load}"
    return stem if repeat is None else f"{stem}-round{repeat}"


def point_file(logs: Path, name: str, suffix: str) -> Path:
    """A point's bench_serving file under ``logs``: its result (``.jsonl``) or its console (``.log``)."""
    return logs / f"bench-{name}{suffix}"


def bench_result(logs: Path, row: dict) -> Path:
    """The bench_serving result file a point row's run kept under ``logs`` (``run_point`` writes it)."""
    repeat = row.get("round")
    name = point_name(str(row.get("backend")), str(row.get("workload")), str(row.get("load")),
                      int(repeat) if isinstance(repeat, int) else None)
    return point_file(logs, name, ".jsonl")


def point_log(row: dict, logs: Path, texts: dict[Path, str]) -> str | None:
    """The lines of the point's server log (``logs/server-<backend>.log``) stamped within its run (``started`` ..
    ``started + wall_s``: ``client.log_between``); None when the row lacks those times or the log is absent.
    ``texts`` holds each log's text once read, for the other points of the same backend."""
    log = server_log(logs, str(row.get("backend")))
    if "started" not in row or "wall_s" not in row or not log.exists():
        return None
    if log not in texts:
        texts[log] = log.read_text(errors="replace")
    return client.log_between(texts[log], str(row["started"]), float(row["wall_s"]))


def ttft_parts(row: dict, logs: Path, texts: dict[Path, str]) -> dict[str, float]:
    """Where a closed-loop point's TTFT goes (``client.closed_loop_ttft_parts``) from the ReqTimeStats lines of its
    server log within its run, checked against the input lengths of its kept bench_serving result where there is one;
    empty for an open loop, a point without a log or without such lines in its window, or one not completed."""
    concurrency = closed_loop_concurrency(row)
    completed = bench_serving.finite(row.get("completed"))
    if not concurrency or math.isnan(completed):
        return {}
    during = point_log(row, logs, texts)
    if not during:
        return {}
    result = bench_result(logs, row)
    lines = sweep.read_jsonl(result) if result.exists() else []
    input_lens = lines[-1].get("input_lens") if lines else None  # bench_serving's last result line is the run's
    return client.closed_loop_ttft_parts(client.req_time_stats(during), concurrency, int(completed),
                                         input_lens if isinstance(input_lens, list) else None)


def restep(store: sweep.ResultStore, logs: Path) -> int:
    """Recompute the step columns (``client.step_stats``) of each measured point from its server's log, the lines
    stamped within the point's run, and a closed loop's TTFT waves (``bench_serving.ttft_split``) from its kept
    bench_serving result, and rewrite the store; points whose log is missing or has no decode line in that window keep
    theirs. Returns how many points' steps were recomputed."""
    done = 0
    texts: dict[Path, str] = {}  # each backend's log read once for all its points
    for row in store.rows:
        if row.get("kind") != "point":
            continue
        concurrency = closed_loop_concurrency(row)
        result = bench_result(logs, row)
        if concurrency and result.exists():
            row.update(bench_serving.ttft_split(result, concurrency))
        during = point_log(row, logs, texts)
        if during is None or not client.DECODE_RE.search(during):
            continue  # the log does not cover this point (e.g. another call's server)
        row.update(client.step_stats(client.decode_steps(during)))
        done += 1
    store.rewrite()
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run finally blocks, stop servers
    if args.report_only or args.merge:
        out = args.out or REPO / "docs/perf/serving" / dt.date.today().isoformat()
        logs = sweep.unpack_logs(out)  # a committed folder keeps its logs packed (sweep.pack_logs)
        try:
            if args.merge:
                print(f"serving: {sweep.merge_calls(args.merge, out)} row(s) gathered from {len(args.merge)} call(s)")
            store = sweep.ResultStore(out / "results.jsonl", prior=args.prior)
            if args.restep:
                print(f"serving: step columns recomputed for {restep(store, logs)} point(s)")
            reference = args.reference or args.backends[0]
            print(write_report(out, store, reference, capacity_load=args.capacity_load))
        finally:
            sweep.pack_logs(out)
        return 0
    run = Sweep(args)
    if args.dry_run:
        return run.dry_run()
    try:
        return run.run()
    finally:
        if args.archive is not None:
            print(f"serving: {rel(run.out)} packed into {sweep.archive_folder(run.out, args.archive)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
