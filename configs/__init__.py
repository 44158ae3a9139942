"""Tile tables and model/workload configs, shipped inside the package as pat_sglang.configs."""
