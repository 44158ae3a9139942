"""pat-sglang: prefix-aware decode attention (pack, forward, merge) for SGLang."""

from .api import decode_attention, plan, run
from .config import DeviceSpec, HeadConfig, TileTable, load_tile_table
from .forest import ForestNode, PrefixForest
from .planner import PackPlan, PlanLimits, plan_forest
from .reference import naive_decode, run_reference

__version__ = "0.1.0"

__all__ = [
    "DeviceSpec",
    "ForestNode",
    "HeadConfig",
    "PackPlan",
    "PlanLimits",
    "PrefixForest",
    "TileTable",
    "decode_attention",
    "load_tile_table",
    "naive_decode",
    "plan",
    "plan_forest",
    "run",
    "run_reference",
]
