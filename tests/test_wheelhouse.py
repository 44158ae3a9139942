"""CPU tests of the offline wheelhouse tools: RECORD stays consistent after a trim, parts stay under the limit."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from scripts import REPO, WHEELHOUSE, load_script, on_path


def _load(name: str):
    on_path(WHEELHOUSE)  # the scripts import each other by name
    return load_script(WHEELHOUSE / f"{name}.py")


wheeltrim = _load("wheeltrim")
build = _load("build")


def make_wheel(path: Path, files: dict[str, bytes], dist: str = "demo-1.0") -> Path:
    """A small valid wheel with a RECORD listing every member."""
    rows = [(name, wheeltrim.record_hash(data), str(len(data))) for name, data in files.items()]
    record = f"{dist}.dist-info/RECORD"
    meta = {f"{dist}.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
            f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    rows += [(name, wheeltrim.record_hash(data), str(len(data))) for name, data in meta.items()]
    rows.append((record, "", ""))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**files, **meta}.items():
            z.writestr(name, data)
        z.writestr(record, wheeltrim.format_record(rows))
    return path


FILES = {
    "demo/__init__.py": b"x = 1\n",
    "demo/big_ops.abi3.so": b"\0" * 5000,
    "demo/sm100/common_ops.abi3.so": b"\1" * 3000,
    "demo/sm90/common_ops.abi3.so": b"\2" * 3000,
    "demo/lib/libdemo.a": b"\3" * 100,
}


def test_record_hash_matches_pip_format() -> None:
    # sha256 of b"" in urlsafe base64 without padding, as in wheel RECORD files
    assert wheeltrim.record_hash(b"") == "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_trim_keeps_record_consistent(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES)
    assert wheeltrim.verify_wheel(src) == []
    dst = tmp_path / "out" / src.name
    res = wheeltrim.trim_wheel(src, dst, ["demo/big_ops.*.so", "demo/sm100/*", "demo/lib/*.a"])
    assert sorted(res.removed) == ["demo/big_ops.abi3.so", "demo/lib/libdemo.a", "demo/sm100/common_ops.abi3.so"]
    assert res.removed_bytes == 5000 + 3000 + 100
    assert wheeltrim.verify_wheel(dst) == []
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        rows = wheeltrim.parse_record(z.read("demo-1.0.dist-info/RECORD").decode())
        assert z.read("demo/sm90/common_ops.abi3.so") == FILES["demo/sm90/common_ops.abi3.so"]
    listed = {r[0] for r in rows}
    assert listed == names
    assert "demo/sm100/common_ops.abi3.so" not in listed
    for path, digest, size in rows:
        if path.endswith("RECORD"):
            assert digest == "" and size == ""
        else:
            assert digest.startswith("sha256=") and int(size) > 0


def test_trim_stored_is_uncompressed_and_valid(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES)
    dst = tmp_path / "stored" / src.name
    wheeltrim.trim_wheel(src, dst, [], stored=True)
    with zipfile.ZipFile(dst) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    assert wheeltrim.verify_wheel(dst) == []


def test_trim_rejects_pattern_that_matches_nothing(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES)
    with pytest.raises(ValueError, match="matched nothing"):
        wheeltrim.trim_wheel(src, tmp_path / "x.whl", ["demo/flash_ops.*.so"])


def test_verify_detects_tampering(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES)
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "demo/__init__.py":
                data = b"x = 2\n"
            if info.filename != "demo/lib/libdemo.a":
                zout.writestr(info, data)
        zout.writestr("demo/extra.py", b"")
    problems = wheeltrim.verify_wheel(bad)
    assert any("hash mismatch: demo/__init__.py" in p for p in problems)
    assert any("listed but absent: demo/lib/libdemo.a" in p for p in problems)
    assert any("present but unlisted: demo/extra.py" in p for p in problems)


def test_trim_rules_cover_the_anchor_libraries() -> None:
    kernel = build.TRIMS["sglang_kernel"]
    names = ["sgl_kernel/flash_ops.abi3.so", "sgl_kernel/sm100/common_ops.abi3.so", "sgl_kernel/flashmla_ops.abi3.so",
             "sgl_kernel/infllm_ops.cpython-310-x86_64-linux-gnu.so"]
    for n in names:
        assert wheeltrim._matches(n, kernel), n
    assert not wheeltrim._matches("sgl_kernel/sm90/common_ops.abi3.so", kernel)
    assert wheeltrim._matches("xgrammar/lib/libxgrammar.a", build.TRIMS["xgrammar"])
    assert not wheeltrim._matches("xgrammar/libxgrammar_bindings.so", build.TRIMS["xgrammar"])


def test_pins_are_exact_and_unique() -> None:
    pins = build.read_pins(WHEELHOUSE / "requirements-gpu.txt")
    names = [build.dist_key(p.split("==")[0]) for p in pins]
    assert len(names) == len(set(names))
    for must in ("sglang", "sglang_kernel", "flashinfer_python", "apache_tvm_ffi", "xgrammar", "transformers",
                 "tokenizers", "fastapi", "nvidia_ml_py"):
        assert must in names
    pinned = dict(p.split("==") for p in pins)
    assert pinned["sglang"] == "0.5.17" and pinned["transformers"] == "5.12.1" and pinned["tokenizers"] == "0.22.2"
    assert "torch" not in names  # the GPU machine's own torch 2.11.0 stays


def test_plan_parts_respects_raw_cap(tmp_path: Path) -> None:
    sizes = [90, 60, 50, 40, 30, 20, 10, 5]
    wheels = []
    for i, s in enumerate(sizes):
        p = tmp_path / f"w{i}-1.0-py3-none-any.whl"
        p.write_bytes(b"x" * s)
        wheels.append(p)
    parts = build.plan_parts(wheels, 100)
    assert sorted(w.name for p in parts for w in p.wheels) == sorted(w.name for w in wheels)
    assert all(p.raw_bytes <= 100 for p in parts)
    assert len(parts) == 4  # 305 bytes need at least 4 bins of 100


def test_write_part_roundtrip(tmp_path: Path) -> None:
    w = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", FILES)
    part = build.Part(index=1, wheels=[w], raw_bytes=w.stat().st_size)
    path = build.write_part(part, tmp_path / "wh", preset=1)
    assert path == tmp_path / "wh" / "part1" / "wheels-1.tar.xz"
    with tarfile.open(path, "r:xz") as tar:
        assert tar.getnames() == [w.name]
        assert tar.extractfile(w.name).read() == w.read_bytes()


def test_trace_default_and_head(tmp_path: Path) -> None:
    assert build.TRACE == REPO / "data" / "traces" / "mooncake_conversation_trace.jsonl"
    src = tmp_path / "t.jsonl"
    src.write_text("".join(f'{{"timestamp": {i}}}\n' for i in range(5)))
    build.copy_trace_head(src, tmp_path / "extra" / "head.jsonl", lines=3)
    assert (tmp_path / "extra" / "head.jsonl").read_text().splitlines() == [f'{{"timestamp": {i}}}' for i in range(3)]
    with pytest.raises(FileNotFoundError, match="--trace"):
        build.copy_trace_head(tmp_path / "absent.jsonl", tmp_path / "x.jsonl")


PART_LIMIT_MIB = 55.0
BUILT = sorted((REPO / ".wheelhouse").glob("part*/wheels-*.tar.xz"))


@pytest.mark.skipif(not BUILT, reason="no .wheelhouse built here (make wheelhouse)")
def test_built_parts_under_limit_and_complete() -> None:
    for p in BUILT:
        assert p.stat().st_size < PART_LIMIT_MIB * 1024 * 1024, p
    manifest = REPO / ".wheelhouse" / "extra" / "MANIFEST.tsv"
    rows = [line.split("\t") for line in manifest.read_text().splitlines()[1:] if line]
    pins = build.read_pins(WHEELHOUSE / "requirements-gpu.txt")
    assert len(rows) == len(pins)
    assert {r[1] for r in rows} == {p.parent.name for p in BUILT}
