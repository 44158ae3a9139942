"""The wgmma S block width of 64-row items (``wg_cols``, tile_sweep ``/nN``) against the tile table of the same call
(the sweep files in this folder): each bar is a variant's time over the table's (16 KV columns per block at the
time); below 1, the variant is faster; 'again' (the table re-timed last) shows the noise. ``16/4/4/wg/n32`` (d128)
and ``16/4/2/wg/n32`` (d256) are the ring layout now in the table. Run from the repository root:
``PYTHONPATH=$PWD python3 <this file>``."""

from pathlib import Path

from bench.sweep_table import plot_sweeps

plot_sweeps(
    Path(__file__).resolve().parent,
    [("sweep-d128-ring.txt", "head dim 128: 16-token stages, S over 2 or 4 of them"),
     ("sweep-d128-wide.txt", "head dim 128: 32- and 64-token tiles"),
     ("sweep-d256-ring2.txt", "head dim 256")],
    ylabel="time / the table's (16-column S blocks), same call",
    title="H200, 2026-11-30: 64-row wgmma items over 32 / 64 KV columns per S block, tile_sweep, graph replays, "
          "32 q / 8 kv",
    ylim=(0.8, 1.5),
    figsize=(15, 4.5),
)
