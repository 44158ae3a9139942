"""Start and stop SGLang servers (and any child process) safely for the serving A/B.

* ``server_command`` builds the ``python -m sglang.launch_server`` argument list for one backend, ``server_env`` its
  environment: by default (``ServerConfig.dummy_weights`` "attn", ``--dummy-weights`` of both harnesses) the
  dummy-weight hook of ``ab/dummy_weights/`` first on PYTHONPATH and ``PAT_BENCH_DUMMY_WEIGHTS=attn``, so that the
  model's outputs depend on attention (SGLang's own dummy weights give flat logits: the greedy check would compare
  nothing); ``dummy_weights_hooked`` tells from the server log whether the hook filled the weights.
* ``ManagedProcess`` starts a command in its own process group (new session) with stdout+stderr to a log file and
  kills the whole group on ``stop()`` (SIGTERM, bounded wait, then SIGKILL); it is a context manager and also
  registers an ``atexit`` hook, so a server never outlives the harness.
* ``BackendLabel`` reads a backend label of either harness (``fa3``, ``pat@fa3``, ``pat@fa3+all``): the attention
  backend SGLang is started with and the environment of that server.
* ``free_port``, ``gpu_name``, ``log_size`` / ``read_from`` (a log from an offset), ``file_tag``: small helpers of
  both serving harnesses.
* ``wait_ready`` polls ``/health_generate`` (then ``/health``) on 127.0.0.1 with a bounded number of tries and time,
  giving up early if the process died.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .dummy_weights import ATTN, ENV_VAR, HOOK_DIR, MARKER

LOCALHOST = "127.0.0.1"

#: ``--dummy-weights`` choices: "attn" = ours (ab/dummy_weights/pat_bench_dummy_weights.py; the default), "sglang" =
#: SGLang's own ``initialize_dummy_weights`` (uniform +-1e-3 from one seed: flat logits, outputs that ignore attention)
DUMMY_WEIGHT_MODES = (ATTN, "sglang")


@dataclass(frozen=True)
class ServerConfig:
    """What distinguishes one server launch; everything else is the same across backends."""

    model_path: str
    attention_backend: str
    port: int
    cuda_graph: bool = True
    #: SGLang's prefill CUDA graphs (its default); off by default here: a server then starts in ~65 s, not ~327 s
    prefill_cuda_graph: bool = False
    cuda_graph_max_bs: int = 64
    mem_fraction_static: float = 0.80
    context_length: int | None = None
    max_running_requests: int | None = None
    decode_log_interval: int = 10
    random_seed: int = 0
    #: True: the client sends token ids and reads output ids (no tokenizer in the model directory); False: the
    #: model directory holds a tokenizer (text clients such as sglang.bench_serving; see ab/tokenizer.py)
    skip_tokenizer_init: bool = True
    extra_args: tuple[str, ...] = ()
    python: str = sys.executable
    #: which dummy weights the server's model gets (``DUMMY_WEIGHT_MODES``; applied by ``server_env``)
    dummy_weights: str = ATTN


def server_command(cfg: ServerConfig) -> list[str]:
    """The ``launch_server`` argument list: dummy weights, no tokenizer (unless ``cfg.skip_tokenizer_init`` is
    false), 127.0.0.1 only, no prefill CUDA graphs (65 s start-up instead of 327 s) unless ``cfg.prefill_cuda_graph``;
    decode CUDA graphs on unless ``cfg.cuda_graph`` is false."""
    cmd = [
        cfg.python, "-m", "sglang.launch_server",
        "--model-path", cfg.model_path,
        "--load-format", "dummy",
        *(["--skip-tokenizer-init"] if cfg.skip_tokenizer_init else []),
        "--host", LOCALHOST,
        "--port", str(cfg.port),
        "--attention-backend", cfg.attention_backend,
        *([] if cfg.prefill_cuda_graph else ["--disable-prefill-cuda-graph"]),
        "--mem-fraction-static", f"{cfg.mem_fraction_static:g}",
        "--decode-log-interval", str(cfg.decode_log_interval),
        "--random-seed", str(cfg.random_seed),
        "--log-level", "info",
    ]
    if cfg.cuda_graph:
        cmd += ["--cuda-graph-max-bs-decode", str(cfg.cuda_graph_max_bs)]
    else:
        cmd += ["--disable-cuda-graph"]
    if cfg.context_length is not None:
        cmd += ["--context-length", str(cfg.context_length)]
    if cfg.max_running_requests is not None:
        cmd += ["--max-running-requests", str(cfg.max_running_requests)]
    return cmd + list(cfg.extra_args)


def server_env(cfg: ServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default: os.environ) with the dummy-weight hook of ``cfg.dummy_weights``.

    "attn": ``HOOK_DIR`` first on PYTHONPATH (its ``sitecustomize`` runs in every process of the server, the spawned
    scheduler included) and ``PAT_BENCH_DUMMY_WEIGHTS=attn``; "sglang": both removed if ``base`` had them."""
    if cfg.dummy_weights not in DUMMY_WEIGHT_MODES:
        raise ValueError(f"dummy_weights {cfg.dummy_weights!r}: expected one of {DUMMY_WEIGHT_MODES}")
    env = dict(os.environ if base is None else base)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != HOOK_DIR]
    if cfg.dummy_weights == ATTN:
        parts.insert(0, str(HOOK_DIR))
        env[ENV_VAR] = ATTN
    else:
        env.pop(ENV_VAR, None)
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    return env


SERVER_ARGS_OPTION = "--server-args"


def add_server_args_option(ap: argparse.ArgumentParser) -> None:
    """``--server-args`` of both harnesses: extra ``launch_server`` arguments as one string. Its value starts with
    ``--`` (``--server-args "--enable-foo"``), which argparse would read as an option of its own: parse the command
    line through ``server_args_joined`` first."""
    ap.add_argument(SERVER_ARGS_OPTION, default="",
                    help="extra launch_server arguments (one string, split on spaces), e.g. "
                         '--server-args "--enable-request-time-stats-logging"')


def server_args_joined(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--server-args VALUE`` written as ``--server-args=VALUE``, so that a VALUE beginning with
    ``--`` reaches the option instead of failing argparse ("expected one argument")."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == SERVER_ARGS_OPTION and i + 1 < len(argv):
            out.append(f"{SERVER_ARGS_OPTION}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def add_dummy_weights_option(ap: argparse.ArgumentParser) -> None:
    """``--dummy-weights`` of both harnesses."""
    ap.add_argument("--dummy-weights", choices=DUMMY_WEIGHT_MODES, default=ATTN,
                    help="the servers' dummy weights: 'attn' (default): per-parameter streams, matrices std "
                         "1/sqrt(fan_in), norms 1, so that outputs and the greedy check depend on attention "
                         "(ab/dummy_weights/); 'sglang': SGLang's own (flat logits, two tokens cycling)")


def dummy_weights_hooked(log_text: str) -> bool:
    """Did a server log say that our dummy weights filled the model (``MARKER``, printed by the scheduler)?"""
    return MARKER in log_text


def dummy_weights_check(mode: str, log_text: str, log_name: str) -> tuple[bool, str]:
    """Both harnesses' check once a server answers (the scheduler has loaded the model by then): whether its log shows
    our dummy weights, and the warning to print when ``mode`` asked for them and the log does not say so ("" else)."""
    hooked = dummy_weights_hooked(log_text)
    if hooked or mode == "sglang":
        return hooked, ""
    return hooked, (f"WARNING: no '{mode}' dummy-weight line in {log_name}: the model may have SGLang's flat dummy "
                    "weights (the greedy check then compares nothing)")


_LIVE: set[ManagedProcess] = set()


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()


atexit.register(_stop_all)


@dataclass(eq=False)
class ManagedProcess:
    """A child process in its own session, logged to ``log_path``, whose whole process group is killed on stop."""

    cmd: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    term_timeout_s: float = 20.0
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            list(self.cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.cwd,
            start_new_session=True,
        )
        self._log = log
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self) -> int | None:
        """Terminate the process group (SIGTERM, then SIGKILL after ``term_timeout_s``); returns the exit code."""
        if self.popen is None:
            return None
        pgid = self.pid  # start_new_session: the child leads its own group
        for sig, wait_s in ((signal.SIGTERM, self.term_timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.popen.poll()
                if self.popen.returncode is not None and not self._group_alive():
                    break
                time.sleep(0.1)
            else:
                continue
            break
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        _LIVE.discard(self)
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.popen is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_get(url: str, timeout: float) -> int:
    """Status code of a GET (0 when the connection failed)."""
    if not url.startswith(f"http://{LOCALHOST}:"):
        raise ValueError(f"refusing non-local URL {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0


def wait_ready(proc: ManagedProcess, port: int, timeout_s: float, poll_s: float = 1.0) -> float:
    """Seconds until the server answered ``/health_generate`` with 200; raises if it died or timed out."""
    base = f"http://{LOCALHOST}:{port}"
    t0 = time.monotonic()
    tries = int(timeout_s / poll_s) + 1
    for _ in range(tries):
        if not proc.alive():
            raise RuntimeError(f"server exited with code {proc.popen.returncode if proc.popen else None} "
                               f"before it was ready; see {proc.log_path}")
        if http_get(base + "/health_generate", timeout=min(30.0, timeout_s)) == 200:
            return time.monotonic() - proc.started_at
        if time.monotonic() - t0 > timeout_s:
            break
        time.sleep(poll_s)
    raise TimeoutError(f"server not ready after {timeout_s:.0f} s; see {proc.log_path}")


def tail(path: Path, n: int = 30) -> str:
    """Last ``n`` lines of a log file (empty string if missing)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def free_port(start: int, tries: int = 50) -> int:
    """First port >= ``start`` that 127.0.0.1 can bind (and the next 5 too; SGLang uses neighbours)."""
    for port in range(start, start + tries * 10, 10):
        ok = True
        for p in range(port, port + 6):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port")


def gpu_name() -> str:
    """"NAME, DRIVER" of the first GPU (nvidia-smi), "unknown" without one."""
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


def log_size(path: Path) -> int:
    """Bytes in ``path`` so far (0 if missing): where the next measurement's log lines start."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int, end: int | None = None) -> str:
    """The text of ``path`` from byte ``offset`` on (up to byte ``end``, if given)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read() if end is None else fh.read(max(0, end - offset))
        return data.decode("utf-8", errors="replace")


# ``+OPTION`` suffixes of a pat label: the environment each sets on that server (one label per setting, so the
# results of two settings are kept apart and compared in one run).
LABEL_OPTIONS: dict[str, dict[str, str]] = {
    "all": {"PAT_SGLANG_MIN_SAVED_FRACTION": "0"},  # the dispatch gate off: PAT serves every decode batch
    # The gate declines every decode batch before any planning: PAT's patches publish and the gate reads the published
    # paths, the delegate serves everything. Against the delegate alone this isolates PAT's host cost other than
    # planning; against pat@DELEGATE, its planning. (A batch of n requests saves at most 1 - 1/n of its KV bytes:
    # the longest request's tokens are read at least once; below 1000 requests that is under 0.999.)
    "delegate": {"PAT_SGLANG_MIN_SAVED_FRACTION": "0.999"},
    # Re-made plans for batches whose requests only left and joined (``decode_step.REMAKE_PLANS_ENV``, opt-in)
    "remade": {"PAT_SGLANG_REMAKE_PLANS": "1"},
}


@dataclass(frozen=True)
class BackendLabel:
    """A backend label ``NAME[@DELEGATE][+OPTION...]``: SGLang's ``--attention-backend NAME``; for ``pat``,
    ``@DELEGATE`` names the backend that serves prefill (``PAT_SGLANG_DELEGATE``; none: SGLang's default for the GPU)
    and each ``+OPTION`` sets the environment ``LABEL_OPTIONS`` gives it."""

    label: str
    attention_backend: str
    env: Mapping[str, str]

    @staticmethod
    def parse(label: str) -> BackendLabel:
        head, *options = label.strip().split("+")
        name, at, delegate = head.partition("@")
        if not name or (at and not delegate):
            raise ValueError(f"backend label {label!r}: expected NAME[@DELEGATE][+OPTION...]")
        if (delegate or options) and name != "pat":
            raise ValueError(f"backend label {label!r}: '@DELEGATE' and '+OPTION' apply to pat only")
        env = {"PAT_SGLANG_DELEGATE": delegate} if delegate else {}
        for option in options:
            if option not in LABEL_OPTIONS:
                raise ValueError(f"backend label {label!r}: unknown option {option!r} (known: {sorted(LABEL_OPTIONS)})")
            env.update(LABEL_OPTIONS[option])
        return BackendLabel(label.strip(), name, env)


def backend_labels(text: str) -> list[str]:
    """The ``--backends`` argument of both harnesses (an argparse ``type``): comma-separated backend labels, each
    checked by ``BackendLabel.parse``, none twice; ``argparse.ArgumentTypeError`` says what is wrong."""
    labels = [b.strip() for b in text.split(",") if b.strip()]
    if not labels:
        raise argparse.ArgumentTypeError("no backend given")
    for label in labels:
        try:
            BackendLabel.parse(label)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    if len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(f"a backend is named twice in {text!r}")
    return labels


def file_tag(backend: str) -> str:
    """The backend label as a file-name part (letters, digits, '-', '_', '.' only): "pat@fa3+all" -> "pat-fa3-all"."""
    return backend.replace("@", "-").replace("+", "-")
