"""Version-checked runtime patches of SGLang for pat-sglang (see ``patches.core``).

Role in pack-forward-merge: publishes the radix chains of each decode batch (``pat_sglang.sglang_patches.publish``) into
the chain table of the batch's ``ReqToTokenPool`` (``pat_sglang.sglang_patches.chain_table``; one per TP/DP rank), which
the PAT attention backend reads to build its forest.
"""

from .chain_table import CHAIN_TABLE, ChainEntry, ChainTable, chain_table_for
from .core import (
    PATCH_SETS,
    SUPPORTED_SGLANG_VERSIONS,
    Patch,
    UnsupportedSGLangVersion,
    apply_patches,
    installed_sglang_version,
)
from .publish import publish_decode_batch

__all__ = [
    "CHAIN_TABLE",
    "PATCH_SETS",
    "SUPPORTED_SGLANG_VERSIONS",
    "ChainEntry",
    "ChainTable",
    "Patch",
    "UnsupportedSGLangVersion",
    "apply_patches",
    "chain_table_for",
    "installed_sglang_version",
    "publish_decode_batch",
]
