"""3D Gaussian splatting: Gaussian model, differentiable rasterizer (CPU kernel + gsplat CUDA), training."""

import os

# Busy-waiting OpenMP workers (torch's and numba's) starve each other on a small, shared CPU:
# measured 20 ms instead of 0.02 ms per numba kernel launch with the default active wait policy.
# Only effective when set before the OpenMP runtime loads (i.e. before torch is imported);
# an explicit user setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
