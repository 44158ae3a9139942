"""A stand-in for ``sglang.launch_server`` used by the CPU tests of the A/B harness.

Serves ``/health_generate`` and a token-id ``/generate`` (streamed SSE or a JSON batch) on 127.0.0.1, and prints
"Decode batch" lines in SGLang's format. Output tokens are a function of the prompt (its last token + i), so two
"backends" agree. Usage: ``python fake_sglang_server.py --port N [--die-after S]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def outputs(ids: list[int], n: int) -> list[int]:
    return [(ids[-1] + i) % 1000 for i in range(n)] if ids else list(range(n))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = b"ok"
        self.send_response(200 if self.path in ("/health", "/health_generate") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = int(req["sampling_params"]["max_new_tokens"])
        ids = req["input_ids"]
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
            print("[2026-11-24 00:00:00] Decode batch, #running-req: 1, #token: 10, token usage: 0.01, "
                  "cuda graph: True, gen throughput (token/s): 100.00, #queue-req: 0,", flush=True)
            self.close_connection = True
            return
        batch = ids if ids and isinstance(ids[0], list) else [ids]
        out = [{"output_ids": outputs(x, n), "meta_info": {"completion_tokens": n}} for x in batch]
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
    args, _ = ap.parse_known_args()
    if args.die_after:
        time.sleep(args.die_after)
        print("fake server: failing on purpose", flush=True)
        sys.exit(3)
    time.sleep(args.startup_delay)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    threading.Timer(300, srv.shutdown).start()  # never outlive a test run
    srv.serve_forever()


if __name__ == "__main__":
    main()
