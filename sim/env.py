"""A Gymnasium environment around the embedded simulator: an embodied exploration task.

Observations are what the robot's RGB-D camera gives plus its odometry pose: ``rgb``
``[H, W, 3] uint8``, ``depth`` ``[H, W] float32`` metres (0 = no hit, clipped at
``max_depth``), ``semantics`` ``[H, W] int32`` instance ids and ``pose`` ``[7] float32`` =
camera position xyz + quaternion xyzw (optical frame, world z up).

Actions are Habitat's discrete set (``move_forward``, ``turn_left``, ``turn_right``,
``look_up``, ``look_down``), optionally with ``stop`` which ends the episode.

Reward is exploration progress: the fraction of the scene's traversable floor cells newly seen
(2D visibility within ``view_range``) minus ``collision_penalty`` for each bumped forward move,
so an agent with memory that avoids re-visiting does better. With ``scene="apartment"`` each
reset seed selects (and caches) one of ``n_scene_seeds`` generated apartments.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from spatial_memory.errors import ConfigError
from spatial_memory.geometry import tq_from_pose
from spatial_memory.types import CameraIntrinsics

from .agent import ACTIONS, Agent, AgentConfig
from .navigation import OccupancyGrid
from .renderer import Lighting, Renderer
from .scene import Scene
from .simulator import resolve_scene


class EmbodiedSimEnv(gym.Env):
    """Discrete-action embodied exploration in a simulated indoor scene."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        scene: str | Scene = "apartment",
        width: int = 128,
        height: int = 96,
        hfov_deg: float = 70.0,
        max_steps: int = 500,
        include_stop: bool = False,
        agent_config: AgentConfig | None = None,
        lighting: Lighting | None = None,
        render_mode: str | None = None,
        max_depth: float = 20.0,
        view_range: float = 3.0,
        collision_penalty: float = 0.01,
        n_scene_seeds: int = 16,
        scene_cache: int = 4,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_steps < 1 or max_depth <= 0 or n_scene_seeds < 1:
            raise ConfigError(f"invalid env settings: max_steps={max_steps}, max_depth={max_depth}, "
                              f"n_scene_seeds={n_scene_seeds}")
        self.render_mode = render_mode
        self.scene_spec = scene
        self.intrinsics = CameraIntrinsics.from_fov(width, height, hfov_deg)
        base = agent_config or AgentConfig()
        self.agent_config = replace(base, intrinsics=self.intrinsics)
        self.lighting = lighting
        self.max_steps = int(max_steps)
        self.max_depth = float(max_depth)
        self.view_range = float(view_range)
        self.collision_penalty = float(collision_penalty)
        self.n_scene_seeds = int(n_scene_seeds)
        self.actions: tuple[str, ...] = ACTIONS + (("stop",) if include_stop else ())
        self.action_space = spaces.Discrete(len(self.actions))
        H, W = height, width
        self.observation_space = spaces.Dict(
            {
                "rgb": spaces.Box(0, 255, (H, W, 3), np.uint8),
                "depth": spaces.Box(0.0, self.max_depth, (H, W), np.float32),
                "semantics": spaces.Box(0, np.iinfo(np.int32).max, (H, W), np.int32),
                "pose": spaces.Box(-1e4, 1e4, (7,), np.float32),
            }
        )
        self._cache: OrderedDict[Any, tuple[Scene, OccupancyGrid, Renderer]] = OrderedDict()
        self._cache_size = max(1, int(scene_cache))
        self.agent: Agent | None = None
        self._renderer: Renderer | None = None
        self._seen: np.ndarray | None = None
        self._steps = 0
        self._last_rgb: np.ndarray | None = None

    # -- scenes --------------------------------------------------------------------------

    def _world(self, scene_seed: int) -> tuple[Scene, OccupancyGrid, Renderer]:
        key = scene_seed if isinstance(self.scene_spec, str) else "fixed"
        if key not in self._cache:
            scene = resolve_scene(self.scene_spec, scene_seed)
            grid = OccupancyGrid.from_scene(scene, self.agent_config.grid_config())
            self._cache[key] = (scene, grid, Renderer(scene, self.lighting))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    # -- gym API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode at a random free pose.

        The scene (for named, seeded scenes such as ``"apartment"``) is ``options["scene_seed"]`` if
        given, else ``seed % n_scene_seeds`` when a seed is given (one apartment per seed), else
        drawn from the ``n_scene_seeds`` pool with the env's generator.
        """
        super().reset(seed=seed)
        options = options or {}
        if "scene_seed" in options:
            scene_seed = int(options["scene_seed"])
        elif seed is not None:
            scene_seed = int(seed) % self.n_scene_seeds
        else:
            scene_seed = int(self.np_random.integers(self.n_scene_seeds))
        scene, grid, renderer = self._world(scene_seed)
        self._renderer = renderer
        self.agent = Agent(scene, self.agent_config, grid)
        self.agent.reset_random(self.np_random)
        self._seen = np.zeros(grid.shape, dtype=bool)
        self._steps = 0
        self._update_seen()
        obs = self._observe()
        info = self._info(collided=False)
        info["scene_seed"] = scene_seed
        info["id_to_label"] = dict(scene.id_to_label)
        return obs, info

    def step(self, action):
        if self.agent is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = int(action)
        if not self.action_space.contains(a):
            raise ValueError(f"action {action!r} is outside Discrete({self.action_space.n})")
        name = self.actions[a]
        self._steps += 1
        terminated = name == "stop"
        collided = False
        if not terminated:
            collided = self.agent.step(name).collided
        gained = self._update_seen()
        reward = gained - (self.collision_penalty if collided else 0.0)
        truncated = self._steps >= self.max_steps and not terminated
        return self._observe(), float(reward), terminated, truncated, self._info(collided)

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._last_rgb is None else self._last_rgb.copy()
        return None

    # -- helpers -------------------------------------------------------------------------

    def _update_seen(self) -> float:
        """Mark the cells the camera sees now; return the newly seen fraction of the traversable floor."""
        grid = self.agent.grid
        vis = grid.visible_cells(self.agent.xy, self.agent.yaw, np.radians(self._hfov_deg()), self.view_range)
        new = vis & grid.traversable & ~self._seen
        self._seen |= vis
        return float(new.sum()) / max(int(grid.traversable.sum()), 1)

    def _hfov_deg(self) -> float:
        return float(np.degrees(2.0 * np.arctan(0.5 * self.intrinsics.width / self.intrinsics.fx)))

    def _observe(self) -> dict[str, np.ndarray]:
        T = self.agent.T_world_camera
        r = self._renderer.render(self.intrinsics, T)
        t, q = tq_from_pose(T)
        depth = np.clip(np.nan_to_num(r.depth, nan=0.0, posinf=0.0), 0.0, self.max_depth).astype(np.float32)
        self._last_rgb = r.rgb
        return {
            "rgb": r.rgb,
            "depth": depth,
            "semantics": r.instance_ids.astype(np.int32),
            "pose": np.concatenate([t, q]).astype(np.float32),
        }

    def coverage(self) -> float:
        """Fraction of traversable cells seen so far in this episode."""
        grid = self.agent.grid
        return float((self._seen & grid.traversable).sum()) / max(int(grid.traversable.sum()), 1)

    def _info(self, collided: bool) -> dict[str, Any]:
        return {
            "collided": bool(collided),
            "room_id": int(self.agent.room_id),
            "steps": self._steps,
            "coverage": self.coverage(),
            "scene": self.agent.scene.name,
        }


ENV_ID = "emem/EmbodiedSim-v0"
if ENV_ID not in gym.registry:  # lets gym.make(ENV_ID, scene=...) build it (and gives the env a spec)
    gym.register(id=ENV_ID, entry_point="sim.env:EmbodiedSimEnv")

__all__ = ["ENV_ID", "EmbodiedSimEnv"]
