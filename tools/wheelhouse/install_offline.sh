#!/usr/bin/env bash
# Install the carried wheelhouse on the GPU machine, with no network, beside the machine's own torch.
#
#   tools/wheelhouse/install_offline.sh [TARGET]        (default TARGET: /tmp/pat-site)
#   export PYTHONPATH=TARGET                            (the script prints this line last)
#
# Unpacks every .wheelhouse/part*/wheels-*.tar.xz that was carried, installs the wheels with
# pip --no-index --no-deps --target TARGET, then installs pat-sglang (so that SGLang finds the `pat` plugin through
# its `sglang.srt.plugins` entry point): built from this checkout when PAT_FROM_SOURCE=1 (default; no index, no
# build isolation, the machine's setuptools), else, or if that fails, the prebuilt .wheelhouse/extra/pat_sglang-*.whl.
# Parts named in .wheelhouse/extra/MANIFEST.tsv but not carried are reported (the install goes on with the rest).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WH="${WHEELHOUSE:-$REPO/.wheelhouse}"
TARGET="${1:-/tmp/pat-site}"
PY="${PYTHON:-python3}"
PAT_FROM_SOURCE="${PAT_FROM_SOURCE:-1}"
UNPACK="$(mktemp -d /tmp/wheelhouse-unpack.XXXXXX)"
trap 'rm -rf "$UNPACK"' EXIT

t0=$(date +%s)
shopt -s nullglob
parts=("$WH"/part*/wheels-*.tar.xz)
if [ ${#parts[@]} -eq 0 ]; then
    echo "install_offline: no parts under $WH (carry .wheelhouse/partN)" >&2
    exit 2
fi
for p in "${parts[@]}"; do
    if command -v xz >/dev/null 2>&1; then
        tar -xJf "$p" -C "$UNPACK"
    else
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], filter="data")' "$p" "$UNPACK"
    fi
done
if [ -f "$WH/extra/MANIFEST.tsv" ]; then
    missing=$(tail -n +2 "$WH/extra/MANIFEST.tsv" | while IFS=$'\t' read -r whl part _sha; do
        [ -f "$UNPACK/$whl" ] || echo "$part:$whl"; done)
    if [ -n "$missing" ]; then
        echo "install_offline: WARNING, not carried: $(echo "$missing" | cut -d: -f1 | sort -u | tr '\n' ' ')" >&2
        echo "$missing" | sed 's/^/  missing /' >&2
    fi
fi
mkdir -p "$TARGET"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$UNPACK"/*.whl

pat_ok=0
if [ "$PAT_FROM_SOURCE" = "1" ] && [ -f "$REPO/pyproject.toml" ]; then
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$TARGET" "$REPO"; then
        pat_ok=1
        echo "install_offline: pat-sglang installed from $REPO" >&2
    else
        echo "install_offline: building pat-sglang from source failed; trying the prebuilt wheel" >&2
    fi
fi
if [ "$pat_ok" = "0" ]; then
    pat_whl=("$WH"/extra/pat_sglang-*.whl)
    if [ ${#pat_whl[@]} -gt 0 ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target "$TARGET" "${pat_whl[0]}"
        echo "install_offline: pat-sglang installed from ${pat_whl[0]}" >&2
    else
        echo "install_offline: WARNING, pat-sglang not installed (no source build, no .wheelhouse/extra wheel)" >&2
    fi
fi
n=$(ls "$UNPACK"/*.whl | wc -l)
echo "install_offline: $n wheels from ${#parts[@]} part(s) into $TARGET in $(( $(date +%s) - t0 )) s" >&2
echo "export PYTHONPATH=$TARGET"
