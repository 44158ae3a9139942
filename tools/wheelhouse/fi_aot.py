"""Carry FlashInfer's compiled kernels from one GPU machine to the next, so its JIT (~280 s on a fresh H200) runs once.

FlashInfer (0.6.x, a pure-Python wheel) compiles each kernel module on first use into
``$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer/<version>/<arch>/cached_ops/<name>/<name>.so``. Restoring that cache on
a fresh machine does not help: the build runs through ninja, and the freshly installed sources are newer than any
restored library, so everything is compiled again. FlashInfer also looks for a ready library first, in its AOT
folder ``<site>/flashinfer/data/aot/<name>/<name>.so`` (``JitSpec.build_and_load``: ``is_aot``), and loads it without
building. So only the libraries travel, and they go there.

There, after a run that compiled what the servers need (e.g. ``serving_sweep.py --warmup-only`` with flashinfer)::

    python3 tools/wheelhouse/fi_aot.py pack --cache /tmp/fi-cache --out $OUT/fi [--piece-mib 15]

writes the libraries as one tar cut into xz pieces (``pieces.split``: ``$OUT/fi/manifest.json``,
``$OUT/fi/pNN/piece.xz``). At most 8 files, 16 MiB each and 64 MiB in all come back from a call: with more than
four pieces, pack into a folder under /tmp instead and copy the manifest and four pieces at a time into ``$OUT/fi``,
one call each. Here, keep them in the git-ignored ``.fi-aot/``. On the next machine, after the wheelhouse install,
one call per piece (as for fa3's pieces)::

    python3 tools/wheelhouse/pieces.py stash --src .fi-aot --store /tmp/fi-aot
    python3 tools/wheelhouse/pieces.py assemble --store /tmp/fi-aot --dest /tmp/fi-aot.tar
    python3 tools/wheelhouse/fi_aot.py install --tar /tmp/fi-aot.tar --site /tmp/pat-site

The libraries are only valid for the same FlashInfer version, CUDA toolkit and GPU architecture: ``pack`` records
them in the tar (``aot.json``) and ``install`` refuses another FlashInfer version.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pieces  # noqa: E402

MEMBER = "flashinfer-aot.tar"
INFO = "aot.json"
DEFAULT_PIECE_MIB = 15  # what comes back from a device call: at most 16 MiB a file
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def compiled_modules(cache: Path) -> dict[str, Path]:
    """Every compiled module under a FlashInfer workspace: name -> ``cached_ops/<name>/<name>.so``."""
    found: dict[str, Path] = {}
    for so in sorted(cache.rglob("cached_ops/*/*.so")):
        name = so.parent.name
        if so.name == f"{name}.so" and _NAME.fullmatch(name):
            if name in found:
                raise ValueError(f"module {name} is compiled twice under {cache} ({found[name]}, {so}): pass the "
                                 "workspace of one FlashInfer version and architecture")
            found[name] = so
    return found


def write_tar(modules: dict[str, Path], tar_path: Path, info: dict) -> None:
    """``<name>/<name>.so`` per module, plus ``aot.json`` (``info`` and the module names)."""
    with tarfile.open(tar_path, "w") as tar:
        body = json.dumps({**info, "modules": sorted(modules)}, indent=1).encode()
        entry = tarfile.TarInfo(INFO)
        entry.size = len(body)
        tar.addfile(entry, io.BytesIO(body))
        for name, so in sorted(modules.items()):
            tar.add(so, arcname=f"{name}/{name}.so")


def pack(cache: Path, out: Path, piece_mib: int = DEFAULT_PIECE_MIB, info: dict | None = None) -> dict:
    """The compiled modules under ``cache`` as pieces under ``out``; returns the pieces' manifest."""
    modules = compiled_modules(cache)
    if not modules:
        raise FileNotFoundError(f"no compiled FlashInfer module under {cache} (cached_ops/<name>/<name>.so)")
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / MEMBER
    write_tar(modules, tar_path, info if info is not None else flashinfer_info())
    try:
        return pieces.split(tar_path, MEMBER, out, piece_mib)
    finally:
        tar_path.unlink(missing_ok=True)


def install(tar_path: Path, site: Path, version: str | None = None) -> list[str]:
    """Unpack the modules into ``<site>/flashinfer/data/aot/``; returns their names. ``version``: the installed
    FlashInfer's (default: read from ``site``); another version's libraries are refused."""
    aot = site / "flashinfer" / "data" / "aot"
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        info_member = tar.extractfile(INFO) if INFO in tar.getnames() else None
        if info_member is None:
            raise ValueError(f"{tar_path} has no {INFO}: not made by fi_aot.py pack")
        info = json.loads(info_member.read())
        have = version if version is not None else installed_version(site)
        if info.get("flashinfer") != have:
            raise ValueError(f"the libraries are FlashInfer {info.get('flashinfer')}'s; {site} has {have}")
        names = []
        for m in members:
            if m.name == INFO:
                continue
            parts = m.name.split("/")
            if not (m.isfile() and len(parts) == 2 and _NAME.fullmatch(parts[0]) and parts[1] == f"{parts[0]}.so"):
                raise ValueError(f"unexpected member {m.name!r} in {tar_path}")
            target = aot / parts[0] / parts[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            target.write_bytes(src.read())
            names.append(parts[0])
    return names


def installed_version(site: Path) -> str:
    """FlashInfer's version as installed under ``site`` (its dist-info), without importing it (importing needs a
    GPU and torch)."""
    found = sorted(site.glob("flashinfer_python-*.dist-info"))
    if not found:
        raise FileNotFoundError(f"no flashinfer_python dist-info under {site}")
    return found[-1].name[len("flashinfer_python-"):-len(".dist-info")]


def flashinfer_info() -> dict:
    """What the libraries were built for: FlashInfer's version, the CUDA toolkit torch was built with, the GPU."""
    import flashinfer  # noqa: PLC0415 (on the GPU machine only)
    import torch  # noqa: PLC0415

    cap = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return {"flashinfer": flashinfer.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name() if cap else None, "sm": f"{cap[0]}{cap[1]}" if cap else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="(GPU machine) compiled modules -> pieces")
    p.add_argument("--cache", type=Path, required=True, help="FLASHINFER_WORKSPACE_BASE of the run that compiled")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--piece-mib", type=int, default=DEFAULT_PIECE_MIB)
    i = sub.add_parser("install", help="(GPU machine) assembled tar -> FlashInfer's AOT folder")
    i.add_argument("--tar", type=Path, required=True)
    i.add_argument("--site", type=Path, required=True, help="the folder FlashInfer is installed in")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        m = pack(args.cache, args.out, args.piece_mib)
        print(f"{len(m['pieces'])} pieces, {m['compressed_bytes'] / pieces.MIB:.1f} MiB xz of "
              f"{m['bytes'] / pieces.MIB:.1f} MiB: {', '.join(p['folder'] for p in m['pieces'])}")
    else:
        names = install(args.tar, args.site)
        print(f"installed {len(names)} FlashInfer modules into {args.site}/flashinfer/data/aot: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
