"""CUDA sources of the PAT kernels, shipped inside the package as pat_sglang.kernels_src."""
