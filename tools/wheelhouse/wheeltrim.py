"""Trim files out of a wheel and keep its RECORD consistent.

A wheel is a zip whose ``*.dist-info/RECORD`` lists every member with ``sha256=<urlsafe b64, no padding>`` and its
size. Installers (pip) check a member against RECORD when it is extracted, and a RECORD that names a file missing from
the archive leaves ``pip uninstall`` with a dangling entry. So when we drop members (large GPU libraries that the
target machine never loads) we also drop their RECORD lines, and we re-verify every remaining line.

Used by ``build.py`` for ``sglang-kernel`` (FA3 ``flash_ops``, sm100 ops, FlashMLA, InfLLM ops) and ``xgrammar``
(its static library). Can also rewrite a wheel with no compression (``ZIP_STORED``) so that a later ``xz`` pass over
many wheels compresses across them.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


def record_hash(data: bytes) -> str:
    """The ``sha256=...`` string that a wheel RECORD holds for ``data``."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def find_record(names: Iterable[str]) -> str:
    """Name of the ``*.dist-info/RECORD`` member among ``names`` (exactly one must exist)."""
    found = [n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(found) != 1:
        raise ValueError(f"expected one dist-info/RECORD, found {found}")
    return found[0]


def parse_record(text: str) -> list[tuple[str, str, str]]:
    """RECORD rows as (path, hash, size); blank lines skipped."""
    return [(r[0], r[1] if len(r) > 1 else "", r[2] if len(r) > 2 else "") for r in csv.reader(io.StringIO(text)) if r]


def format_record(rows: Iterable[tuple[str, str, str]]) -> str:
    """RECORD text for ``rows`` (csv, LF line ends, as wheel tools write it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


@dataclass
class TrimResult:
    """What ``trim_wheel`` did."""

    src: Path
    dst: Path
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    kept: int = 0


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def trim_wheel(
    src: Path, dst: Path, drop: Iterable[str] = (), *, stored: bool = False, require_all_patterns: bool = True
) -> TrimResult:
    """Copy wheel ``src`` to ``dst`` without the members matching any glob in ``drop``.

    RECORD loses the dropped members' rows; every kept row is checked against the bytes written (hash and size)
    and a missing row is an error. ``stored=True`` writes members uncompressed. With ``require_all_patterns`` a
    pattern that matched nothing raises (a renamed library must not slip through silently).
    """
    drop = list(drop)
    src, dst = Path(src), Path(dst)
    result = TrimResult(src=src, dst=dst)
    hit: set[str] = set()
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        record_name = find_record(i.filename for i in infos)
        rows = parse_record(zin.read(record_name).decode("utf-8"))
        by_path = {r[0]: r for r in rows}
        keep_infos = []
        for info in infos:
            pats = [p for p in drop if fnmatch.fnmatchcase(info.filename, p)]
            if pats and info.filename != record_name:
                hit.update(pats)
                result.removed.append(info.filename)
                result.removed_bytes += info.file_size
            else:
                keep_infos.append(info)
        if require_all_patterns:
            missing = [p for p in drop if p not in hit]
            if missing:
                raise ValueError(f"{src.name}: patterns matched nothing: {missing}")
        removed = set(result.removed)
        new_rows = [r for r in rows if r[0] not in removed]
        kept_paths = {i.filename for i in keep_infos if not i.is_dir()}
        listed = {r[0] for r in new_rows}
        unlisted = sorted(kept_paths - listed)
        if unlisted:
            raise ValueError(f"{src.name}: members missing from RECORD: {unlisted[:5]}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(dst.suffix + ".tmp")
        compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(tmp, "w", compression=compression) as zout:
            for info in keep_infos:
                if info.filename == record_name:
                    continue
                data = zin.read(info)
                row = by_path.get(info.filename)
                if row is not None and row[1]:
                    if row[1] != record_hash(data) or (row[2] and int(row[2]) != len(data)):
                        raise ValueError(f"{src.name}: RECORD mismatch for {info.filename}")
                new_info = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                new_info.external_attr = info.external_attr
                new_info.compress_type = compression
                zout.writestr(new_info, data)
                result.kept += 1
            rec_info = zipfile.ZipInfo(record_name, date_time=(2020, 1, 1, 0, 0, 0))
            rec_info.external_attr = 0o644 << 16
            rec_info.compress_type = compression
            zout.writestr(rec_info, format_record(new_rows))
        tmp.replace(dst)
    return result


def verify_wheel(path: Path) -> list[str]:
    """Problems with ``path``'s RECORD (empty list: consistent). Checks both directions and every hash/size."""
    problems: list[str] = []
    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        record_name = find_record(i.filename for i in infos)
        rows = parse_record(z.read(record_name).decode("utf-8"))
        names = {i.filename for i in infos}
        for rpath, rhash, rsize in rows:
            if rpath not in names:
                problems.append(f"listed but absent: {rpath}")
                continue
            if rpath == record_name:
                continue
            data = z.read(rpath)
            if not rhash:
                problems.append(f"no hash: {rpath}")
            elif rhash != record_hash(data):
                problems.append(f"hash mismatch: {rpath}")
            if rsize and int(rsize) != len(data):
                problems.append(f"size mismatch: {rpath}")
        listed = {r[0] for r in rows}
        problems.extend(f"present but unlisted: {n}" for n in sorted(names - listed))
    return problems


__all__ = ["TrimResult", "find_record", "format_record", "parse_record", "record_hash", "trim_wheel", "verify_wheel"]
