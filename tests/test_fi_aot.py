"""tools/wheelhouse/fi_aot.py: FlashInfer's compiled modules packed into pieces on one machine, carried piece by piece,
and installed into FlashInfer's AOT folder on the next, byte for byte; other versions and odd members refused."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from scripts import WHEELHOUSE, on_path

on_path(WHEELHOUSE)

import fi_aot  # noqa: E402
import pieces  # noqa: E402

VERSION = "0.6.15.post1"


def workspace(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """A FlashInfer workspace as a JIT run leaves it: libraries beside their build files."""
    base = tmp / "fi-cache"
    ops = base / ".cache" / "flashinfer" / VERSION / "90a" / "cached_ops"
    libs = {"batch_prefill_bf16_h128": os.urandom(2 * pieces.MIB + 7), "sampling": os.urandom(1000)}
    for name, body in libs.items():
        (ops / name).mkdir(parents=True)
        (ops / name / f"{name}.so").write_bytes(body)
        (ops / name / "build.ninja").write_text("rule x\n")
        (ops / name / "kernel.cuda.o").write_bytes(b"obj")
    (ops / "half_built").mkdir()
    (ops / "half_built" / "other.so").write_bytes(b"not the module's library")
    return base, libs


def site_with(tmp: Path, version: str) -> Path:
    site = tmp / "site"
    (site / f"flashinfer_python-{version}.dist-info").mkdir(parents=True)
    (site / "flashinfer").mkdir()
    return site


def test_pack_carry_install_roundtrip(tmp_path: Path) -> None:
    base, libs = workspace(tmp_path)
    assert set(fi_aot.compiled_modules(base)) == set(libs)
    out = tmp_path / "out" / "fi"
    manifest = fi_aot.pack(base, out, piece_mib=1, info={"flashinfer": VERSION, "cuda": "13.0", "sm": "90"})
    assert manifest["member"] == fi_aot.MEMBER and len(manifest["pieces"]) >= 2
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [p["folder"] for p in manifest["pieces"]]
    store = tmp_path / "store"
    for p in manifest["pieces"]:  # one device call per piece: its folder and the manifest
        carried = tmp_path / "carried" / p["folder"]
        (carried / p["folder"]).mkdir(parents=True)
        (carried / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
        (carried / p["folder"] / pieces.PIECE).write_bytes((out / p["folder"] / pieces.PIECE).read_bytes())
        pieces.stash(carried, store)
    tar = pieces.assemble(store, tmp_path / "fi-aot.tar")
    site = site_with(tmp_path, VERSION)
    assert sorted(fi_aot.install(tar, site)) == sorted(libs)
    for name, body in libs.items():
        assert (site / "flashinfer" / "data" / "aot" / name / f"{name}.so").read_bytes() == body
    assert not (site / "flashinfer" / "data" / "aot" / "half_built").exists()


def test_install_refuses_another_version_and_odd_members(tmp_path: Path) -> None:
    base, libs = workspace(tmp_path)
    tar = tmp_path / "a.tar"
    fi_aot.write_tar(fi_aot.compiled_modules(base), tar, {"flashinfer": "0.6.14"})
    with pytest.raises(ValueError, match=r"FlashInfer 0\.6\.14's; .* has 0\.6\.15\.post1"):
        fi_aot.install(tar, site_with(tmp_path, VERSION))
    odd = tmp_path / "odd.tar"
    with tarfile.open(odd, "w") as t:
        for name, body in ((fi_aot.INFO, json.dumps({"flashinfer": VERSION}).encode()), ("../escape.so", b"x")):
            entry = tarfile.TarInfo(name)
            entry.size = len(body)
            t.addfile(entry, io.BytesIO(body))
    with pytest.raises(ValueError, match="unexpected member"):
        fi_aot.install(odd, tmp_path / "site", version=VERSION)
    with pytest.raises(FileNotFoundError, match="no compiled FlashInfer module"):
        fi_aot.pack(tmp_path / "empty", tmp_path / "o", info={"flashinfer": VERSION})
