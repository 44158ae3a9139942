"""What the serving sweep (``bench/serving_sweep.py``) measures, and its resumable results file.

Workloads are ``sglang.bench_serving`` dataset arguments (see ``default_workloads``); loads are labels:

* ``c<N>``: closed loop, N requests in flight (``--max-concurrency N``, all requests queued at t=0);
* ``x<F>``: open loop at F times the reference backend's capacity on that workload, where the capacity is the request
  throughput it reached in its ``c256`` point (so both backends get the same absolute rate, and ``x1.0`` is the
  saturation point);
* ``r<R>``: open loop at R requests/s.

A point is (backend, workload, load). Every measured point is one JSON line appended to ``results.jsonl`` as soon as
it is done; a rerun skips points whose line is there (same workload definition and server settings: both are hashed
into the line), so a sweep longer than one device call runs as several calls over the same file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import shutil
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .bench_serving import arg_value

CAPACITY_LOAD = "c256"
CLOSED_LOADS: tuple[str, ...] = ("c64", CAPACITY_LOAD)
RATE_LOADS: tuple[str, ...] = ("x0.4", "x0.7", "x1.0")


@dataclass(frozen=True)
class SweepWorkload:
    """One workload: the bench_serving arguments that define its requests, and how many requests it sends."""

    name: str
    dataset_args: tuple[str, ...]
    requests: int
    summary: str
    rate_loads: bool = False  # gets the open-loop rate points by default

    @property
    def trace(self) -> Path | None:
        """The Mooncake trace file (``--dataset-path``) of a replay, else None."""
        if arg_value(self.dataset_args, "--dataset-name") != "mooncake":
            return None
        path = arg_value(self.dataset_args, "--dataset-path")
        return Path(path) if path else None


def gsp_args(groups: int, per_group: int, system_len: int, question_len: int, output_len: int,
             extra: Sequence[str] = ()) -> tuple[str, ...]:
    """generated-shared-prefix arguments, every size written out (not left to bench_serving's defaults)."""
    return ("--dataset-name", "generated-shared-prefix", "--gsp-num-groups", str(groups),
            "--gsp-prompts-per-group", str(per_group), "--gsp-system-prompt-len", str(system_len),
            "--gsp-question-len", str(question_len), "--gsp-output-len", str(output_len), *extra)


def default_workloads(trace: Path, mooncake_n: int = 320) -> dict[str, SweepWorkload]:
    """The five workloads of issue 11 (each >= 300 requests)."""
    return {w.name: w for w in (
        SweepWorkload("gsp", gsp_args(64, 16, 2048, 128, 256), 64 * 16,
                      "generated-shared-prefix with SGLang's defaults: 64 groups x 16 prompts, 2048-token system "
                      "prompt + 128-token question, 256 output tokens", rate_loads=True),
        SweepWorkload("gsp-deep", gsp_args(10, 32, 8192, 128, 256), 10 * 32,
                      "generated-shared-prefix, deeper: 10 groups x 32 prompts sharing an 8192-token system prompt, "
                      "128-token question, 256 output tokens"),
        SweepWorkload("mooncake", ("--dataset-name", "mooncake", "--dataset-path", str(trace),
                                   "--mooncake-workload", "conversation", "--num-prompts", str(mooncake_n)),
                      mooncake_n,
                      f"Mooncake conversation trace, first {mooncake_n} requests, replayed by bench_serving (its "
                      "prompts: 128 'hi' tokens + the hash id per trace block, so equal ids share; trace output "
                      "lengths); loads scale the trace's own arrival times", rate_loads=True),
        SweepWorkload("rollout", gsp_args(20, 16, 1024, 0, 2048, ("--gsp-ordered", "--temperature", "1.0")), 20 * 16,
                      "RL rollouts: 20 prompts of 1024 tokens x 16 samples each (identical prompts, temperature 1, "
                      "sent prompt by prompt), 2048 output tokens"),
        SweepWorkload("random", ("--dataset-name", "random-ids", "--num-prompts", "320", "--random-input-len", "2048",
                                 "--random-output-len", "256", "--random-range-ratio", "1.0"), 320,
                      "random token ids, no sharing: 320 prompts of 2048 tokens, 256 output tokens"),
    )}


def parse_load(label: str) -> tuple[str, float]:
    """``"c64"`` -> ("c", 64), ``"x0.7"`` -> ("x", 0.7), ``"r3"`` -> ("r", 3.0); raises on anything else."""
    kind, value = label[:1], label[1:]
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if kind not in ("c", "x", "r") or not math.isfinite(number) or number <= 0 or (kind == "c" and number % 1):
        raise ValueError(f"bad load {label!r}: c<N> (concurrency), x<F> (x reference capacity) or r<R> (req/s)")
    return kind, number


def load_order(label: str) -> tuple[int, float]:
    """Sort key: closed loops by concurrency, then open loops by rate (fractions before absolute rates)."""
    kind, value = parse_load(label)
    return ({"c": 0, "x": 1, "r": 2}[kind], value)


def default_loads(workload: SweepWorkload) -> list[str]:
    return list(CLOSED_LOADS) + (list(RATE_LOADS) if workload.rate_loads else [])


def short_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def workload_id(workload: SweepWorkload) -> str:
    """Hash of what defines the requests: the dataset arguments, with a trace path replaced by the file's digest
    (the same trace at another path is the same workload)."""
    args = list(workload.dataset_args)
    for i, a in enumerate(args[:-1]):
        if a == "--dataset-path":
            path = Path(args[i + 1])
            args[i + 1] = f"sha256:{file_digest(path)}" if path.exists() else f"missing:{path.name}"
    return short_hash([workload.name, args])


@dataclass(frozen=True)
class Point:
    backend: str
    workload: SweepWorkload
    load: str


def plan(backends: Sequence[str], workloads: Sequence[SweepWorkload],
         loads: Mapping[str, Sequence[str]]) -> list[Point]:
    """Backend-major (one server start each), then workload, then load (closed loops first: the reference's c256
    gives the capacity that the x-loads need)."""
    return [Point(b, w, load) for b in backends for w in workloads
            for load in sorted(dict.fromkeys(loads[w.name]), key=load_order)]


def trace_rate(path: Path, n: int) -> float:
    """Mean arrival rate (requests/s) of the first ``n`` requests of a Mooncake trace (timestamps in ms)."""
    stamps: list[float] = []
    with open(path) as fh:
        for line in fh:
            if len(stamps) >= n:
                break
            if line.strip():
                stamps.append(float(json.loads(line)["timestamp"]))
    stamps.sort()
    span_s = (stamps[-1] - stamps[0]) / 1000.0 if len(stamps) > 1 else 0.0
    if span_s <= 0:
        raise ValueError(f"{path}: the first {n} requests span no time; a rate replay is undefined")
    return (len(stamps) - 1) / span_s


MEASURED = ("ok", "partial")
PRIOR_KEY = "prior"  # on rows a store merged in from ``prior`` files: the file they came from (merges leave them out)


class ResultStore:
    """``results.jsonl``: one JSON object per line, appended and flushed as each is made; the last line of a key wins.

    Kinds: ``point`` (a measurement), ``check`` (a backend's greedy outputs), ``server`` (a start: time, command).
    ``prior`` files (e.g. the repository's copy, when the device run writes into a fresh folder) are merged in once,
    when ``path`` does not exist yet, each row tagged with its file (``PRIOR_KEY``) so that ``merge_calls`` can tell
    a call's own rows from those it was given.
    """

    def __init__(self, path: Path, prior: Iterable[Path] = ()) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            self.rows = read_jsonl(path)
        else:
            seen: set[str] = set()
            for p in prior:
                for row in read_jsonl(p):
                    line = json.dumps(row, sort_keys=True)
                    if line not in seen:
                        seen.add(line)
                        self.rows.append({PRIOR_KEY: str(p), **row})  # a row merged again keeps its first file
            if self.rows:
                self.rewrite()

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(row)

    def rewrite(self) -> None:
        """Write the rows as they are now (the merged priors, or rows a caller changed in place)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.writelines(json.dumps(r, default=str) + "\n" for r in self.rows)
        tmp.replace(self.path)

    def latest(self, kind: str, **match: object) -> dict | None:
        """The last row of ``kind`` whose fields equal ``match``."""
        for row in reversed(self.rows):
            if row.get("kind") == kind and all(row.get(k) == v for k, v in match.items()):
                return row
        return None

    def measured(self, backend: str, workload: str, load: str, workload_id: str, server_id: str) -> dict | None:
        row = self.latest("point", backend=backend, workload=workload, load=load, workload_id=workload_id,
                          server_id=server_id)
        return row if row is not None and row.get("status") in MEASURED else None

    def points(self) -> list[dict]:
        """The last row of every point key, in first-seen order."""
        last: dict[tuple, dict] = {}
        for row in self.rows:
            if row.get("kind") == "point":
                key = point_key(row)
                last.pop(key, None)  # re-insert: order of the latest measurement
                last[key] = row
        return list(last.values())


def point_key(row: dict) -> tuple:
    """What makes two point rows measurements of the same point: (backend, workload, load, workload_id, server_id)."""
    return (row.get("backend"), row.get("workload"), row.get("load"), row.get("workload_id"), row.get("server_id"))


def merge_calls(sources: Sequence[Path], dest: Path) -> int:
    """Gather the folders that separate device calls wrote (``<call>/results.jsonl`` and the call's logs, as ``logs/``
    or the ``logs.tgz`` the device hands back) into ``dest``, oldest call first: each call's own rows (not those it
    was given with ``--prior``) are appended to ``dest/results.jsonl`` unless already there; a server log is appended
    to the one of the same backend unless already in it (each server's lines carry their times, so a point's lines
    are found by time, as within one call); other log files are copied (a later call's file of the same name replaces
    an earlier one). Returns the rows added."""
    store = ResultStore(dest / "results.jsonl")
    have = {json.dumps(r, sort_keys=True) for r in store.rows}
    logs = dest / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    added = 0
    for src in sources:
        for row in read_jsonl(src / "results.jsonl"):
            line = json.dumps(row, sort_keys=True)
            if PRIOR_KEY in row or line in have:
                continue
            have.add(line)
            store.append(row)
            added += 1
        for name, data in _call_logs(src):
            _gather_log(logs / name, data, older=False)
    return added


def _gather_log(target: Path, data: bytes, older: bool) -> None:
    """Put one gathered log file's ``data`` at ``target``: a server log joins the one already there (``older``: before
    it, else after it) unless it is already in it (every server's lines carry their times, so a point's lines are
    found by time); another file replaces an older one and gives way to a newer one (a point measured again)."""
    if not target.exists():
        target.write_bytes(data)
    elif target.name.startswith("server-"):
        have = target.read_bytes()
        if data not in have:  # else gathered before
            target.write_bytes(data + have if older else have + data)
    elif not older:
        target.write_bytes(data)


LOGS_ARCHIVE = "logs.tgz"


def unpack_logs(folder: Path) -> Path:
    """``folder/logs`` as a directory holding every log of the folder: those packed in ``folder/logs.tgz``
    (``pack_logs``) gathered into it as older than any written since (a run resumed in a packed folder writes a new
    ``logs/``), so that packing again loses none."""
    logs = folder / "logs"
    archive = folder / LOGS_ARCHIVE
    if archive.exists():
        logs.mkdir(parents=True, exist_ok=True)
        for name, data in _archived_logs(archive):
            _gather_log(logs / name, data, older=True)
    return logs


def pack_logs(folder: Path) -> Path | None:
    """Pack ``folder/logs/`` into ``folder/logs.tgz`` (members ``logs/<name>``, as the device hands logs back) and
    remove the directory; None where there is none. The archive is the same bytes for the same logs (sorted members,
    fixed times and owners): a report rewritten without new logs changes nothing. Committed serving folders keep
    their logs packed because every device call carries the repository's tracked tree (64 MiB per call in all),
    and plain-text server logs were 10 of its 25 MB."""
    logs = folder / "logs"
    if not logs.is_dir():
        return None
    archive = folder / LOGS_ARCHIVE
    tmp = archive.with_name(archive.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(logs.iterdir()):
            if not f.is_file():
                continue
            info = tarfile.TarInfo(f"logs/{f.name}")
            data = f.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(archive)
    shutil.rmtree(logs)
    return archive


def archive_folder(folder: Path, path: Path) -> Path:
    """Pack ``folder`` (every file under it) into the gzipped tar ``path``, members ``<folder name>/...``: one file
    to hand back from a device call, which returns only so many (``serving_sweep.py --archive``). Written to a
    temporary name first, so a reader never sees half an archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    tmp.replace(path)
    return path


def _call_logs(src: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of a call's logs: ``src/logs/*``, or the ``logs/`` members of ``src/logs.tgz``."""
    if (src / "logs").is_dir():
        return [(f.name, f.read_bytes()) for f in sorted((src / "logs").iterdir()) if f.is_file()]
    if not (src / LOGS_ARCHIVE).exists():
        return []
    return _archived_logs(src / LOGS_ARCHIVE)


def _archived_logs(archive: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the ``logs/`` members of a logs archive."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 2 and parts[0] == "logs":
                out.append((parts[1], tar.extractfile(member).read()))
    return sorted(out)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a run killed while writing) is dropped."""
    rows: list[dict] = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def reference_capacity(store: ResultStore, reference: str, workload: str, workload_id: str, server_id: str,
                       capacity_load: str = CAPACITY_LOAD) -> float | None:
    """Requests/s the reference backend sustained in its ``capacity_load`` point of ``workload`` (None if not yet
    measured)."""
    row = store.measured(reference, workload, capacity_load, workload_id, server_id)
    value = row.get("request_throughput") if row else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def target_rate(label: str, capacity: float | None) -> float | None:
    """Requests/s of an open-loop label (None for a closed loop, or for ``x<F>`` before the capacity is known)."""
    kind, value = parse_load(label)
    if kind == "c":
        return None
    if kind == "r":
        return value
    return value * capacity if capacity else None


def estimate_s(store: ResultStore, point: Point, workload_id: str, rate: float | None, default_s: float,
               overhead_s: float = 25.0) -> float:
    """Expected seconds of a point: the longest measurement of the same point by any backend (x 1.2), else for an
    open loop the time to send all requests at ``rate``, else ``default_s``; plus bench_serving's start-up, warm-up
    request and cache flush (``overhead_s``)."""
    durations = [float(r["duration"]) for r in store.rows
                 if r.get("kind") == "point" and r.get("workload") == point.workload.name
                 and r.get("load") == point.load and r.get("workload_id") == workload_id
                 and r.get("status") in MEASURED and isinstance(r.get("duration"), (int, float))]
    if durations:
        return 1.2 * max(durations) + overhead_s
    if rate:
        return 1.1 * point.workload.requests / rate + 20.0 + overhead_s
    return default_s + overhead_s
