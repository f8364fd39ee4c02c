"""Rasterizer backends behind :func:`splatting.rasterize.rasterization`: numba CPU and gsplat CUDA."""
