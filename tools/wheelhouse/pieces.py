"""Carry a file larger than one device transfer (64 MB) as compressed pieces, one piece per call, and assemble it
on the far side: here for FA3's kernels (``sgl_kernel/flash_ops.abi3.so``, 1.12 GB unpacked), which the wheelhouse
trims because no single transfer can take them, so that fa3, SGLang's default attention backend on Hopper, can be
measured beside pat.

Measured here (2026-11-29, this project's 2-core VM): sglang-kernel 0.4.5's ``flash_ops.abi3.so`` is 1,122,607,032
bytes; ``xz -6`` makes it 148,187,072 bytes (141 MiB) in 306 s, so three equal pieces of 47.1 MiB (``recut
--pieces 3``; four of 38 MiB before the serving logs were packed, 2026-11-30), one device call each, each within the
warm window of the one before. A piece and the working tree travel together
(20.7 MB of tracked files on 2026-11-30: a 44 MiB piece no longer fitted beside it), so pieces grow smaller as the
repository grows: ``recut`` re-cuts existing pieces without the wheel. Tried and dropped (2026-11-30): the library
holds each kernel as sm_80, sm_86 and sm_90a cubins (269 + 269 + 497 MB), and zeroing the two sm_8x copies in its fat
binaries shrinks the xz stream only from 141 to 122 MiB (still four pieces: the sm_90a cubins are most of it), while
``cuobjdump`` then refuses the file ("Invalid ELF"), so the CUDA loader's reaction would need a GPU call to learn.

How big a piece may be: ``pieces.py room`` prints what one call carries beside this repository's working tree (the
tracked files and the untracked ones git does not ignore, which every call copies; 42 MiB on 2026-12-02 left 21 MiB),
and ``--piece-mib auto`` cuts pieces of that size. The wheelhouse's parts go the same way (``make wheelhouse-pieces``).

Here (PyPI side)::

    python tools/wheelhouse/pieces.py split --wheel .wheelhouse/dl/sglang_kernel-*.whl \\
        --member sgl_kernel/flash_ops.abi3.so --out .fa3 [--piece-mib 38]
    python tools/wheelhouse/pieces.py recut --src .fa3 --piece-mib 34    # the same stream in smaller pieces
    python tools/wheelhouse/pieces.py recut --src .fa3 --pieces 3        # ... or in three equal ones

writes ``.fa3/p00/piece.xz``, ``.fa3/p01/piece.xz``, ... (the xz stream of the member cut into pieces) and
``.fa3/manifest.json`` (member, its size and sha256, each piece's size and sha256). The manifest travels with every
call (put ``.fa3/manifest.json`` beside the piece in ``carry``).

There (the GPU machine), one device call per piece, each within the warm window of the last (files outside the
copied tree survive between calls while the machine stays up)::

    python3 tools/wheelhouse/pieces.py stash --src .fa3 --store /tmp/fa3      # copies what this call carried
    python3 tools/wheelhouse/pieces.py assemble --store /tmp/fa3 --dest /tmp/pat-site/sgl_kernel/flash_ops.abi3.so

``stash`` checks each carried piece against the manifest and says which are still missing; ``assemble`` refuses
until all are there, then decompresses and checks the member's size and sha256 before moving it into place.

The other direction works the same way for any file (``split --file``): FlashInfer's compiled kernels, built once
on a fresh GPU machine (~280 s), are packed there into pieces under ``$OUT`` and carried to the next machine like
fa3's (``fi_aot.py`` beside this file: only the libraries, installed where FlashInfer loads them without building).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

MIB = 1 << 20
# What one device call carries in all (the working tree and the carried paths), as the device counts it: 64 MB,
# not MiB. On 2026-12-02 a 45.1 MiB tree with an 18.0 MiB piece (63.1 MiB, 66.1 MB) was refused as "larger than 64
# MiB", and the same tree with a 15.0 MiB piece (62.9 MB) was carried.
CALL_CARRY_BYTES = 64_000_000
CARRY_MARGIN_BYTES = MIB  # left free beside a piece (the manifest, files added before the call)
# The default when no size is given: room for a tree of up to ~17 MB (2026-11-30's); the tree has grown since (42 MiB
# on 2026-12-02), so the make targets pass ``--piece-mib auto`` (``room_mib``)
DEFAULT_PIECE_MIB = 47
MANIFEST = "manifest.json"
PIECE = "piece.xz"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout whose working tree travels with each call


def tree_bytes(root: Path) -> int:
    """The bytes of the working tree a device call copies: ``root``'s tracked files and its untracked files that git
    does not ignore (``git ls-files --cached --others --exclude-standard``; a tracked file deleted here counts 0)."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout
    files = {name for name in listed.decode().split("\0") if name}
    return sum((root / name).stat().st_size for name in files if (root / name).is_file())


def room_mib(root: Path, tree: int | None = None) -> int:
    """The largest whole piece in MiB that one device call carries beside ``root``'s working tree (``tree``, its
    ``tree_bytes`` where not given), leaving ``CARRY_MARGIN_BYTES``; ``ValueError`` if the tree leaves no MiB (then
    nothing can be carried)."""
    tree = tree_bytes(root) if tree is None else tree
    room = (CALL_CARRY_BYTES - CARRY_MARGIN_BYTES - tree) // MIB
    if room < 1:
        raise ValueError(f"the working tree under {root} takes {tree / MIB:.1f} MiB of a call's "
                         f"{CALL_CARRY_BYTES / MIB:.1f}: no room for a piece")
    return room


def piece_mib_arg(text: str) -> int:
    """``--piece-mib``: a positive number of MiB, or ``auto``: ``room_mib`` of the repository this file is in."""
    if text == "auto":
        return room_mib(REPO_ROOT)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--piece-mib takes a number of MiB or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--piece-mib must be at least 1, got {value}")
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(8 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def _xz(src: Path, dst: Path, preset: int) -> None:
    """xz-compress ``src`` into ``dst`` (the xz tool with all cores when present, else Python's lzma)."""
    if shutil.which("xz"):
        with dst.open("wb") as out:
            subprocess.run(["xz", "-T0", f"-{preset}", "-c", str(src)], stdout=out, check=True)
        return
    with src.open("rb") as f, lzma.open(dst, "wb", preset=preset) as out:
        shutil.copyfileobj(f, out, 8 * MIB)


def split(member_file: Path, member: str, out: Path, piece_mib: int = DEFAULT_PIECE_MIB, preset: int = 6) -> dict:
    """Compress ``member_file`` and cut the stream into ``out/pNN/piece.xz``; write and return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    stream = out / "stream.xz"
    _xz(member_file, stream, preset)
    pieces = _write_pieces(stream.read_bytes(), out, piece_mib * MIB)
    stream.unlink()
    manifest = {
        "member": member,
        "bytes": member_file.stat().st_size,
        "sha256": _sha256(member_file),
        "compressed_bytes": sum(p["bytes"] for p in pieces),
        "pieces": pieces,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def split_wheel(wheel: Path, member: str, out: Path, piece_mib: int = DEFAULT_PIECE_MIB, preset: int = 6) -> dict:
    """``split`` for a member of a wheel (extracted to a temporary file beside ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "member.tmp"
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 8 * MIB)
    try:
        return split(tmp, member, out, piece_mib, preset)
    finally:
        tmp.unlink(missing_ok=True)


def _write_pieces(stream: bytes, out: Path, limit: int) -> list[dict]:
    """Cut ``stream`` into ``out/pNN/piece.xz`` (after removing the pieces there); the manifest's piece entries."""
    for old in out.glob("p[0-9][0-9]"):
        shutil.rmtree(old)
    pieces = []
    for i in range(0, len(stream), limit):
        chunk = stream[i : i + limit]
        folder = out / f"p{i // limit:02d}"
        folder.mkdir(parents=True)
        (folder / PIECE).write_bytes(chunk)
        pieces.append({"folder": folder.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    return pieces


def _checked_piece(path: Path, entry: dict, what: str = "piece", hint: str = "") -> bytes:
    """The bytes of the piece at ``path``, which must be the manifest's ``entry`` (its sha256): the one check of a
    piece, for ``recut``, ``stash`` and ``assemble``."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{what} {entry['folder']} differs from the manifest{hint}")
    return data


def recut(src: Path, piece_mib: int | None = DEFAULT_PIECE_MIB, count: int | None = None) -> dict:
    """Re-cut the pieces under ``src`` into pieces of at most ``piece_mib`` MiB, or into ``count`` pieces of equal
    size (the smallest largest piece for that many calls); the same compressed stream, checked piece by piece first.
    Rewrite the manifest and return it."""
    if (piece_mib is None) == (count is None) or (count is not None and count < 1):
        raise ValueError("recut takes a piece size in MiB or a positive count of pieces, not both")
    manifest = json.loads((src / MANIFEST).read_text())
    stream = b"".join(_checked_piece(src / p["folder"] / PIECE, p) for p in manifest["pieces"])
    if len(stream) != manifest["compressed_bytes"]:
        raise ValueError("the pieces do not add up to the manifest's compressed size")
    limit = piece_mib * MIB if piece_mib is not None else -(-len(stream) // count)
    manifest["pieces"] = _write_pieces(stream, src, limit)
    (src / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def stash(src: Path, store: Path) -> list[str]:
    """Copy the pieces carried under ``src`` (and the manifest) into ``store``, each checked; return the folders of
    the pieces still missing from ``store``."""
    manifest = json.loads((src / MANIFEST).read_text())
    store.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / MANIFEST, store / MANIFEST)
    for p in manifest["pieces"]:
        carried = src / p["folder"] / PIECE
        if carried.exists():
            (store / f"{p['folder']}.xz").write_bytes(_checked_piece(carried, p, hint=" (damaged in transfer?)"))
    return missing(store)


def missing(store: Path) -> list[str]:
    manifest = json.loads((store / MANIFEST).read_text())
    return [p["folder"] for p in manifest["pieces"] if not (store / f"{p['folder']}.xz").exists()]


def assemble(store: Path, dest: Path) -> Path:
    """Join the stored pieces in order, decompress, check size and sha256, and move the member to ``dest``."""
    manifest = json.loads((store / MANIFEST).read_text())
    lacking = missing(store)
    if lacking:
        raise FileNotFoundError(f"pieces not carried yet: {', '.join(lacking)} (one device call per piece)")
    tmp = dest.with_name(dest.name + ".assembling")
    dest.parent.mkdir(parents=True, exist_ok=True)
    decomp = lzma.LZMADecompressor()
    with tmp.open("wb") as out:
        for p in manifest["pieces"]:
            out.write(decomp.decompress(_checked_piece(store / f"{p['folder']}.xz", p, "stored piece")))
    if not decomp.eof:
        tmp.unlink()
        raise ValueError("the xz stream ends early: a piece is short")
    if tmp.stat().st_size != manifest["bytes"] or _sha256(tmp) != manifest["sha256"]:
        tmp.unlink()
        raise ValueError(f"assembled {manifest['member']} differs from the original (size or sha256)")
    tmp.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    piece_help = f"at most this many MiB each ({DEFAULT_PIECE_MIB}); auto: what a call carries beside the tree"
    sp = sub.add_parser("split")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", type=Path, help="split a member of this wheel (--member)")
    src.add_argument("--file", type=Path, help="split this file (its name is the manifest's member)")
    sp.add_argument("--member", default="sgl_kernel/flash_ops.abi3.so")
    sp.add_argument("--out", type=Path, default=Path(".fa3"))
    sp.add_argument("--piece-mib", type=piece_mib_arg, default=DEFAULT_PIECE_MIB, help=piece_help)
    sp.add_argument("--preset", type=int, default=6, help="xz preset (0-9)")
    rc = sub.add_parser("recut")
    rc.add_argument("--src", type=Path, default=Path(".fa3"))
    size = rc.add_mutually_exclusive_group()
    size.add_argument("--piece-mib", type=piece_mib_arg, default=None, help=piece_help)
    size.add_argument("--pieces", type=int, default=None, help="this many pieces of equal size")
    st = sub.add_parser("stash")
    st.add_argument("--src", type=Path, default=Path(".fa3"))
    st.add_argument("--store", type=Path, default=Path("/tmp/fa3"))
    asm = sub.add_parser("assemble")
    asm.add_argument("--store", type=Path, default=Path("/tmp/fa3"))
    asm.add_argument("--dest", type=Path, required=True)
    sub.add_parser("room", help="the MiB one device call carries beside this repository's working tree")
    args = ap.parse_args(argv)
    if args.cmd == "room":
        tree = tree_bytes(REPO_ROOT)  # one listing of the tree for both numbers
        print(f"working tree {tree / MIB:.1f} MiB; a piece of at most {room_mib(REPO_ROOT, tree)} MiB fits beside it")
        return 0
    if args.cmd == "split":
        if args.file is not None:
            m = split(args.file, args.file.name, args.out, args.piece_mib, args.preset)
        else:
            m = split_wheel(args.wheel, args.member, args.out, args.piece_mib, args.preset)
        print(f"{m['member']}: {m['bytes'] / MIB:.0f} MiB -> {m['compressed_bytes'] / MIB:.0f} MiB xz in "
              f"{len(m['pieces'])} pieces of <= {args.piece_mib} MiB: one device call each")
    elif args.cmd == "recut":
        mib = args.piece_mib if args.piece_mib is not None or args.pieces is not None else DEFAULT_PIECE_MIB
        m = recut(args.src, mib, args.pieces)
        largest = max(p["bytes"] for p in m["pieces"])
        print(f"{m['member']}: {len(m['pieces'])} pieces of <= {largest / MIB:.2f} MiB under {args.src}")
    elif args.cmd == "stash":
        lacking = stash(args.src, args.store)
        print(f"stored in {args.store}; still missing: {', '.join(lacking) or 'none'}")
    else:
        print(f"assembled {assemble(args.store, args.dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
