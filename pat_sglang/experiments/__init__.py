"""Radix-cache experiments: how much decode KV traffic PAT saves on real request mixes.

Role in pack-forward-merge: offline measurement of *pack*. ``workloads`` builds request specs (the Mooncake
trace, SGLang's generated-shared-prefix shape, a beam/RL-rollout shape); ``replay`` runs them through
SGLang's real ``RadixCache`` with a simulated continuous-batching decode loop and plans every k-th decode
step with ``plan_forest``; ``report`` writes the CSV and plots; ``cli`` is the command line
(``python -m pat_sglang.experiments`` or ``pat-sglang experiment``).
"""

from .replay import ReplayConfig, ReplaySummary, StepRecord, run_replay
from .workloads import RequestSpec, generated_shared_prefix, load_mooncake, rollout

__all__ = [
    "ReplayConfig",
    "ReplaySummary",
    "RequestSpec",
    "StepRecord",
    "generated_shared_prefix",
    "load_mooncake",
    "run_replay",
    "rollout",
]
