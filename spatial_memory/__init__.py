"""embodied_memory core types and memories (M3 splat memory, SAT episodic memory)."""

from .errors import *  # noqa: F401,F403
from .types import CameraIntrinsics, Frame, backproject_depth, project_points  # noqa: F401
