"""Build the offline wheelhouse for SGLang 0.5.17 on the GPU machine (``make wheelhouse``).

Runs where PyPI is reachable. Steps:

1. ``pip download --no-deps --only-binary=:all:`` every pin in ``requirements-gpu.txt`` for CPython 3.12,
   manylinux x86_64 (glibc up to 2.39) into ``.wheelhouse/dl/`` (kept as a cache).
2. Trim ``sglang-kernel`` (FA3 ``flash_ops``, sm100 ops, FlashMLA, InfLLM ops) and ``xgrammar`` (static library),
   rewriting RECORD (``wheeltrim.py``).
3. Build the pat-sglang wheel of this repository (``pip wheel --no-deps``) into ``.wheelhouse/extra/``, and copy the
   head of the Mooncake conversation trace (``data/traces/``, or ``--trace``) there too as ``mooncake_head.jsonl``
   (the wheel does not carry the trace; the serving A/B harness falls back to this head).
4. Rewrite every wheel uncompressed and pack them into ``.wheelhouse/partN/wheels-N.tar.xz`` (solid xz compresses
   across wheels: ~104 MB of deflated wheels become ~56 MiB), each part below ``--max-part-mib``; write
   ``.wheelhouse/extra/MANIFEST.tsv`` (wheel, part, sha256).

On the far side ``tools/wheelhouse/install_offline.sh`` unpacks whatever parts were carried and installs them with
``pip --no-index --no-deps --target``.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from wheeltrim import trim_wheel, verify_wheel  # noqa: E402

MIB = 1024 * 1024
GLIBC_MINORS = (39, 38, 35, 34, 31, 28, 27, 26, 24, 17, 5)

#: members dropped from wheels (project name as in the file name -> fnmatch globs); see the anchors file.
TRIMS: dict[str, list[str]] = {
    "sglang_kernel": [
        "sgl_kernel/flash_ops.*.so",
        "sgl_kernel/sm100/*",
        "sgl_kernel/flashmla_ops.*.so",
        "sgl_kernel/infllm_ops.*.so",
    ],
    "xgrammar": ["xgrammar/lib/libxgrammar.a"],
}

#: the Mooncake conversation trace shipped in the repository (data/traces/, see its README); ``--trace`` overrides
TRACE = REPO / "data" / "traces" / "mooncake_conversation_trace.jsonl"
TRACE_HEAD_LINES = 2000


def copy_trace_head(src: Path, dst: Path, lines: int = TRACE_HEAD_LINES) -> None:
    """The first ``lines`` lines of the trace ``src`` into ``dst``."""
    if not src.exists():
        raise FileNotFoundError(f"Mooncake trace not found: {src} (pass --trace PATH)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src) as fin, open(dst, "w") as fout:
        for i, line in enumerate(fin):
            if i >= lines:
                break
            fout.write(line)


def platform_args() -> list[str]:
    """pip ``--platform`` flags for manylinux x86_64 up to glibc 2.39 (pip matches each tag exactly)."""
    plats = [f"manylinux_2_{m}_x86_64" for m in GLIBC_MINORS] + ["manylinux2014_x86_64", "manylinux1_x86_64", "any"]
    out: list[str] = []
    for p in plats:
        out += ["--platform", p]
    return out


def read_pins(path: Path) -> list[str]:
    """``name==version`` lines of a requirements file (comments and blanks dropped)."""
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            if "==" not in line:
                raise ValueError(f"unpinned requirement: {line}")
            pins.append(line)
    return pins


def dist_key(name: str) -> str:
    """Normalised project name (as wheel file names spell it)."""
    return name.lower().replace("-", "_").replace(".", "_")


def wheel_project(filename: str) -> str:
    """Normalised project name of a wheel file name."""
    return dist_key(filename.split("-", 1)[0])


def download(pins: Sequence[str], dest: Path, pip: Sequence[str]) -> None:
    """Fetch the pinned wheels into ``dest`` (skips pins already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {(wheel_project(w.name), w.name.split("-")[1]) for w in dest.glob("*.whl")}
    todo = [p for p in pins if (dist_key(p.split("==")[0]), p.split("==")[1]) not in have]
    if not todo:
        return
    cmd = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platform_args(), "-d", str(dest), *todo]
    subprocess.run(cmd, check=True)


def build_pat_wheel(dest: Path, pip: Sequence[str]) -> Path:
    """``pip wheel --no-deps`` of this repository into ``dest``; returns the wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("pat_sglang-*.whl"):
        old.unlink()
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(REPO)], check=True)
    (whl,) = dest.glob("pat_sglang-*.whl")
    return whl


@dataclass
class Part:
    """One archive part: the wheels it holds and their uncompressed size."""

    index: int
    wheels: list[Path]
    raw_bytes: int = 0


def plan_parts(wheels: Sequence[Path], max_raw_bytes: int) -> list[Part]:
    """First-fit-decreasing packing of wheels into parts whose uncompressed size stays under ``max_raw_bytes``."""
    parts: list[Part] = []
    for w in sorted(wheels, key=lambda p: (-p.stat().st_size, p.name)):
        size = w.stat().st_size
        for part in parts:
            if part.raw_bytes + size <= max_raw_bytes:
                part.wheels.append(w)
                part.raw_bytes += size
                break
        else:
            parts.append(Part(index=len(parts) + 1, wheels=[w], raw_bytes=size))
    for part in parts:
        part.wheels.sort(key=lambda p: p.name)
    return parts


def write_part(part: Part, out_dir: Path, preset: int) -> Path:
    """Solid ``tar.xz`` of the part's wheels at ``out_dir/partN/wheels-N.tar.xz``."""
    pdir = out_dir / f"part{part.index}"
    if pdir.exists():
        shutil.rmtree(pdir)
    pdir.mkdir(parents=True)
    dst = pdir / f"wheels-{part.index}.tar.xz"
    with lzma.open(dst, "wb", preset=preset) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for w in part.wheels:
            info = tar.gettarinfo(str(w), arcname=w.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(w, "rb") as fh:
                tar.addfile(info, fh)
    return dst


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".wheelhouse")
    ap.add_argument("--requirements", type=Path, default=HERE / "requirements-gpu.txt")
    ap.add_argument("--max-part-mib", type=float, default=50.0, help="hard limit per compressed part")
    ap.add_argument("--max-part-raw-mib", type=float, default=200.0, help="packing target, uncompressed")
    ap.add_argument("--xz-preset", type=int, default=9)
    ap.add_argument("--pip", default=f"{sys.executable} -m pip")
    ap.add_argument("--only-pat", action="store_true", help="rebuild only extra/ (pat wheel, trace head)")
    ap.add_argument("--trace", type=Path, default=None,
                    help=f"Mooncake trace whose first {TRACE_HEAD_LINES} lines go to extra/mooncake_head.jsonl "
                         "(default: data/traces/ of this repository, skipped with a note if missing; a given path "
                         "must exist)")
    args = ap.parse_args(argv)
    pip = args.pip.split()
    out: Path = args.out
    t0 = time.time()

    extra = out / "extra"
    pat = build_pat_wheel(extra, pip)
    print(f"pat wheel: {pat.name}")
    if args.trace is not None or TRACE.exists():
        copy_trace_head(args.trace or TRACE, extra / "mooncake_head.jsonl")
    else:
        print(f"no Mooncake trace at {TRACE} (pass --trace PATH); extra/mooncake_head.jsonl not written")
    if args.only_pat:
        return 0

    dl, stage = out / "dl", out / "stage"
    pins = read_pins(args.requirements)
    download(pins, dl, pip)
    wanted = {(dist_key(p.split("==")[0]), p.split("==")[1]) for p in pins}
    wheels = [w for w in sorted(dl.glob("*.whl")) if (wheel_project(w.name), w.name.split("-")[1]) in wanted]
    got = {(wheel_project(w.name), w.name.split("-")[1]) for w in wheels}
    if got != wanted:
        raise SystemExit(f"missing wheels: {sorted(wanted - got)}")
    if len(wheels) != len(wanted):
        raise SystemExit("two files for one pin in .wheelhouse/dl; remove the stale one")

    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    staged: list[Path] = []
    for w in wheels:
        dst = stage / w.name
        res = trim_wheel(w, dst, TRIMS.get(wheel_project(w.name), []), stored=True)
        problems = verify_wheel(dst)
        if problems:
            raise SystemExit(f"{dst.name}: {problems[:5]}")
        if res.removed:
            print(f"trimmed {w.name}: -{res.removed_bytes / MIB:.0f} MiB ({len(res.removed)} files)")
        staged.append(dst)

    parts = plan_parts(staged, int(args.max_part_raw_mib * MIB))
    for old in out.glob("part*"):
        shutil.rmtree(old)
    total = 0
    rows = []
    with ProcessPoolExecutor(max_workers=min(len(parts), os.cpu_count() or 1)) as pool:
        paths = list(pool.map(write_part, parts, [out] * len(parts), [args.xz_preset] * len(parts)))
    for part, path in zip(parts, paths, strict=True):
        size = path.stat().st_size
        total += size
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {len(part.wheels)} wheels, "
              f"{part.raw_bytes / MIB:.0f} MiB raw -> {size / MIB:.1f} MiB")
        if size > args.max_part_mib * MIB:
            raise SystemExit(f"part {part.index}: {size / MIB:.1f} MiB > {args.max_part_mib}; lower --max-part-raw-mib")
        rows += [f"{w.name}\tpart{part.index}\t{sha256_file(w)}" for w in part.wheels]
    (extra / "MANIFEST.tsv").write_text("wheel\tpart\tsha256\n" + "\n".join(rows) + "\n")
    shutil.rmtree(stage)
    carry = [f".wheelhouse/part{p.index}" for p in parts] + [".wheelhouse/extra"]
    print(f"total {total / MIB:.1f} MiB in {len(parts)} parts ({time.time() - t0:.0f} s); carry: {' '.join(carry)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
