"""A stand-in for ``sglang.launch_server`` used by the CPU tests of the A/B harness.

Serves ``/health_generate`` and a token-id ``/generate`` (streamed SSE or a JSON batch) on 127.0.0.1, and prints
"Decode batch" lines in SGLang's format. Output tokens are a function of the prompt (its last token + i), so two
"backends" agree. For text clients (``sglang.bench_serving``): ``/generate`` also takes ``"text"`` (one token per
white-space separated word) and streams the cumulative text, and ``/v1/models``, ``/model_info``, ``/server_info``
and ``POST /flush_cache`` answer as SGLang's do; every request is logged as one JSON line ``REQUEST {...}`` (prompt
tokens, max_new_tokens, temperature, arrival time) for the tests, and at start-up each ``PAT_SGLANG_*`` and
``PAT_BENCH_*`` variable of its environment as ``ENV NAME=VALUE`` and an installed dummy-weight import hook as
``IMPORT HOOK PatchFinder MODULE``. Usage: ``python fake_sglang_server.py --port N
[--die-after S] [--token-delay-s S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def outputs(ids: list[int], n: int) -> list[int]:
    return [(ids[-1] + i) % 1000 for i in range(n)] if ids else list(range(n))


TOKEN_DELAY_S = 0.001
T0 = time.monotonic()
_PRINT = threading.Lock()


def log(line: str) -> None:
    """One whole line to stdout (handler threads would interleave plain prints)."""
    with _PRINT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


_PAT_STEPS = [0]  # as a pat server ("ENV PAT_SGLANG_DELEGATE" set): its decode steps so far


def log_decode(line: str) -> None:
    """A 'Decode batch' line; as a pat server also PAT's cumulative stats line (0.05 ms a step, one in five handed to
    the delegate), as ``pat_sglang.step_stats.StepStats.summary`` writes it."""
    log(line)
    if "PAT_SGLANG_DELEGATE" in os.environ:
        with _PRINT:
            _PAT_STEPS[0] += 10
            n = _PAT_STEPS[0]
        log(f"[2026-11-24 00:00:00] PAT: {n} decode steps, host planning 0.050 ms mean / 0.500 ms max; publishing "
            f"radix paths 0.020 ms mean / 0.300 ms max, the two together 0.600 ms max in one step; plans reused "
            f"as they were 0; forests built 1 (0 of them edited from the last), reused 0; requests planned without "
            f"sharing (no published path) 0; plans "
            f"coarsened to fit the graph buffers 0; batches sharing too little, served by the delegate {n // 5} "
            f"({n // 5} decided without planning); batches PAT could not plan 0; steps reading rows back 0; steps "
            f"with a garbage collection {n // 10} (at most 0.300 ms of one collecting), max of the others 0.400 ms")


def words_to_ids(text: str) -> list[int]:
    """A stand-in tokenization: one id per white-space separated word (a stable function of the word)."""
    return [sum(map(ord, w)) % 1000 for w in text.split()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, obj: object, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            self._json({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            return
        if self.path in ("/model_info", "/server_info"):
            self._json({"model_path": "fake-model", "internal_states": [{}]})
            return
        body = b"ok"
        self.send_response(200 if self.path in ("/health", "/health_generate") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/flush_cache":
            log("FLUSH")
            self._json({"success": True})
            return
        n = int(req["sampling_params"]["max_new_tokens"])
        text_mode = "text" in req
        ids = words_to_ids(req["text"]) if text_mode else req["input_ids"]
        if text_mode or req.get("stream"):
            log("REQUEST " + json.dumps({"prompt_tokens": len(ids), "max_new_tokens": n, "t": time.monotonic() - T0,
                                         "temperature": req["sampling_params"].get("temperature")}))
        if text_mode and req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(1, n + 1):
                time.sleep(TOKEN_DELAY_S)
                chunk = {"text": " ".join(f"w{t}" for t in outputs(ids, n)[:i]),
                         "meta_info": {"completion_tokens": i, "prompt_tokens": len(ids)}}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            log_decode(f"[2026-11-24 00:00:00] Decode batch, #running-req: {threading.active_count() - 2}, #token: 10, "
                "token usage: 0.01, cuda graph: True, gen throughput (token/s): 100.00, #queue-req: 0,")
            self.close_connection = True
            return
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(1, n + 1):
                time.sleep(0.001)
                chunk = {"output_ids": outputs(ids, n)[i - 1 : i], "meta_info": {"completion_tokens": i}}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            log_decode("[2026-11-24 00:00:00] Decode batch, #running-req: 1, #token: 10, token usage: 0.01, "
                "cuda graph: True, gen throughput (token/s): 100.00, #queue-req: 0,")
            self.close_connection = True
            return
        batch = ids if ids and isinstance(ids[0], list) else [ids]
        out = [{"output_ids": outputs(x, n), "meta_info": {"completion_tokens": n}} for x in batch]
        if req.get("return_logprob"):  # SGLang's (logprob, token id, text) per output token; a function of the tokens
            for o in out:
                o["meta_info"]["output_token_logprobs"] = [[-1e-3 * (t % 7 + 1), t, None] for t in o["output_ids"]]
        body = json.dumps(out if ids and isinstance(ids[0], list) else out[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--die-after", type=float, default=0.0)
    ap.add_argument("--startup-delay", type=float, default=0.2)
    ap.add_argument("--token-delay-s", type=float, default=0.001)
    args, _ = ap.parse_known_args()
    global TOKEN_DELAY_S
    TOKEN_DELAY_S = args.token_delay_s
    if args.die_after:
        time.sleep(args.die_after)
        print("fake server: failing on purpose", flush=True)
        sys.exit(3)
    for name in sorted(k for k in os.environ if k.startswith(("PAT_SGLANG_", "PAT_BENCH_"))):
        log(f"ENV {name}={os.environ[name]}")
    for finder in sys.meta_path:  # the dummy-weight hook (bench/ab/dummy_weights/sitecustomize.py), if it ran here
        if hasattr(finder, "target"):
            log(f"IMPORT HOOK {type(finder).__name__} {finder.target}")
    time.sleep(args.startup_delay)
    ThreadingHTTPServer.request_queue_size = 256  # the listen backlog (default 5 drops bursts of connections)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    threading.Timer(300, srv.shutdown).start()  # never outlive a test run
    srv.serve_forever()


if __name__ == "__main__":
    main()
