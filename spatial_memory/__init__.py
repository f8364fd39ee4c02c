"""embodied_memory core types and memories (M3 splat memory, SAT episodic memory)."""

import os as _os

# torch's and numba's OpenMP pools spin-wait by default and starve each other on small CPUs
# (a 0.02 ms numba launch took 20 ms); passive waiting must be set before either loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import *  # noqa: F401,F403
from .types import CameraIntrinsics, Frame, backproject_depth, project_points  # noqa: F401
