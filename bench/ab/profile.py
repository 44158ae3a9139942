"""Take a short torch-profiler trace of a running SGLang server (``--profile-steps`` of the serving A/B).

SGLang 0.5.17's ``POST /start_profile`` takes a ``ProfileReq`` as JSON (``managers/io_struct.py``; unknown keys are
ignored). With ``num_steps`` set and neither ``start_step`` nor ``profile_by_stage``, the scheduler starts
``torch.profiler`` at once (activities ``CPU`` -> ProfilerActivity.CPU, ``GPU`` -> CUDA/CUPTI) and stops it by itself
after the next ``num_steps`` + 1 forward batches (prefill or decode, whatever runs), exporting
``<output_dir>/[<profile_prefix>-]<profile_id>-TP-<rank>.trace.json.gz`` synchronously in the scheduler loop
(``managers/scheduler_components/profiler_manager.py``). ``output_dir`` falls back to ``SGLANG_TORCH_PROFILER_DIR``
(default ``/tmp``); ``profile_id`` defaults to ``str(time.time())``. ``with_stack`` / ``record_shapes`` default to
True unless the request sets them false (the env vars ``SGLANG_PROFILE_WITH_STACK`` / ``SGLANG_PROFILE_RECORD_SHAPES``
can only turn them off). If the server goes idle before the steps are reached, the profile stays open until
``/stop_profile``. The HTTP reply of ``/start_profile`` is 200 on success, 500 (RuntimeError) when the scheduler
refused, e.g. "Profiling is already in progress".

Nothing here may break an A/B run: every function returns a status instead of raising.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .client import Progress

LOCALHOST = "127.0.0.1"
TRACE_SUFFIXES = (".trace.json.gz", ".trace.json", ".json.gz", ".json")


def profile_request(output_dir: Path, num_steps: int, profile_id: str | None = None) -> dict:
    """The JSON body of ``POST /start_profile``: ``num_steps`` forward steps, CPU + GPU activity, no Python stacks and
    no shapes (small trace, low overhead), one trace per rank written into ``output_dir`` (made absolute: the server's
    scheduler process writes it)."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    body: dict = {
        "output_dir": str(Path(output_dir).resolve()),
        "num_steps": int(num_steps),
        "activities": ["CPU", "GPU"],
        "with_stack": False,
        "record_shapes": False,
        "profile_by_stage": False,
        "merge_profiles": False,
    }
    if profile_id:
        body["profile_id"] = profile_id
    return body


def trace_name(profile_id: str, tp_rank: int = 0) -> str:
    """The file name SGLang 0.5.17 gives the trace of ``profile_id`` (no prefix, tp only)."""
    return f"{profile_id}-TP-{tp_rank}.trace.json.gz"


def post(port: int, path: str, body: dict | None, timeout_s: float) -> tuple[bool, str]:
    """POST JSON to 127.0.0.1:port; (HTTP 200, first 300 characters of the reply or the error)."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout_s)
    try:
        data = json.dumps(body) if body is not None else ""
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read(2000).decode("utf-8", errors="replace").strip()
        return resp.status == 200, (text if resp.status == 200 else f"HTTP {resp.status}: {text}")[:300]
    except (OSError, http.client.HTTPException, ValueError) as err:
        return False, f"{type(err).__name__}: {err}"[:300]
    finally:
        conn.close()


def start_profile(port: int, body: dict, timeout_s: float = 60.0) -> tuple[bool, str]:
    return post(port, "/start_profile", body, timeout_s)


def stop_profile(port: int, timeout_s: float = 120.0) -> tuple[bool, str]:
    return post(port, "/stop_profile", None, timeout_s)


def list_traces(folder: Path, since: float = 0.0) -> list[Path]:
    """Trace files (``*.json`` / ``*.json.gz``) under ``folder`` modified at or after ``since`` (epoch s), newest
    last."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.rglob("*"):
        try:
            if p.is_file() and p.name.endswith(TRACE_SUFFIXES) and p.stat().st_mtime >= since:
                found.append(p)
        except OSError:
            continue
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _complete(path: Path) -> bool:
    """A gzip trace is complete when it decompresses to the end (torch writes it through gzip.open in place)."""
    if not path.name.endswith(".gz"):
        return True
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
        return True
    except (OSError, EOFError):
        return False


def wait_for_trace(folder: Path, since: float, timeout_s: float, poll_s: float = 0.5) -> Path | None:
    """The newest trace under ``folder`` written after ``since`` once its size is stable and it reads to the end;
    None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Path, int] | None = None
    while True:
        traces = list_traces(folder, since)
        if traces:
            p = traces[-1]
            try:
                size = p.stat().st_size
            except OSError:
                size = -1
            if last == (p, size) and size > 0 and _complete(p):
                return p
            last = (p, size)
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


class ProfileTrigger(threading.Thread):
    """Waits until the closed-loop run reaches its steady state, then POSTs ``/start_profile`` once.

    Steady state: ``target_first_tokens`` requests have their first token (every request of the first wave is
    decoding), or a first request finished, or ``max_wait_s`` passed. ``cancel()`` before the POST skips it.
    Outcome in ``ok`` / ``message`` / ``reason`` / ``posted_at`` (epoch s).
    """

    def __init__(self, port: int, body: dict, progress: Progress, target_first_tokens: int, max_wait_s: float,
                 timeout_s: float = 60.0, poster: Callable[[int, dict, float], tuple[bool, str]] | None = None) -> None:
        super().__init__(name="ab-profile-trigger", daemon=True)
        self.port = port
        self.body = body
        self.progress = progress
        self.target = max(1, target_first_tokens)
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.poster = poster or start_profile
        self._cancel = threading.Event()
        self.ok = False
        self.message = "not posted"
        self.reason = ""
        self.posted_at: float | None = None

    def cancel(self) -> None:
        self._cancel.set()
        self.progress.notify()

    def run(self) -> None:
        fired = self.progress.wait_for(
            lambda p: self._cancel.is_set() or p.first_tokens >= self.target or p.finished >= 1, self.max_wait_s)
        if self._cancel.is_set():
            self.reason = "cancelled"
            return
        p = self.progress
        self.reason = (f"{p.first_tokens} first tokens, {p.finished} finished" if fired
                       else f"waited {self.max_wait_s:.0f} s ({p.first_tokens} first tokens)")
        self.posted_at = time.time()
        try:
            self.ok, self.message = self.poster(self.port, self.body, self.timeout_s)
        except Exception as err:  # never let profiling break the run
            self.ok, self.message = False, f"{type(err).__name__}: {err}"[:300]


def profile_env(folder: Path) -> dict[str, str]:
    """Server environment for profiling: ``SGLANG_TORCH_PROFILER_DIR`` (only the fallback of ``output_dir``, which
    the request sets; kept so a bare ``/start_profile`` lands there too)."""
    env = dict(os.environ)
    env["SGLANG_TORCH_PROFILER_DIR"] = str(Path(folder).resolve())
    return env
