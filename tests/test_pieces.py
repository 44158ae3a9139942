"""tools/wheelhouse/pieces.py: a member split into compressed pieces, stashed piece by piece (one per device call)
and assembled, byte for byte; damaged, missing and short pieces are refused."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from scripts import WHEELHOUSE, on_path

on_path(WHEELHOUSE)

import pieces  # noqa: E402


def make_wheel(tmp: Path, payload: bytes) -> Path:
    wheel = tmp / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/big.so", payload)
        zf.writestr("demo/__init__.py", "")
    return wheel


@pytest.fixture()
def payload() -> bytes:
    # incompressible bytes so that several pieces of 1 MiB come out
    return os.urandom(3 * pieces.MIB + 12345)


def test_split_stash_assemble_roundtrip(tmp_path: Path, payload: bytes) -> None:
    out = tmp_path / "fa3"
    manifest = pieces.split_wheel(make_wheel(tmp_path, payload), "demo/big.so", out, piece_mib=1, preset=0)
    assert len(manifest["pieces"]) >= 3 and manifest["bytes"] == len(payload)
    assert all(p["bytes"] <= pieces.MIB for p in manifest["pieces"])
    store = tmp_path / "store"
    folders = [p["folder"] for p in manifest["pieces"]]
    # one call per piece: each carries its own folder and the manifest
    for i, folder in enumerate(folders):
        carried = tmp_path / f"call{i}"
        (carried / folder).mkdir(parents=True)
        (carried / folder / pieces.PIECE).write_bytes((out / folder / pieces.PIECE).read_bytes())
        (carried / pieces.MANIFEST).write_text((out / pieces.MANIFEST).read_text())
        lacking = pieces.stash(carried, store)
        assert lacking == folders[i + 1 :]
        if lacking:
            with pytest.raises(FileNotFoundError, match=lacking[0]):
                pieces.assemble(store, tmp_path / "dest" / "big.so")
    dest = pieces.assemble(store, tmp_path / "dest" / "big.so")
    assert dest.read_bytes() == payload


def test_damaged_and_short_pieces_refused(tmp_path: Path, payload: bytes) -> None:
    out = tmp_path / "fa3"
    manifest = pieces.split_wheel(make_wheel(tmp_path, payload), "demo/big.so", out, piece_mib=1, preset=0)
    first = out / manifest["pieces"][0]["folder"] / pieces.PIECE
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="differs from the manifest"):
        pieces.stash(out, tmp_path / "store")
    # a manifest that lies about the member's hash: assembled bytes are checked too
    out2 = tmp_path / "fa3b"
    m2 = pieces.split_wheel(make_wheel(tmp_path, payload), "demo/big.so", out2, piece_mib=1, preset=0)
    m2["sha256"] = "0" * 64
    (out2 / pieces.MANIFEST).write_text(json.dumps(m2))
    store = tmp_path / "store2"
    assert pieces.stash(out2, store) == []
    with pytest.raises(ValueError, match="differs from the original"):
        pieces.assemble(store, tmp_path / "dest2" / "big.so")
    assert not (tmp_path / "dest2" / "big.so").exists()


def test_any_file_round_trips_through_the_command_line(tmp_path: Path, payload: bytes) -> None:
    """``split --file`` (e.g. a JIT cache packed on the GPU machine to bring back), then stash and assemble."""
    src = tmp_path / "cache.tar"
    src.write_bytes(payload)
    out = tmp_path / "fi"
    assert pieces.main(["split", "--file", str(src), "--out", str(out), "--piece-mib", "1", "--preset", "0"]) == 0
    manifest = json.loads((out / pieces.MANIFEST).read_text())
    assert manifest["member"] == "cache.tar" and len(manifest["pieces"]) >= 3
    store = tmp_path / "store"
    assert pieces.main(["stash", "--src", str(out), "--store", str(store)]) == 0
    dest = tmp_path / "back" / "cache.tar"
    assert pieces.main(["assemble", "--store", str(store), "--dest", str(dest)]) == 0
    assert dest.read_bytes() == payload
    with pytest.raises(SystemExit):  # a source is required, and only one
        pieces.main(["split", "--out", str(out)])


@pytest.mark.parametrize("cut", [["--piece-mib", "1"], ["--pieces", "3"]], ids=["mib", "count"])
def test_recut_makes_new_pieces_of_the_same_stream(tmp_path: Path, payload: bytes, cut: list[str]) -> None:
    """``recut``: existing pieces re-cut (smaller, as the working tree that travels with each grew; or into N equal
    ones, the largest as small as N calls allow) still assemble to the member; the old pieces are gone, the manifest
    lists the new ones; a damaged piece is refused before cutting, and a size with a count too."""
    src = tmp_path / "cache.tar"
    src.write_bytes(payload)
    out = tmp_path / "fa3"
    before = pieces.split(src, "cache.tar", out, piece_mib=2, preset=0)
    assert pieces.main(["recut", "--src", str(out), *cut]) == 0
    after = json.loads((out / pieces.MANIFEST).read_text())
    sizes = [p["bytes"] for p in after["pieces"]]
    if cut[0] == "--piece-mib":
        assert len(sizes) > len(before["pieces"]) and max(sizes) <= 1 << 20
    else:
        assert len(sizes) == 3 and max(sizes) - min(sizes) <= 2
    assert sorted(f.name for f in out.glob("p*")) == [p["folder"] for p in after["pieces"]]
    assert sum(sizes) == before["compressed_bytes"]
    store = tmp_path / "store"
    assert pieces.stash(out, store) == []
    assert pieces.assemble(store, tmp_path / "back.tar").read_bytes() == payload
    first = out / after["pieces"][0]["folder"] / pieces.PIECE
    first.write_bytes(b"x" + first.read_bytes()[1:])
    with pytest.raises(ValueError, match="differs from the manifest"):
        pieces.recut(out, 1)
    with pytest.raises(ValueError, match="not both"):
        pieces.recut(out, 1, 3)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_room_is_what_a_call_carries_beside_the_working_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree a call copies is the tracked files and the untracked ones git does not ignore; the room is the call's
    carry less that tree and the margin, in whole MiB; a tree that leaves none is refused."""
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "tracked.bin").write_bytes(b"t" * (3 * pieces.MIB))
    _git(tmp_path, "add", ".gitignore", "tracked.bin")
    (tmp_path / "untracked.bin").write_bytes(b"u" * pieces.MIB)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "wheels.tar.xz").write_bytes(b"i" * (5 * pieces.MIB))
    tree = pieces.tree_bytes(tmp_path)
    assert tree == 4 * pieces.MIB + len("ignored/\n")
    monkeypatch.setattr(pieces, "CALL_CARRY_BYTES", 10 * pieces.MIB)
    assert pieces.room_mib(tmp_path) == (10 * pieces.MIB - pieces.CARRY_MARGIN_BYTES - tree) // pieces.MIB == 4
    (tmp_path / "untracked.bin").write_bytes(b"u" * (6 * pieces.MIB))
    with pytest.raises(ValueError, match="no room for a piece"):
        pieces.room_mib(tmp_path)


def test_piece_size_auto_or_a_positive_number() -> None:
    assert pieces.piece_mib_arg("auto") == pieces.room_mib(pieces.REPO_ROOT) >= 1
    assert pieces.piece_mib_arg("7") == 7
    for bad in ("0", "-3", "big"):
        with pytest.raises(argparse.ArgumentTypeError):
            pieces.piece_mib_arg(bad)
