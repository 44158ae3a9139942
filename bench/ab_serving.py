"""Serving A/B: the same token-id workloads against SGLang servers with different attention backends.

For each backend (default: flashinfer, pat, triton) the harness starts ``python -m sglang.launch_server`` on
127.0.0.1 with a local dummy-weight model (``configs/models/``; by default our dummy weights, ``--dummy-weights attn``,
``ab/dummy_weights/``, whose outputs depend on attention), waits until it answers, then

1. sends a shared-prefix batch greedily (non-streamed) and keeps its output tokens (correctness: agreement with the
   first backend that started, reported in %);
2. drives each workload (``shared``: G groups x P prompts with a common system prompt; ``mooncake``: the first N
   requests of the Mooncake conversation trace) with the same seed and concurrency, streaming each request for
   TTFT/TPOT, and reads the server's "Decode batch" step times from its log;
3. with ``--profile-steps N``: runs the Mooncake workload (else the first) once more, unmeasured, and once every
   request of its first wave decodes, asks the server (``POST /start_profile``) for a torch-profiler trace (CPU + GPU)
   of the next N forward steps; the trace lands in ``<out>/profile-<tag>/<tag>-TP-0.trace.json.gz`` (tag: the backend
   label as a file name, ``pat@fa3`` -> ``pat-fa3``) and ``bench/timeline.py`` draws ``timeline.png`` +
   ``timeline.md`` beside it (host planning vs GPU kernels). A failing profile is logged and never fails the run;
4. stops the server (its whole process group), whatever happened.

Results: ``results.csv``, ``results.md``, ``ab.png``, ``run.json`` and the server logs under ``--out``
(default ``docs/perf/ab/<date>/``). All traffic goes to 127.0.0.1; every wait is bounded, and ``--budget-s`` bounds the
whole run (backends that no longer fit are reported as skipped).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from ab import client, profile, report  # noqa: E402
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
from ab.workload import DEFAULT_TRACE, Workload, mooncake, shared_prefix, shared_token_fraction  # noqa: E402

TRACE_CANDIDATES = (
    DEFAULT_TRACE,
    REPO / ".wheelhouse/extra/mooncake_head.jsonl",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "configs/models/llama3-8b-4l"))
    ap.add_argument("--backends", type=backend_labels, default="flashinfer,pat,triton",
                    help="comma-separated; the first is the reference; pat@NAME: pat with NAME serving prefill; "
                         "+all after a pat label: the dispatch gate off (PAT serves every decode batch)")
    ap.add_argument("--workloads", default="shared,mooncake")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--port", type=int, default=31000, help="first port tried (127.0.0.1)")
    ap.add_argument("--budget-s", type=float, default=510.0, help="wall-clock bound of the whole run")
    ap.add_argument("--startup-timeout-s", type=float, default=330.0,
                    help="first FlashInfer start on a fresh machine JIT-compiles for ~130 s")
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--workload-timeout-s", type=float, default=90.0, help="bound per workload run")
    ap.add_argument("--disable-cuda-graph", action="store_true")
    ap.add_argument("--cuda-graph-max-bs", type=int, default=64)
    ap.add_argument("--mem-fraction-static", type=float, default=0.80)
    ap.add_argument("--context-length", type=int, default=None)
    add_server_args_option(ap)
    add_dummy_weights_option(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=64)
    # shared-prefix workload
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--prompts-per-group", type=int, default=16)
    ap.add_argument("--system-len", type=int, default=4096)
    ap.add_argument("--question-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    # Mooncake replay
    ap.add_argument("--trace", type=Path, default=None,
                    help="Mooncake-format JSONL (default: data/traces/mooncake_conversation_trace.jsonl of this "
                         "repository, else .wheelhouse/extra/mooncake_head.jsonl)")
    ap.add_argument("--trace-n", type=int, default=64)
    ap.add_argument("--trace-max-input", type=int, default=7936, help="prompt cap (the model's context is 8192)")
    ap.add_argument("--trace-output-len", type=int, default=128, help="fixed output length for the replay")
    # greedy agreement
    ap.add_argument("--check-groups", type=int, default=2)
    ap.add_argument("--check-prompts", type=int, default=8)
    ap.add_argument("--check-system-len", type=int, default=1024)
    ap.add_argument("--check-tokens", type=int, default=32)
    ap.add_argument("--no-check", action="store_true")
    # torch-profiler timeline (issue 9: the host plans step N+1 while the GPU runs step N)
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="N > 0: per backend, trace N forward steps (SGLang /start_profile, CPU+GPU, no stacks) "
                         "during an extra, unmeasured pass of the mooncake workload (else the first one) and draw "
                         "the timeline; files under <out>/profile-<tag>/ (0 = off; one folder deep: a device run "
                         "returns them)")
    ap.add_argument("--profile-wait-s", type=float, default=30.0,
                    help="start the profile at the latest this many seconds into that pass")
    return ap.parse_args(server_args_joined(sys.argv[1:] if argv is None else argv))


def build_workloads(args: argparse.Namespace) -> list[Workload]:
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    out: list[Workload] = []
    for name in names:
        if name == "shared":
            out.append(shared_prefix(args.groups, args.prompts_per_group, args.system_len, args.question_len,
                                     args.output_len, seed=args.seed))
        elif name == "mooncake":
            if args.trace is not None and not args.trace.exists():
                raise FileNotFoundError(f"Mooncake trace not found: {args.trace} (given with --trace PATH)")
            trace = args.trace or next((p for p in TRACE_CANDIDATES if p.exists()), None)
            if trace is None:
                print(f"ab: no Mooncake trace found ({DEFAULT_TRACE} is missing; pass --trace PATH); "
                      "skipping that workload", flush=True)
                continue
            out.append(mooncake(trace, args.trace_n, max_input_len=args.trace_max_input,
                                output_len=args.trace_output_len))
        else:
            raise SystemExit(f"unknown workload {name}")
    return out


def profile_workload(workloads: list[Workload]) -> Workload | None:
    """The workload whose steady state is profiled: Mooncake if it runs, else the first."""
    return next((w for w in workloads if w.name == "mooncake"), workloads[0] if workloads else None)


def profile_dir(out: Path, backend: str) -> Path:
    """Where ``backend``'s profile trace and timeline go: ``<out>/profile-<file tag>/`` (a device run returns plain
    names only)."""
    return out / f"profile-{file_tag(backend)}"


def profile_pass(backend: str, port: int, w: Workload, args: argparse.Namespace, out: Path,
                 deadline: float) -> dict:
    """Run ``w`` once more (closed loop, not measured) and trace ``--profile-steps`` forward steps of its steady
    state; then draw the timeline. Returns what happened (for run.json / results.md); never raises."""
    folder = profile_dir(out, backend)
    tag = file_tag(backend)  # the trace's name too
    res: dict = {"workload": w.name, "steps": args.profile_steps, "dir": os.path.relpath(folder, out)}
    left = deadline - time.monotonic()
    if left < 40:
        res["status"] = "skipped (budget)"
        return res
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / profile.trace_name(tag)
    if stale.exists():
        stale.unlink()
    body = profile.profile_request(folder, args.profile_steps, profile_id=tag)
    progress = client.Progress()
    trigger = profile.ProfileTrigger(port, body, progress, target_first_tokens=min(len(w.requests), args.concurrency),
                                     max_wait_s=max(1.0, min(args.profile_wait_s, left - 35)))
    since = time.time() - 2.0
    print(f"ab: [{backend}] profile pass over {w.name} ({args.profile_steps} steps)", flush=True)
    trigger.start()
    try:
        results, wall = client.run_closed_loop(
            port, w.requests, args.concurrency, deadline_s=min(args.workload_timeout_s, left - 30),
            timeout_s=args.request_timeout_s, progress=progress)
    finally:
        trigger.cancel()  # no-op once posted
        trigger.join(timeout=trigger.timeout_s + 5)
    res.update(trigger=trigger.reason, start_profile=trigger.message, pass_ok=sum(r.ok for r in results),
               pass_requests=len(results), pass_wall_s=round(wall, 2))
    if not trigger.ok:
        res["status"] = f"start_profile failed: {trigger.message}" if trigger.posted_at else "start_profile not sent"
        print(f"ab: [{backend}] profile: {res['status']} (continuing)", flush=True)
        return res
    wait_s = max(5.0, min(60.0, deadline - time.monotonic() - 20))
    trace = profile.wait_for_trace(folder, since, timeout_s=min(10.0, wait_s))
    if trace is None:  # the pass ended before N steps: the profile is still open
        ok, msg = profile.stop_profile(port, timeout_s=wait_s)
        res["stop_profile"] = msg
        trace = profile.wait_for_trace(folder, since, timeout_s=wait_s)
    if trace is None:
        res["status"] = "no trace written"
        print(f"ab: [{backend}] profile: no trace in {folder} (continuing)", flush=True)
        return res
    res["trace"] = os.path.relpath(trace, out)
    res["status"] = "ok"
    try:
        import timeline  # bench/timeline.py

        png = folder / "timeline.png"
        # SGLang stops the profiler as the step after the N-th is launched, so the last step's GPU tail can be
        # cut; the first follows the profiler's start: show the middle steps
        shown = args.profile_steps - 2 if args.profile_steps > 3 else args.profile_steps
        summary, _, plotted = timeline.render(trace, png, steps=shown)
        res["timeline"] = os.path.relpath(png if plotted else png.with_suffix(".md"), out)
        res.update({k: v for k, v in summary.as_dict().items() if k != "trace"})
    except Exception as err:  # the trace is kept; a timeline problem must not end the run
        res["timeline_error"] = f"{type(err).__name__}: {err}"[:300]
    print(f"ab: [{backend}] profile: {res['trace']}; timeline {res.get('timeline', res.get('timeline_error'))}",
          flush=True)
    return res


def run_backend(backend: str, args: argparse.Namespace, workloads: list[Workload], check: Workload | None,
                out: Path, deadline: float) -> tuple[list[dict], client.Generated | None, dict]:
    """Start one server, run everything against it, stop it. Returns (rows, greedy outputs, info)."""
    port = free_port(args.port)
    # "pat@fa3": the pat backend with that delegate (prefill/extend); a bare "pat" gets SGLang's default; "+all": the
    # dispatch gate off (ab.server.LABEL_OPTIONS)
    label = BackendLabel.parse(backend)
    cfg = ServerConfig(
        model_path=args.model, attention_backend=label.attention_backend, port=port,
        cuda_graph=not args.disable_cuda_graph, cuda_graph_max_bs=args.cuda_graph_max_bs,
        mem_fraction_static=args.mem_fraction_static, context_length=args.context_length, random_seed=args.seed,
        extra_args=tuple(args.server_args.split()) if args.server_args else (), dummy_weights=args.dummy_weights,
    )
    cmd = server_command(cfg)
    log = out / f"server-{file_tag(backend)}.log"
    if log.exists():
        log.unlink()
    info: dict = {"backend": backend, "cmd": cmd, "status": "ok", "dummy_weights": args.dummy_weights}
    rows: list[dict] = []
    greedy: client.Generated | None = None
    profiled = profile_workload(workloads) if args.profile_steps > 0 else None
    env = profile.profile_env(profile_dir(out, backend)) if profiled is not None else dict(os.environ)
    env = server_env(cfg, env)
    env.update(label.env)
    print(f"ab: [{backend}] starting: {' '.join(cmd)}", flush=True)
    proc = ManagedProcess(cmd, log, env=env)
    try:
        proc.start()
        left = deadline - time.monotonic()
        try:
            startup = wait_ready(proc, port, timeout_s=max(10.0, min(args.startup_timeout_s, left - 20)))
        except (RuntimeError, TimeoutError) as err:
            info["status"] = f"start failed: {err}"
            print(f"ab: [{backend}] START FAILED: {err}\n--- log tail ---\n{tail(log, 40)}\n---", flush=True)
            return [{"backend": backend, "workload": w.name, "status": "start failed"} for w in workloads], None, info
        info["startup_s"] = startup
        print(f"ab: [{backend}] ready in {startup:.1f} s", flush=True)
        info["dummy_weights_hooked"], warning = dummy_weights_check(args.dummy_weights, read_from(log, 0), str(log))
        if warning:
            print(f"ab: [{backend}] {warning}", flush=True)
        if check is not None and time.monotonic() < deadline - 15:
            try:
                greedy = client.greedy_check(port, check, args.request_timeout_s)
            except (OSError, RuntimeError, ValueError) as err:
                info["check_error"] = str(err)[:300]
                print(f"ab: [{backend}] greedy check failed: {err}", flush=True)
        for w in workloads:
            left = deadline - time.monotonic()
            if left < 15:
                rows.append({"backend": backend, "workload": w.name, "status": "skipped (budget)",
                             "startup_s": startup})
                continue
            for r in w.warmup:
                client.run_closed_loop(port, [r], 1, deadline_s=min(30.0, left), timeout_s=args.request_timeout_s)
            offset = log_size(log)
            deadline_s = min(args.workload_timeout_s, left - 10)
            results, wall = client.run_closed_loop(
                port, w.requests, args.concurrency, deadline_s=deadline_s, timeout_s=args.request_timeout_s,
                desc=f"[{backend}] {w.name}")
            time.sleep(0.5)  # let the last log lines land
            steps = client.decode_steps(read_from(log, offset))
            row: dict = {"backend": backend, "workload": w.name, "startup_s": startup}
            row.update(client.summarize(results, wall, steps))
            by_budget = left - 10 < args.workload_timeout_s  # the run budget, not the workload timeout, set it
            row["status"] = client.workload_status(results, wall, deadline_s, by_budget)
            rows.append(row)
            print(f"ab: [{backend}] {w.name}: {int(row['ok'])}/{len(results)} ok, {wall:.1f} s, "
                  f"TPOT {row['tpot_mean_ms']:.2f} ms, step@{int(row['step_full_bs'])} "
                  f"{row['step_ms_p50_full']:.2f} ms", flush=True)
            if w is profiled:
                try:
                    info["profile"] = profile_pass(backend, port, w, args, out, deadline)
                except Exception as err:  # profiling is optional: log and go on
                    info["profile"] = {"status": f"error: {type(err).__name__}: {err}"[:300]}
                    print(f"ab: [{backend}] profile error (continuing): {err}", flush=True)
    finally:
        code = proc.stop()
        info["exit_code"] = code
        print(f"ab: [{backend}] server stopped (exit {code})", flush=True)
    return rows, greedy, info


def dummy_weights_warning(infos: list[dict], mode: str) -> str:
    """results.md's note on servers whose log never showed our dummy weights (empty when all did, or for "sglang")."""
    missed = [i["backend"] for i in infos if i.get("dummy_weights_hooked") is False]
    if mode == "sglang":
        return "; SGLang's own dummy weights: flat logits, the greedy check compares nothing"
    return f"; NOT seen in the server log of {', '.join(missed)}" if missed else ""


def profile_notes(infos: list[dict], steps: int) -> list[str]:
    """results.md lines about the profiles (empty without ``--profile-steps``)."""
    done = [(i["backend"], i["profile"]) for i in infos if isinstance(i.get("profile"), dict)]
    if steps <= 0 or not done:
        return []
    lines = [f"- profile: {steps} forward steps per backend traced with SGLang's torch profiler (CPU + GPU) in an "
             "extra, unmeasured pass of the workload below; timeline: `python bench/timeline.py TRACE PNG`"]
    for backend, p in done:
        if p.get("status") != "ok":
            lines.append(f"  - {backend}: {p.get('status')}")
            continue
        extra = ""
        if "steps_shown" in p:
            busy, gap, gap_max = (report.fmt(p.get(k), ".0f") for k in ("busy_median_pct", "gap_median_us",
                                                                         "gap_max_us"))
            attn, attn_pct = report.fmt(p.get("attention_median_us"), ".0f"), report.fmt(p.get("attention_median_pct"),
                                                                                       ".1f")
            extra = (f"; {p.get('steps_shown')} steps marked by `{p.get('step_source') or '-'}`, GPU busy during them "
                     f"median {busy}%, GPU gap between steps median {gap} us / max {gap_max} us; attention kernels "
                     f"median {attn} us per step, {attn_pct}% of its GPU busy time")
        lines.append(f"  - {backend} ({p.get('workload')}): `{p.get('trace')}`, timeline "
                     f"`{p.get('timeline', p.get('timeline_error', '-'))}`{extra}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run finally blocks, stop servers
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    date = dt.date.today().isoformat()
    out: Path = args.out or REPO / "docs/perf/ab" / date
    out.mkdir(parents=True, exist_ok=True)
    backends: list[str] = args.backends
    workloads = build_workloads(args)
    check = None
    if not args.no_check:
        check = shared_prefix(args.check_groups, args.check_prompts, args.check_system_len, 16, args.check_tokens,
                              seed=args.seed + 1)
    for w in workloads:
        print(f"ab: workload {w.name}: {len(w.requests)} requests, {w.input_tokens} prompt tokens, "
              f"block-level sharing {100 * shared_token_fraction(w.requests):.0f}%", flush=True)

    all_rows: list[dict] = []
    infos: list[dict] = []
    outputs: dict[str, client.Generated] = {}
    for backend in backends:
        if deadline - time.monotonic() < 60:
            print(f"ab: [{backend}] skipped: budget spent", flush=True)
            all_rows += [{"backend": backend, "workload": w.name, "status": "skipped (budget)"} for w in workloads]
            infos.append({"backend": backend, "status": "skipped (budget)"})
            continue
        rows, greedy, info = run_backend(backend, args, workloads, check, out, deadline)
        all_rows += rows
        infos.append(info)
        if greedy is not None:
            outputs[backend] = greedy

    correctness: list[dict] = []
    ref = next((b for b in backends if b in outputs), None)
    if ref is not None:
        for b in backends:
            if b == ref or b not in outputs:
                continue
            correctness.append(client.agreement_row(b, ref, outputs[b], outputs[ref], args.check_tokens))

    gpu = gpu_name()
    env = report.recorded_env(os.environ)  # settings the command line does not show (results.md and run.json)
    cg = "off" if args.disable_cuda_graph else f"decode on (max bs {args.cuda_graph_max_bs})"
    preamble = [
        f"- date: {date}; GPU: {gpu}; model: `{os.path.relpath(args.model, REPO)}` (dummy weights "
        f"`{args.dummy_weights}`, no tokenizer){dummy_weights_warning(infos, args.dummy_weights)}",
        f"- CUDA graphs: {cg}; prefill CUDA graphs off; concurrency {args.concurrency}; seed {args.seed}",
        *[f"- workload `{w.name}`: {json.dumps(w.params)}" for w in workloads],
        "- step ms @full bs: median of `#running-req / gen throughput` over the server's 'Decode batch' lines "
        f"with the largest running batch seen on at least {client.FULL_BS_MIN_LINES} of them, counting only lines "
        "whose interval ran no prefill",
        f"- command: `{report.command_line([sys.executable, *sys.argv])}`",
        f"- environment: `{' '.join(env) or '(no PAT_SGLANG_ / SGLANG_ settings)'}`",
    ]
    preamble += profile_notes(infos, args.profile_steps)
    report.write_csv(all_rows, out / "results.csv")
    text = report.write_markdown(all_rows, out / "results.md", f"Serving A/B {date}", preamble, correctness)
    plotted = report.plot([r for r in all_rows if "ok" in r], out / "ab.png") if any("ok" in r for r in all_rows) \
        else False
    (out / "run.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "gpu": gpu,
                                              "env": env,
                                              "servers": infos, "correctness": correctness,
                                              "elapsed_s": time.monotonic() - t_start}, indent=1, default=str))
    print("\n" + text, flush=True)
    print(f"ab: wrote {out} (plot: {plotted}) in {time.monotonic() - t_start:.0f} s", flush=True)
    bad = [i for i in infos if i.get("status") != "ok"]
    return 1 if bad or not all_rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
