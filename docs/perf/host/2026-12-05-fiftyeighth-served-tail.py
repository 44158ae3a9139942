"""Issue 9: where the served per-step host time's tail is (H200, Mooncake c256, 2026-12-05), from the committed server
logs of `docs/perf/serving/2026-12-05-h200-fiftyeighth/run{1,2}/logs.tar.xz`. The stats line (every second) carries the
steps since the line before and their maxima; differences of its cumulative counters say what those steps did (forests
made, plans reused, batches declined). Prints each one-second interval whose slowest step (publishing + planning) is at
or above the run's p99 (the stats line's own percentile), with what its steps did, and the same counts over all other
intervals. Run from the repository root: python3 docs/perf/host/2026-12-05-fiftyeighth-served-tail.py
"""

import io
import re
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNS = ROOT / "docs/perf/serving/2026-12-05-h200-fiftyeighth"
LINE = re.compile(
    r"\[(?P<t>[\d:\- ]+)\] PAT: (?P<steps>\d+) decode steps.*?per step p50 [\d.]+ / p90 [\d.]+ / p99 (?P<p99>[\d.]+) "
    r"ms.*?plans reused as they were (?P<reused>\d+); forests built (?P<built>\d+) \((?P<edited>\d+) of them edited.*?"
    r"served by the delegate (?P<declined>\d+).*?since the last line: (?P<n>\d+) steps, host planning at most "
    r"(?P<plan>[\d.]+) ms, with publishing (?P<host>[\d.]+) ms"
)
DECODE = re.compile(r"\[(?P<t>[\d:\- ]+)\] Decode batch, #running-req: (?P<bs>\d+), #token: (?P<tok>\d+)")
COUNTS = ("steps", "reused", "built", "edited", "declined")


def server_log(run: str) -> str:
    with tarfile.open(RUNS / run / "logs.tar.xz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("server-pat-flashinfer.log"))
        return io.TextIOWrapper(tar.extractfile(member), encoding="utf-8").read()


def main() -> None:
    for run in ("run1", "run2"):
        text = server_log(run)
        lines = list(LINE.finditer(text))
        p99 = float(lines[-1]["p99"])
        decodes = [(m["t"], int(m["bs"]), int(m["tok"])) for m in DECODE.finditer(text)]
        print(f"{run}: {lines[-1]['steps']} steps, stats line p99 {p99:.3f} ms; intervals with a step >= p99:")
        print(f"  {'time':<19} {'steps':>5} {'declined':>8} {'made':>4} {'edited':>6} {'reused':>6} {'plan max':>8} "
              f"{'host max':>8} {'batch':>5} {'tokens/req':>10}")
        tail = {k: 0 for k in COUNTS}
        rest = {k: 0 for k in COUNTS}
        for before, line in zip(lines, lines[1:], strict=False):
            d = {k: int(line[k]) - int(before[k]) for k in COUNTS}
            into = tail if float(line["host"]) >= p99 else rest
            for k in COUNTS:
                into[k] += d[k]
            if float(line["host"]) >= p99:
                near = [(bs, tok) for t, bs, tok in decodes if before["t"] <= t <= line["t"]]
                bs, tok = near[-1] if near else (0, 0)
                print(f"  {line['t']:<19} {d['steps']:>5} {d['declined']:>8} {d['built']:>4} {d['edited']:>6} "
                      f"{d['reused']:>6} {float(line['plan']):>8.3f} {float(line['host']):>8.3f} {bs:>5} "
                      f"{tok // max(bs, 1):>10}")
        for name, c in (("those intervals", tail), ("all other intervals", rest)):
            planned = c["steps"] - c["declined"]
            print(f"  {name}: {c['steps']} steps, {c['declined']} declined, {planned} PAT-served, of them "
                  f"{c['built']} with a forest made ({c['edited']} edited) and {c['reused']} plans reused")
        print()


if __name__ == "__main__":
    main()
