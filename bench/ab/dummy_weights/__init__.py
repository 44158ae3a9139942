"""The folder the serving harnesses put first on their SGLang servers' PYTHONPATH (``ab.server.server_env``).

Its ``sitecustomize.py`` runs at the start of every process of such a server and, with ``PAT_BENCH_DUMMY_WEIGHTS=attn``,
hooks SGLang's ``--load-format dummy`` so that the model gets the dummy weights of ``pat_bench_dummy_weights.py``, whose
outputs depend on attention (SGLang's own give flat logits). On the server side the folder's files are top-level
modules; this package file is read only by the harness (and tests), for the folder's path and the names below.
"""

from __future__ import annotations

from pathlib import Path

from .pat_bench_dummy_weights import ATTN, ENV_VAR, MARKER

#: The folder put on the server's PYTHONPATH.
HOOK_DIR = Path(__file__).resolve().parent

__all__ = ["ATTN", "ENV_VAR", "HOOK_DIR", "MARKER"]
