"""A token-id client for SGLang's ``/generate`` (127.0.0.1 only) and the metrics of one run.

Requests are streamed so that each one yields TTFT (time to the first generated token) and TPOT (mean time per
further output token). A closed loop keeps ``concurrency`` requests in flight; a deadline bounds the whole run (a
request not yet sent when it passes is skipped and counted). Server step times come from its "Decode batch" log
lines (``#running-req / gen throughput``); where a closed loop's TTFT goes, from the per-request "ReqTimeStats" lines
of a server started with ``--enable-request-time-stats-logging`` (``req_time_stats``, ``closed_loop_ttft_parts``).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .workload import Request, Workload

LOCALHOST = "127.0.0.1"


@dataclass
class Result:
    """Outcome of one request."""

    ok: bool
    prompt_len: int
    output_len: int = 0
    ttft_s: float = math.nan
    latency_s: float = math.nan
    error: str = ""
    output_ids: list[int] = field(default_factory=list)

    @property
    def tpot_s(self) -> float:
        if not self.ok or self.output_len < 2:
            return math.nan
        return (self.latency_s - self.ttft_s) / (self.output_len - 1)


def _payload(req: Request, stream: bool, temperature: float = 0.0) -> dict:
    return {
        "input_ids": list(req.input_ids),
        "sampling_params": {"max_new_tokens": req.max_new_tokens, "temperature": temperature, "ignore_eos": True},
        "stream": stream,
    }


def _conn(port: int, timeout: float) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)


class Progress:
    """Thread-safe counters of a closed-loop run (first tokens seen, requests finished), for a side thread that waits
    for a point of the run (e.g. every in-flight request decoding) without polling."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.first_tokens = 0
        self.finished = 0

    def on_first_token(self) -> None:
        with self._cv:
            self.first_tokens += 1
            self._cv.notify_all()

    def on_finished(self) -> None:
        with self._cv:
            self.finished += 1
            self._cv.notify_all()

    def notify(self) -> None:
        """Wake the waiters (to re-check a predicate that depends on something else)."""
        with self._cv:
            self._cv.notify_all()

    def wait_for(self, predicate: Callable[[Progress], bool], timeout_s: float) -> bool:
        """Block until ``predicate(self)`` holds (True) or ``timeout_s`` passed (False)."""
        with self._cv:
            return self._cv.wait_for(lambda: predicate(self), timeout=max(0.0, timeout_s))


def generate_stream(
    port: int, req: Request, timeout_s: float = 300.0, on_first_token: Callable[[], None] | None = None
) -> Result:
    """One streamed request; TTFT at the first chunk that reports a generated token (``on_first_token`` is called
    then)."""
    res = Result(ok=False, prompt_len=len(req.input_ids))
    t0 = time.perf_counter()
    conn = _conn(port, timeout_s)
    try:
        body = json.dumps(_payload(req, stream=True))
        conn.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            res.error = f"HTTP {resp.status}: {resp.read(500)!r}"
            return res
        n_out = 0
        for _ in range(req.max_new_tokens + 1_000):  # bounded: one chunk a token plus slack
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                res.error = str(chunk["error"])[:300]
                return res
            meta = chunk.get("meta_info", {})
            n = int(meta.get("completion_tokens", n_out))
            if n > n_out:
                if n_out == 0:
                    res.ttft_s = time.perf_counter() - t0
                    if on_first_token is not None:
                        on_first_token()
                n_out = n
            if time.perf_counter() - t0 > timeout_s:
                res.error = "timeout while streaming"
                return res
        res.latency_s = time.perf_counter() - t0
        res.output_len = n_out
        res.ok = n_out > 0
        if not res.ok:
            res.error = "no tokens"
    except (OSError, http.client.HTTPException, json.JSONDecodeError, ValueError) as err:
        res.error = f"{type(err).__name__}: {err}"[:300]
    finally:
        conn.close()
    return res


@dataclass(frozen=True)
class Generated:
    """The outputs of one batched ``/generate`` call: token ids per request and, when asked for, the log-probability
    the server gave each of them (SGLang's ``meta_info.output_token_logprobs``)."""

    ids: list[list[int]]
    logprobs: list[list[float]] | None = None


def generate_batch(port: int, reqs: Sequence[Request], timeout_s: float = 300.0,
                   temperature: float = 0.0, logprobs: bool = False) -> Generated:
    """One non-streamed batched ``/generate`` call (greedy unless ``temperature`` > 0). ``logprobs``: also the
    log-probability of every output token (``return_logprob``, output tokens only)."""
    max_new = max(r.max_new_tokens for r in reqs)
    payload: dict = {
        "input_ids": [list(r.input_ids) for r in reqs],
        "sampling_params": {"max_new_tokens": max_new, "temperature": temperature, "ignore_eos": True},
    }
    if logprobs:
        payload.update(return_logprob=True, logprob_start_len=-1, top_logprobs_num=0)
    conn = _conn(port, timeout_s)
    try:
        conn.request("POST", "/generate", body=json.dumps(payload), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:500]!r}")
    finally:
        conn.close()
    out = json.loads(raw)
    if isinstance(out, dict):
        out = [out]
    ids = [list(o.get("output_ids", [])) for o in out]
    if not logprobs:
        return Generated(ids)
    lps = []
    for o, row in zip(out, ids, strict=True):
        # (logprob, token id, text or None) per output token
        entries = (o.get("meta_info") or {}).get("output_token_logprobs") or []
        if [int(e[1]) for e in entries] != row:
            raise RuntimeError("the server's output_token_logprobs do not match its output_ids")
        lps.append([float(e[0]) for e in entries])
    return Generated(ids, lps)


def greedy_check(port: int, check: Workload, timeout_s: float) -> Generated:
    """The greedy-agreement batch of both harnesses: ``check``'s warm-up requests one by one (they put its shared
    prefixes in the radix cache), then its requests as one batch, with each output token's logprob.

    Agreement (``agreement_row``) says something about attention only if the model's outputs depend on it. With
    SGLang's own dummy weights (``--dummy-weights sglang``) they do not: the logits are flat (every greedy token's
    logprob is -ln(vocab), -11.7618 for 128256) and the outputs cycle two ids for any backend, so 100% agreement and a
    zero logprob gap are guaranteed. The harnesses' default dummy weights (``attn``, ``ab/dummy_weights/``) give logits
    of std about 1 that depend on the whole context; then different-but-correct attention kernels may still flip a
    near-tie now and then (bf16 rounding), and the logprob gap is the finer measure."""
    for w in check.warmup:
        generate_batch(port, [w], timeout_s=timeout_s)
    return generate_batch(port, check.requests, timeout_s=timeout_s, logprobs=True)


def run_closed_loop(
    port: int, reqs: Sequence[Request], concurrency: int, deadline_s: float, timeout_s: float = 300.0,
    progress: Progress | None = None, desc: str | None = None,
) -> tuple[list[Result], float]:
    """Send ``reqs`` keeping ``concurrency`` in flight; returns (results in request order, wall seconds).

    Requests not started before ``deadline_s`` (from the start) are returned as failed with error "skipped".
    ``progress`` (optional) counts first tokens and finished requests (skipped ones count as finished).
    ``desc``: show a tqdm bar of finished requests (rate, time left) on a terminal.
    """
    t0 = time.perf_counter()
    lock = threading.Lock()
    results: list[Result | None] = [None] * len(reqs)
    bar = _bar(len(reqs), desc) if desc else None

    def one(i: int) -> None:
        if time.perf_counter() - t0 > deadline_s:
            res = Result(ok=False, prompt_len=len(reqs[i].input_ids), error="skipped")
        else:
            left = max(1.0, deadline_s - (time.perf_counter() - t0))
            res = generate_stream(port, reqs[i], timeout_s=min(timeout_s, left),
                                  on_first_token=progress.on_first_token if progress is not None else None)
        with lock:
            results[i] = res
            if bar is not None:
                bar.update(1)
        if progress is not None:
            progress.on_finished()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, range(len(reqs))))
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    return [r if r is not None else Result(ok=False, prompt_len=0, error="lost") for r in results], wall


CUT_ERRORS = ("timeout while streaming", "skipped")  # what a request cut by the workload's deadline reports


def workload_status(results: Sequence[Result], wall_s: float, deadline_s: float, by_budget: bool) -> str:
    """A workload row's status: "ok", or how many requests failed and why. Requests cut by a deadline that the run's
    ``--budget-s`` set (``by_budget``: the budget left was shorter than the workload timeout) are reported as such,
    not as timeouts of the server: the decode steps the server logged until then still stand."""
    errors = [r.error for r in results if not r.ok]
    if not errors:
        return "ok"
    cut = sum(e in CUT_ERRORS for e in errors)
    if by_budget and cut == len(errors) and wall_s >= deadline_s - 2.0:
        return f"cut by --budget-s after {wall_s:.0f} s: {cut} of {len(results)} requests unfinished"
    return f"{len(errors)} failed: {errors[0][:80]}"


def _bar(total: int, desc: str):
    """tqdm over finished requests, shown only on a terminal (``disable=None``); None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="req", disable=None)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of the finite values; NaN if none."""
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return sum(xs) / len(xs) if xs else math.nan


# Decode-log lines a batch size needs to count as the closed loop's full batch (``step_stats``).
FULL_BS_MIN_LINES = 3
DECODE_RE = re.compile(r"Decode batch(?: \[\d+\])?, #running-req: (\d+),.*?gen throughput \(token/s\): ([0-9.]+)")
PREFILL_RE = re.compile(r"Prefill batch")


def decode_steps(log_text: str) -> list[tuple[int, float]]:
    """(running requests, step ms) for each "Decode batch" log line whose interval ran decode only (step = running /
    gen throughput).

    SGLang's gen throughput is the tokens decoded since its previous decode line over the wall time since then, so a
    line after a "Prefill batch" line also times that prefill: under open-loop arrivals such a line read 45 ms at a
    batch whose decode-only steps took 14 ms (Mooncake x1.0, 2026-11-29). Those lines are left out; so is the first
    decode line of the text, whose interval began before it."""
    out = []
    clean = False  # the text's first decode interval started before the text
    for m in re.finditer(f"{DECODE_RE.pattern}|{PREFILL_RE.pattern}", log_text):
        if m.group(1) is None:  # a prefill ran in the current interval
            clean = False
            continue
        running, tput = int(m.group(1)), float(m.group(2))
        if clean and tput > 0:
            out.append((running, 1000.0 * running / tput))
        clean = True
    return out


LOG_STAMP_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]")


def log_between(log_text: str, start: str, seconds: float) -> str:
    """The lines of a server log stamped within ``[start, start + seconds]`` (``start`` in ISO form, as a sweep
    point's ``started``; SGLang stamps to the second, so a point's neighbours can share its first and last second).
    Unstamped lines go with the stamped line before them."""
    t0 = dt.datetime.fromisoformat(start)
    t1 = t0 + dt.timedelta(seconds=seconds)
    keep, out = False, []
    for line in log_text.splitlines(keepends=True):
        m = LOG_STAMP_RE.match(line)
        if m:
            keep = t0 <= dt.datetime.fromisoformat(m.group(1)) <= t1
        if keep:
            out.append(line)
    return "".join(out)


# SGLang's per-request line (0.5.17, servers started with --enable-request-time-stats-logging), written when the request
# finishes: "ReqTimeStats(rid=..., input_len=6, cached_input_len=0, output_len=8, attempts=0, type=unified):
# queue_duration=0.75ms, forward_duration=151.03ms, entry_time=1796010419.463". Read as key=value fields on either side
# of the "):" so that fields added or reordered by another version do not break it.
REQ_TIME_STATS_RE = re.compile(r"ReqTimeStats\(([^)\n]*)\):([^\n]*)")
_FIELD_RE = re.compile(r"(\w+)=([^,\s]+)")


@dataclass(frozen=True)
class ReqTimes:
    """One finished request of a ReqTimeStats line: ``queue_ms`` from its entry into the scheduler's wait queue to its
    first forward, ``forward_ms`` from then to its completion, ``entry_s`` the wall-clock time (s since the epoch) of
    that entry."""

    rid: str
    input_len: int
    queue_ms: float
    forward_ms: float
    entry_s: float

    @property
    def done_s(self) -> float:
        """When the request completed (wall clock, s): its entry plus its queue and forward durations."""
        return self.entry_s + (self.queue_ms + self.forward_ms) / 1000.0


def req_time_stats(log_text: str) -> list[ReqTimes]:
    """The requests of the ReqTimeStats lines of ``log_text``, in log order (the order they finished); the server's
    health checks (rid ``HEALTH_CHECK...``) and lines without a parseable rid, input_len, queue_duration (ms),
    forward_duration (ms) or entry_time (e.g. cut short by another process's write) are left out."""
    out = []
    for m in REQ_TIME_STATS_RE.finditer(log_text):
        head, tail = dict(_FIELD_RE.findall(m.group(1))), dict(_FIELD_RE.findall(m.group(2)))
        rid = head.get("rid", "")
        if not rid or rid.startswith("HEALTH_CHECK"):
            continue
        try:
            queue, forward = (tail[k] for k in ("queue_duration", "forward_duration"))
            if not (queue.endswith("ms") and forward.endswith("ms")):
                continue
            req = ReqTimes(rid, int(head["input_len"]), float(queue[:-2]), float(forward[:-2]),
                           float(tail["entry_time"]))
        except (KeyError, ValueError):
            continue
        if all(math.isfinite(v) for v in (req.queue_ms, req.forward_ms, req.entry_s)):
            out.append(req)
    return out


def closed_loop_ttft_parts(reqs: Sequence[ReqTimes], concurrency: int, completed: int,
                           input_lens: Sequence[int] | None = None) -> dict[str, float]:
    """Where the TTFT of a closed loop of ``concurrency`` requests in flight goes, from the ReqTimeStats requests of
    the server log lines stamped within its run (``reqs``, log order), in ms:

    - the measured requests are the last ``completed`` of ``reqs`` (bench_serving's count): a line is written when its
      request finishes, and the other requests of the window (the harness's warm-up, bench_serving's own warm-up
      request, both finished before its first measured request is sent) come before them; with ``input_lens``
      (bench_serving's, one per request) their input lengths must be the same multiset, else they are not the measured
      requests (a partial run, a neighbour's line in the window) and the result is empty;
    - ordered by their entry into the scheduler: ``sched_queue_{first,rest}_{p50,p99}_ms``, the wait-queue time of the
      first wave (the first ``concurrency``) and of the rest;
    - ``slot_gap_p50_ms`` / ``slot_gap_p90_ms``: in a closed loop request ``concurrency + k`` (by entry, from 0) is
      sent when completion k (in time order, from 0; ``ReqTimes.done_s``) frees its slot, so its entry minus that
      completion, over k >= 0, is the time spent outside the scheduler between a request's end and its successor's
      arrival (the response's way out through the detokenizer and HTTP, the client's turnaround, the next request's
      way in through HTTP and tokenization);
    - ``req_time_lines``: how many requests that is.

    Empty when there are fewer than ``completed`` requests or none past the first wave."""
    if concurrency < 1 or completed <= concurrency or len(reqs) < completed:
        return {}
    mine = sorted(reqs[len(reqs) - completed :], key=lambda r: r.entry_s)
    if input_lens is not None and sorted(r.input_len for r in mine) != sorted(input_lens):
        return {}
    done = sorted(r.done_s for r in mine)
    gaps = [1000.0 * (mine[concurrency + k].entry_s - done[k]) for k in range(completed - concurrency)]
    first = [r.queue_ms for r in mine[:concurrency]]
    rest = [r.queue_ms for r in mine[concurrency:]]
    return {
        "req_time_lines": float(completed),
        "sched_queue_first_p50_ms": percentile(first, 50), "sched_queue_first_p99_ms": percentile(first, 99),
        "sched_queue_rest_p50_ms": percentile(rest, 50), "sched_queue_rest_p99_ms": percentile(rest, 99),
        "slot_gap_p50_ms": percentile(gaps, 50), "slot_gap_p90_ms": percentile(gaps, 90),
    }


# The PAT backend's periodic stats line (pat_sglang.step_stats.StepStats.summary; every PAT_SGLANG_LOG_INTERVAL_S):
# cumulative since the server started.
PAT_STATS_RE = re.compile(
    r"PAT: (\d+) decode steps, host planning ([\d.]+) ms mean / ([\d.]+) ms max;.*?"
    r"served by the delegate (\d+)"
    # since 2026-11-29 (eleventh session): the steps a garbage collection ran in, apart
    r"(?:.*?steps with a garbage collection (\d+) \(at most ([\d.]+) ms of one collecting\), max of the others "
    r"([\d.]+) ms"
    # since 2026-12-04 (fifty-second session): collections in publishing count too, and the slowest step without any
    r"(?:, with publishing (?P<host_no_gc>[\d.]+) ms)?)?"
    # since 2026-11-29 (twelfth session): the planning thread's own CPU time of its slowest step
    r"(?:; the planning thread's own CPU time at most ([\d.]+) ms in one step)?"
    # since 2026-11-30 (twentieth session): the steps since the line before and their maxima (planning; with publishing)
    r"(?:; since the last line: (?P<interval_steps>\d+) steps, host planning at most (?P<interval_plan>[\d.]+) ms, "
    r"with publishing (?P<interval_host>[\d.]+) ms)?"
    # since 2026-11-30 (fourteenth session): what the slowest step was (batch, forest, time by phase, plan size)
    r"(?:; the slowest step: (?P<slowest>[^\n]*))?"
)


# since 2026-11-30 (eighteenth session): the publishing of the steps' radix paths (the scheduler patch) beside planning
PAT_PUBLISH_RE = re.compile(
    r"publishing radix paths ([\d.]+) ms mean / ([\d.]+) ms max, the two together ([\d.]+) ms max in one step"
)
# since 2026-12-05 (fifty-eighth session): the steps' publishing + planning at p50 / p90 / p99 since the start
PAT_HOST_PERCENTILES_RE = re.compile(
    r"in one step, per step p50 ([\d.]+) / p90 ([\d.]+) / p99 ([\d.]+) ms"
)


def pat_step_stats(before: str, during: str) -> dict[str, float | str]:
    """PAT's host planning over one point, from its cumulative stats lines: the last one logged before the point
    (``before``: the server log up to the point's start) and the last one during it. ``pat_plan_ms_mean`` and
    ``pat_declined_pct`` are the point's own (differences of the counts); ``pat_plan_ms_max_since_start`` is the
    server's maximum so far; where the line has them, ``pat_gc_steps`` (the
    point's steps during which a garbage collection ran), ``pat_gc_ms_max_since_start``,
    ``pat_plan_ms_max_no_gc_since_start`` (the slowest planning without a collection),
    ``pat_host_ms_max_no_gc_since_start`` (the slowest step, publishing and planning, with no collection in either) and
    ``pat_plan_cpu_ms_max_since_start`` (the planning thread's own CPU time of its slowest step: the wall-clock maximum
    above it is waiting) and ``pat_slowest_step`` (that step's batch, forest, time by phase and plan size); where it
    has them, ``pat_publish_ms_mean`` (the point's own: publishing the steps' radix paths),
    ``pat_publish_ms_max_since_start`` and ``pat_host_ms_max_since_start`` (publishing and planning of one step);
    where it has them, ``pat_host_ms_p50_since_start`` / ``_p90_`` / ``_p99_`` (the steps' publishing and planning);
    where the lines have their "since the last line" clause, ``pat_plan_ms_max`` and ``pat_host_ms_max``: the point's
    own maxima (planning; planning and publishing), over the lines logged during it.
    The line is written on decode steps at most once per ``PAT_SGLANG_LOG_INTERVAL_S``, so the steps of the previous
    point after its last line count in this one: keep the interval short against a point (the sweep sets 1 s). Empty
    without a line during the point (another backend, or a log interval longer than the point)."""
    lines = list(PAT_STATS_RE.finditer(during))  # every line of the point, once: the last one, and each one's maxima
    if not lines:
        return {}
    end = lines[-1]
    start = _last_match(PAT_STATS_RE, before)
    steps0, mean0, declined0 = (int(start[1]), float(start[2]), int(start[4])) if start else (0, 0.0, 0)
    steps1, mean1, max1, declined1 = int(end[1]), float(end[2]), float(end[3]), int(end[4])
    steps = steps1 - steps0
    if steps <= 0:
        return {}
    out: dict[str, float | str] = {
        "pat_steps": float(steps),
        "pat_plan_ms_mean": (steps1 * mean1 - steps0 * mean0) / steps,
        "pat_plan_ms_max_since_start": max1,
        "pat_declined_pct": 100.0 * (declined1 - declined0) / steps,
    }
    if end[5] is not None:  # a line with the collections apart
        gc0 = int(start[5]) if start is not None and start[5] is not None else 0
        out.update(pat_gc_steps=float(int(end[5]) - gc0), pat_gc_ms_max_since_start=float(end[6]),
                   pat_plan_ms_max_no_gc_since_start=float(end[7]))
        if end["host_no_gc"] is not None:  # a line with publishing's collections counted too
            out["pat_host_ms_max_no_gc_since_start"] = float(end["host_no_gc"])
    if end[9] is not None:
        out["pat_plan_cpu_ms_max_since_start"] = float(end[9])
    if end["slowest"] is not None:
        out["pat_slowest_step"] = end["slowest"].strip()
    # the point's own maxima: over the lines logged during it, each covering the steps since the line before (the
    # first one also the previous point's steps after its last line, as for the means)
    spans = [m for m in lines if m["interval_plan"] is not None]
    if spans:
        out.update(pat_plan_ms_max=max(float(m["interval_plan"]) for m in spans),
                   pat_host_ms_max=max(float(m["interval_host"]) for m in spans))
    published = PAT_PUBLISH_RE.search(end[0])
    if published is not None:
        first = PAT_PUBLISH_RE.search(start[0]) if start is not None else None
        sum0 = steps0 * float(first[1]) if first is not None else 0.0
        out.update(pat_publish_ms_mean=(steps1 * float(published[1]) - sum0) / steps,
                   pat_publish_ms_max_since_start=float(published[2]),
                   pat_host_ms_max_since_start=float(published[3]))
    percentiles = PAT_HOST_PERCENTILES_RE.search(end[0])
    if percentiles is not None:
        out.update(pat_host_ms_p50_since_start=float(percentiles[1]), pat_host_ms_p90_since_start=float(percentiles[2]),
                   pat_host_ms_p99_since_start=float(percentiles[3]))
    return out


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 (the last one is the answer)
        pass
    return found


def summarize(results: Sequence[Result], wall_s: float, steps: Sequence[tuple[int, float]]) -> dict[str, float]:
    """The metrics row of one (backend, workload) run."""
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_len for r in ok)
    return {
        "requests": float(len(results)),
        "ok": float(len(ok)),
        "wall_s": wall_s,
        "input_tok": float(sum(r.prompt_len for r in ok)),
        "output_tok": float(out_tokens),
        "out_tok_per_s": out_tokens / wall_s if wall_s > 0 else math.nan,
        "req_per_s": len(ok) / wall_s if wall_s > 0 else math.nan,
        "ttft_mean_ms": 1000 * mean([r.ttft_s for r in ok]),
        "ttft_p50_ms": 1000 * percentile([r.ttft_s for r in ok], 50),
        "ttft_p99_ms": 1000 * percentile([r.ttft_s for r in ok], 99),
        "tpot_mean_ms": 1000 * mean([r.tpot_s for r in ok]),
        "tpot_p50_ms": 1000 * percentile([r.tpot_s for r in ok], 50),
        "tpot_p99_ms": 1000 * percentile([r.tpot_s for r in ok], 99),
        **step_stats(steps),
    }


def step_stats(steps: Sequence[tuple[int, float]]) -> dict[str, float]:
    """Server decode step time from its "Decode batch" lines: the median at the full batch ("step ms @full bs": the
    steady state of a closed loop), the median over all lines, and how many lines there were. The full batch is the
    largest running batch seen on at least ``FULL_BS_MIN_LINES`` lines (the largest seen at all when none is that
    common): a batch size seen once is a transient, and a line's interval may then be mostly prefill (Mooncake at
    c256 read one 2.6 s "step" at its largest batch)."""
    counts = Counter(n for n, _ in steps)
    common = [n for n, c in counts.items() if c >= FULL_BS_MIN_LINES]
    full = max(common or counts, default=0)
    full_steps = [ms for n, ms in steps if n == full]
    return {
        "step_full_bs": float(full),
        "step_ms_p50_full": percentile(full_steps, 50),
        "step_full_lines": float(len(full_steps)),
        "step_ms_p50_all": percentile([ms for _, ms in steps], 50),
        "decode_log_lines": float(len(steps)),
    }


def agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> tuple[float, float]:
    """(% of positions with equal tokens, % of sequences fully equal) over the common length of each pair."""
    same = total = seq_same = 0
    for x, y in zip(a, b, strict=False):
        n = min(len(x), len(y))
        s = sum(1 for i in range(n) if x[i] == y[i])
        same += s
        total += max(len(x), len(y))
        seq_same += int(s == n and len(x) == len(y))
    pairs = min(len(a), len(b))
    return (100.0 * same / total if total else math.nan, 100.0 * seq_same / pairs if pairs else math.nan)


def prefix_agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """Mean length (tokens) of the common leading run of each pair: greedy divergence point."""
    runs = []
    for x, y in zip(a, b, strict=False):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        runs.append(float(k))
    return mean(runs)


def logprob_gap(a: Generated, b: Generated) -> tuple[float, float]:
    """(max, mean) |difference| of the log-probabilities two servers gave the same greedy tokens: over each pair's
    common leading run (where both chose the same tokens after the same context), nan without logprobs."""
    if a.logprobs is None or b.logprobs is None:
        return math.nan, math.nan
    gaps = []
    for x, y, lx, ly in zip(a.ids, b.ids, a.logprobs, b.logprobs, strict=False):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            gaps.append(abs(lx[k] - ly[k]))
            k += 1
    return (max(gaps), mean(gaps)) if gaps else (math.nan, math.nan)


def agreement_row(backend: str, reference: str, out: Generated, ref: Generated, new_tokens: int) -> dict[str, object]:
    """The agreement of ``backend``'s outputs with ``reference``'s on the same check batch (both harnesses' table)."""
    tok, seq = agreement(out.ids, ref.ids)
    gap_max, gap_mean = logprob_gap(out, ref)
    return {"backend": backend, "reference": reference, "token_agree_pct": tok, "seq_agree_pct": seq,
            "mean_common_prefix": prefix_agreement(out.ids, ref.ids), "max_logprob_diff": gap_max,
            "mean_logprob_diff": gap_mean, "new_tokens": new_tokens, "sequences": len(out.ids)}
