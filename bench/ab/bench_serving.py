"""Run SGLang's own ``python -m sglang.bench_serving`` against a local server, offline, and read its result.

* ``offline_env`` is the environment of the server and of bench_serving: Hugging Face hub / transformers / datasets
  offline, no ModelScope, tqdm bars throttled (the output of a device call is read as a log);
* ``stub_modules`` writes stand-ins for the modules that ``sglang.benchmark`` imports at module level only for
  datasets this harness never uses (Hugging Face ``datasets`` for MMMU / LongBench / speed-bench, Pillow for the image
  dataset), and only for those missing from the interpreter; they raise if anything calls them;
* ``command`` builds the bench_serving argument list of one measurement point;
* ``run`` runs it (process group, log file, output copied live to our stdout so its tqdm bar shows, bounded time);
* ``keep_details`` trims the per-request details of that line to what the reports and a later reading need (each
  request's time to first token and lengths, in request order; the per-token latencies and texts are dropped);
* ``parse_result`` reads the JSON line bench_serving appends to ``--output-file``;
* ``read_client_times`` reads the file ``bench_serving_main`` writes beside it (``client_times_file``): each request's
  send time and first-token time on the client's clock, to be lined up with the server's scheduler-loop trace.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .bench_serving_main import CLIENT_TIMES_HEADER, client_times_file  # noqa: F401 (the writer's format)
from .server import LOCALHOST, ManagedProcess

#: bench_serving's command line, run through our entry point (SGLang 0.5.17's Mooncake replay fixed; see there).
RUNNER = Path(__file__).with_name("bench_serving_main.py")

#: Module-level imports of sglang.benchmark (0.5.17) that its datasets need only when used; stubbed when missing.
STUBS: dict[str, dict[str, str]] = {
    "datasets": {
        "__init__.py": '"""Offline stand-in for Hugging Face datasets (not installed): sglang.benchmark imports '
                       'load_dataset at module level for datasets that download; calling it fails."""\n\n\n'
                       "def load_dataset(*args, **kwargs):\n"
                       "    raise RuntimeError('datasets is not installed (offline stub): this dataset needs a "
                       "download')\n",
    },
    "PIL": {
        "__init__.py": '"""Offline stand-in for Pillow (not installed): only the image dataset uses it."""\n',
        "Image.py": '"""Offline stand-in for PIL.Image: any use fails."""\n\n\n'
                    "def __getattr__(name):\n"
                    "    raise RuntimeError(f'Pillow is not installed (offline stub): PIL.Image.{name}')\n",
    },
}

#: Environment of every process of a run: nothing may reach the network (the GPU machine has none; on the CPU
#: machine a download would make a result depend on it).
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "SGLANG_USE_MODELSCOPE": "false",
    "PYTHONUNBUFFERED": "1",
}


def missing_modules(python: str = sys.executable, env: Mapping[str, str] | None = None,
                    names: Sequence[str] = tuple(STUBS)) -> list[str]:
    """Top-level modules of ``names`` that ``python`` cannot import with ``env`` (asked in a child process: this
    process's sys.path need not be the child's)."""
    probe = ("import importlib.util, sys\n"
             "print(','.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))")
    res = subprocess.run([python, "-c", probe, *names], env=None if env is None else dict(env), capture_output=True,
                         text=True, timeout=60, check=True)
    return [n for n in res.stdout.strip().split(",") if n]


def stub_modules(root: Path, names: Sequence[str] | None = None, python: str = sys.executable,
                 env: Mapping[str, str] | None = None) -> Path | None:
    """Write stubs under ``root`` for the given modules, or for those ``python`` (with ``env``) cannot import;
    returns ``root``, or None if none is needed."""
    names = missing_modules(python, env) if names is None else list(names)
    if not names:
        return None
    for name in names:
        for rel, text in STUBS[name].items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
    return root


def offline_env(base: Mapping[str, str] | None = None, pythonpath_first: Sequence[Path] = (),
                home: Path | None = None, tqdm_interval_s: float = 5.0) -> dict[str, str]:
    """``base`` (default: os.environ) + ``OFFLINE_ENV``; ``pythonpath_first`` prepended to PYTHONPATH; ``home``
    replaces HOME (bench_serving caches generated-shared-prefix prompts under ``~/.cache/sglang/benchmark`` keyed by
    the tokenizer's class name only, so another tokenizer's cache would be read back silently)."""
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    env["TQDM_MININTERVAL"] = f"{tqdm_interval_s:g}"  # tqdm >= 4.66 reads TQDM_* defaults
    if pythonpath_first:
        parts = [str(p) for p in pythonpath_first] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
    return env


@dataclass(frozen=True)
class Load:
    """How requests arrive: a closed loop of ``concurrency`` in flight, or an open loop at ``rate`` req/s
    (Poisson; for the Mooncake replay: the trace's own arrival times, scaled to that mean rate)."""

    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("a load is either a concurrency or a rate")


def command(python: str, port: int, model_dir: Path, dataset_args: Sequence[str], load: Load, output_file: Path,
            seed: int, mooncake_trace_rate: float | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``python -m sglang.bench_serving`` for one point (through ``RUNNER``, same arguments).

    ``dataset_args`` choose and size the requests; the load becomes ``--max-concurrency`` (closed loop, all requests
    queued at t=0) or ``--request-rate``; for ``--dataset-name mooncake`` bench_serving always replays by the trace
    timestamps and ignores ``--request-rate``, so a closed loop is a slowdown factor of 0 and a rate R the factor
    ``mooncake_trace_rate / R``. ``--flush-cache``: every point starts with an empty prefix cache (after
    bench_serving's one warm-up request), so no point depends on which ran before it on the same server.
    """
    cmd = [
        python, str(RUNNER),
        "--backend", "sglang",
        "--host", LOCALHOST, "--port", str(port),
        "--model", str(model_dir), "--tokenizer", str(model_dir),
        *dataset_args,
        "--seed", str(seed),
        "--output-file", str(output_file),
        "--output-details",  # per-request TTFTs (trimmed by keep_details): how a point's TTFT spreads over its requests
        "--warmup-requests", "1",
        "--flush-cache",
        "--ready-check-timeout-sec", "30",
    ]
    mooncake = arg_value(dataset_args, "--dataset-name") == "mooncake"
    if load.concurrency is not None:
        cmd += ["--max-concurrency", str(load.concurrency)]
        if mooncake:
            cmd += ["--mooncake-slowdown-factor", "0"]
        else:
            cmd += ["--request-rate", "inf"]
    else:
        assert load.rate is not None
        if mooncake:
            if not mooncake_trace_rate:
                raise ValueError("a Mooncake replay at a rate needs the trace's own rate")
            cmd += ["--mooncake-slowdown-factor", f"{mooncake_trace_rate / load.rate:.6g}"]
        else:
            cmd += ["--request-rate", f"{load.rate:.6g}"]
    return cmd + list(extra)


def arg_value(args: Sequence[str], flag: str) -> str | None:
    """Value of ``flag`` in an argument list (the last one wins, as with argparse)."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def _follow(path: Path, stop: threading.Event, sink, poll_s: float = 0.5) -> None:
    """Copy what is appended to ``path`` to ``sink`` until ``stop`` is set (then copy the rest)."""
    offset = 0
    while True:
        done = stop.is_set()
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except OSError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            sink.write(chunk.decode("utf-8", errors="replace"))
            sink.flush()
        if done:
            return
        stop.wait(poll_s)


def run(cmd: Sequence[str], env: Mapping[str, str], log_path: Path, timeout_s: float,
        echo: bool = True) -> tuple[int | None, bool]:
    """Run bench_serving; its output goes to ``log_path`` and (``echo``) live to our stdout, so its tqdm bar of
    finished requests (rate, time left) shows in the run's output. Returns (exit code, timed out); past
    ``timeout_s`` the whole process group is killed."""
    if log_path.exists():
        log_path.unlink()
    proc = ManagedProcess(cmd, log_path, env=env, term_timeout_s=5.0)
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(log_path, stop, sys.stdout), daemon=True) if echo else None
    proc.start()
    if follower is not None:
        follower.start()
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while proc.alive():
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        code = proc.stop()
        stop.set()
        if follower is not None:
            follower.join(timeout=5)
    return (None if timed_out else code), timed_out


#: bench_serving result keys kept per point (milliseconds, tokens/s, requests/s as bench_serving reports them).
RESULT_KEYS: tuple[str, ...] = (
    "completed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput", "input_throughput",
    "output_throughput", "total_throughput", "concurrency", "max_concurrency", "request_rate",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms", "median_e2e_latency_ms",
    "p99_e2e_latency_ms", "max_output_tokens_per_s", "max_concurrent_requests",
)


#: per-request lists of bench_serving's ``--output-details`` dropped: every token's latency and the generated text
#: (megabytes a point; the summary keeps ITL); what stays per request is its TTFT (s) and lengths, in request order
DROPPED_DETAIL_KEYS: tuple[str, ...] = ("itls", "generated_texts", "errors")


@dataclass(frozen=True)
class ClientRequest:
    """One request as bench_serving's client saw it, in wall-clock seconds: sent, and its first non-empty chunk
    (``first``: nan for a request that failed or streamed nothing)."""

    sent: float
    first: float
    ok: bool


def read_client_times(path: Path) -> list[ClientRequest]:
    """The requests of a client-times file, in send order (a torn last line is skipped)."""
    offset, out = 0.0, []
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        if cols[0] == CLIENT_TIMES_HEADER:
            offset = float(dict(c.split("=", 1) for c in cols[1:] if "=" in c).get("wall_minus_perf", "0"))
            continue
        if len(cols) != 4:
            continue
        sent, ttft, ok = float(cols[0]) + offset, float(cols[1]), cols[3] == "1"
        out.append(ClientRequest(sent, sent + ttft if ok and ttft > 0 else math.nan, ok))
    return sorted(out, key=lambda r: r.sent)


def _result_lines(output_file: Path) -> list[str]:
    """The non-empty lines of ``output_file`` (bench_serving appends one result line per run; none if it is absent)."""
    return [ln for ln in output_file.read_text().splitlines() if ln.strip()] if output_file.exists() else []


def keep_details(output_file: Path) -> None:
    """Rewrite the last result line of ``output_file`` without ``DROPPED_DETAIL_KEYS`` (a count of non-empty errors
    stays as ``request_errors``), ``ttfts`` rounded to microseconds. Nothing to do if there is no result line."""
    lines = _result_lines(output_file)
    if not lines:
        return
    raw = json.loads(lines[-1])
    errors = raw.get("errors")
    if isinstance(errors, list):
        raw["request_errors"] = sum(1 for e in errors if e)
    for key in DROPPED_DETAIL_KEYS:
        raw.pop(key, None)
    if isinstance(raw.get("ttfts"), list):
        raw["ttfts"] = [round(t, 6) if isinstance(t, (int, float)) else t for t in raw["ttfts"]]
    lines[-1] = json.dumps(raw)
    output_file.write_text("\n".join(lines) + "\n")


def ttft_split(output_file: Path, first: int) -> dict[str, float]:
    """TTFT of a closed loop's first ``first`` requests (they all start at once, the server's first wave) against the
    rest (each sent when one finishes), in ms, from the per-request ``ttfts`` of the last result line (request order):
    ``ttft_first_p50_ms``, ``ttft_rest_p50_ms``, ``ttft_rest_p99_ms``; where there are more than two waves' requests
    also ``ttft_second_p50_ms`` (requests ``first .. 2 first - 1``: with equal output lengths the first wave finishes
    together, so its successors arrive together too) and ``ttft_later_p50_ms`` / ``ttft_later_p99_ms`` (the requests
    after those). Empty where the line has no ``ttfts`` or no request past the first wave."""
    lines = _result_lines(output_file)
    ttfts = json.loads(lines[-1]).get("ttfts") if lines else None
    if not isinstance(ttfts, list) or len(ttfts) <= first or first < 1:
        return {}
    ms = [1000.0 * finite(t) for t in ttfts]

    def ordered(values: list[float]) -> list[float]:
        return sorted(v for v in values if not math.isnan(v))

    head, rest = sorted(ms[:first]), ordered(ms[first:])
    if not rest:
        return {}
    out = {"ttft_first_p50_ms": _quantile(head, 0.5), "ttft_rest_p50_ms": _quantile(rest, 0.5),
           "ttft_rest_p99_ms": _quantile(rest, 0.99)}
    second, later = ordered(ms[first : 2 * first]), ordered(ms[2 * first :])
    if second and later:
        out.update(ttft_second_p50_ms=_quantile(second, 0.5), ttft_later_p50_ms=_quantile(later, 0.5),
                   ttft_later_p99_ms=_quantile(later, 0.99))
    return out


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending list (numpy's default rule)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_result(output_file: Path) -> dict[str, object]:
    """The metrics of the last result line bench_serving appended to ``output_file`` (``RESULT_KEYS`` only, numbers as
    floats; a non-number such as request_rate "trace" kept as is). Raises if there is none."""
    lines = _result_lines(output_file)
    if not lines:
        raise ValueError(f"bench_serving wrote no result to {output_file}")
    raw = json.loads(lines[-1])
    out: dict[str, object] = {}
    for key in RESULT_KEYS:
        value = raw.get(key)
        if isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def finite(value: object) -> float:
    """``value`` as a float, NaN if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(float(value)) else math.nan
