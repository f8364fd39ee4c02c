"""Frame source over Meta's Habitat-Sim (``habitat_sim``), with the same interface as the embedded simulator.

``habitat_sim`` is optional (it is installed with conda, not pip, and needs an EGL-capable
GPU driver): this module imports it only when a :class:`HabitatFrameSource` is iterated, so the
coordinate conversions below are usable and testable without it.

Coordinate conventions and the conversion
-----------------------------------------
Habitat follows OpenGL: the world is **y-up** (gravity along -y) and a camera looks along its
**-z** axis with +y up and +x right; an un-rotated agent walks along world -z. This project uses
a **z-up** world (REP-103) and **OpenCV optical** cameras (x right, y down, z forward). Two fixed
rotations relate them:

* world: ``p_ours = R_ZUP_FROM_YUP @ p_habitat`` with ``R_ZUP_FROM_YUP = [[1,0,0],[0,0,-1],[0,1,0]]``
  (x stays, habitat's up +y becomes +z, habitat's -z (an un-rotated agent's forward) becomes +y);
* camera: ``p_gl = R_GL_FROM_CV @ p_cv`` with ``R_GL_FROM_CV = diag(1, -1, -1)`` (flip y and z).

Hence ``T_world_camera (ours) = T(R_ZUP_FROM_YUP) @ T_habitat_world_sensor @ T(R_GL_FROM_CV)``
(:func:`habitat_to_opencv_pose`) and its inverse (:func:`opencv_to_habitat_pose`). Habitat's
DEPTH sensor returns z-depth in metres (distance along the optical axis), the same quantity as
``Frame.depth``; its pinhole camera has square pixels with ``hfov`` spanning the image width, as
:meth:`CameraIntrinsics.from_fov`. The SEMANTIC sensor returns per-pixel *instance* ids; their
category names come from ``sim.semantic_scene.objects`` (``obj.category.name()``).

Rendering device: ``SimulatorConfiguration.gpu_device_id`` selects the CUDA device used for EGL
rendering (default 0). Habitat's maintainers describe ``gpu_device_id = -1`` as an unofficial,
not-yet-documented workaround for machines without an NVIDIA GPU (software EGL) — see
facebookresearch/habitat-sim issue #2554; it may or may not work with a given build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from spatial_memory.errors import ConfigError, EmemError, InvalidPoseError
from spatial_memory.geometry import make_pose, validate_pose
from spatial_memory.types import CameraIntrinsics, Frame

from .agent import camera_pose
from .source import SourceStats

R_ZUP_FROM_YUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
R_GL_FROM_CV = np.diag([1.0, -1.0, -1.0])
HABITAT_ACTIONS = ("move_forward", "turn_left", "turn_right", "look_up", "look_down")
_INSTALL_HINT = (
    "habitat-sim is not installed; install it with conda "
    "(conda install habitat-sim headless -c conda-forge -c aihabitat) to use the Habitat frame source"
)


# ----------------------------------------------------------------------------- conversions (no habitat needed)


def habitat_to_opencv_pose(position: np.ndarray, rotation_xyzw: np.ndarray) -> np.ndarray:
    """Habitat sensor state (y-up world, OpenGL camera) -> ``T_world_camera [4, 4]`` (z-up world, OpenCV camera).

    Args:
        position: ``[3]`` sensor position in habitat world coordinates.
        rotation_xyzw: ``[4]`` sensor orientation quaternion ``[x, y, z, w]`` (habitat world from GL camera).
    """
    p = np.asarray(position, dtype=np.float64).reshape(3)
    q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(4)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q)) and np.linalg.norm(q) > 1e-9):
        raise InvalidPoseError(f"habitat sensor state is not finite: position={p.tolist()}, rotation={q.tolist()}")
    R_hab_gl = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
    return make_pose(R_ZUP_FROM_YUP @ R_hab_gl @ R_GL_FROM_CV, R_ZUP_FROM_YUP @ p)


def opencv_to_habitat_pose(T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`habitat_to_opencv_pose`: ``(position [3], rotation [x, y, z, w])`` in habitat's frames."""
    T = validate_pose(T_world_camera, "T_world_camera")
    R_hab_gl = R_ZUP_FROM_YUP.T @ T[:3, :3] @ R_GL_FROM_CV
    q = Rotation.from_matrix(R_hab_gl).as_quat()
    return R_ZUP_FROM_YUP.T @ T[:3, 3], (q if q[3] >= 0 else -q)


def habitat_intrinsics(width: int, height: int, hfov_deg: float) -> CameraIntrinsics:
    """The pinhole camera of a habitat CameraSensorSpec (``resolution=[height, width]``, ``hfov`` in degrees)."""
    if not 0.0 < hfov_deg < 180.0:
        raise ConfigError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    return CameraIntrinsics.from_fov(width, height, hfov_deg)


def semantic_id_to_label(semantic_objects: Sequence[Any]) -> dict[int, str]:
    """Instance id -> category name from ``sim.semantic_scene.objects``.

    Uses ``obj.semantic_id`` where the build provides it, else the numeric suffix of ``obj.id``
    (``"<level>_<region>_<index>"``), which is how older releases index the semantic image.
    """
    out: dict[int, str] = {}
    for obj in semantic_objects:
        if obj is None or getattr(obj, "category", None) is None:
            continue
        sid = getattr(obj, "semantic_id", None)
        if sid is None:
            try:
                sid = int(str(obj.id).split("_")[-1])
            except ValueError:
                continue
        name = obj.category.name()
        if name:
            out[int(sid)] = str(name)
    return out


def _import_habitat():
    try:
        import habitat_sim  # noqa: F401
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return habitat_sim


# ----------------------------------------------------------------------------- frame source


class HabitatFrameSource:
    """Posed RGB-D(+instance) frames rendered by habitat-sim (a :class:`sim.source.FrameSource`).

    Two modes:

    * ``poses``: render each given ``T_world_camera`` (our z-up/OpenCV convention) by placing the
      agent, whose sensors sit at its origin, at the converted pose;
    * ``actions``: start the agent at ``start_xy_yaw`` (our world, on the floor) or at a seeded
      random navigable point, execute habitat's discrete actions (``move_forward`` etc. with
      ``forward_step`` metres / ``turn_deg`` / ``tilt_deg``), and emit a frame after each action,
      with the sensors ``camera_height`` above the agent.

    Frame poses always come from habitat's sensor state, converted with :func:`habitat_to_opencv_pose`.
    """

    def __init__(
        self,
        scene_path: str | Path,
        poses: Sequence[np.ndarray] | None = None,
        actions: Sequence[str] | None = None,
        width: int = 640,
        height: int = 480,
        hfov_deg: float = 70.0,
        gpu_device_id: int = 0,
        camera_height: float = 1.0,
        forward_step: float = 0.25,
        turn_deg: float = 10.0,
        tilt_deg: float = 10.0,
        start_xy_yaw: tuple[float, float, float] | None = None,
        scene_dataset_config: str | None = None,
        semantic: bool = True,
        rate_hz: float = 10.0,
        seed: int = 0,
    ) -> None:
        if (poses is None) == (actions is None):
            raise ConfigError("give exactly one of poses or actions")
        if actions is not None:
            bad = [a for a in actions if a not in HABITAT_ACTIONS]
            if bad:
                raise ConfigError(f"unknown habitat actions {bad[:5]}; expected {HABITAT_ACTIONS}")
        if not rate_hz > 0:
            raise ConfigError(f"rate_hz must be positive, got {rate_hz}")
        self.scene_path = str(scene_path)
        self.poses = None if poses is None else [np.asarray(T, dtype=np.float64) for T in poses]
        self.actions = None if actions is None else list(actions)
        self._intrinsics = habitat_intrinsics(width, height, hfov_deg)
        self.hfov_deg = float(hfov_deg)
        self.gpu_device_id = int(gpu_device_id)
        self.camera_height = float(camera_height)
        self.forward_step, self.turn_deg, self.tilt_deg = float(forward_step), float(turn_deg), float(tilt_deg)
        self.start_xy_yaw = start_xy_yaw
        self.scene_dataset_config = scene_dataset_config
        self.semantic = bool(semantic)
        self.rate_hz = float(rate_hz)
        self.seed = int(seed)
        self.name = f"habitat:{Path(self.scene_path).stem}"
        self.stats = SourceStats()

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    def __len__(self) -> int:
        return len(self.poses) if self.poses is not None else len(self.actions)

    # -- habitat setup -----------------------------------------------------------------

    def _configuration(self, habitat_sim):
        """Build ``habitat_sim.Configuration`` (simulator + one agent with colour/depth/semantic cameras)."""
        import magnum as mn  # ships with habitat-sim

        sim_cfg = habitat_sim.SimulatorConfiguration()
        sim_cfg.scene_id = self.scene_path
        if self.scene_dataset_config:
            sim_cfg.scene_dataset_config_file = self.scene_dataset_config
        sim_cfg.gpu_device_id = self.gpu_device_id
        sim_cfg.enable_physics = False
        sim_cfg.random_seed = self.seed
        # in pose mode the sensors sit at the agent origin so the agent state *is* the camera pose
        offset = [0.0, self.camera_height if self.actions is not None else 0.0, 0.0]
        kinds = [("color", habitat_sim.SensorType.COLOR), ("depth", habitat_sim.SensorType.DEPTH)]
        if self.semantic:
            kinds.append(("semantic", habitat_sim.SensorType.SEMANTIC))
        specs = []
        for uuid, stype in kinds:
            spec = habitat_sim.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = stype
            spec.sensor_subtype = habitat_sim.SensorSubType.PINHOLE
            spec.resolution = [self._intrinsics.height, self._intrinsics.width]
            spec.position = offset
            spec.hfov = mn.Deg(self.hfov_deg)
            specs.append(spec)
        agent_cfg = habitat_sim.agent.AgentConfiguration()
        agent_cfg.sensor_specifications = specs
        amounts = {"move_forward": self.forward_step, "turn_left": self.turn_deg, "turn_right": self.turn_deg,
                   "look_up": self.tilt_deg, "look_down": self.tilt_deg}
        agent_cfg.action_space = {
            name: habitat_sim.agent.ActionSpec(name, habitat_sim.agent.ActuationSpec(amount=amount))
            for name, amount in amounts.items()
        }
        return habitat_sim.Configuration(sim_cfg, [agent_cfg])

    def _set_camera(self, habitat_sim, agent, T_world_camera: np.ndarray) -> None:
        from habitat_sim.utils.common import quat_from_coeffs

        pos, q = opencv_to_habitat_pose(T_world_camera)
        state = habitat_sim.AgentState()
        state.position = pos.astype(np.float32)
        state.rotation = quat_from_coeffs(q)
        agent.set_state(state)

    def _start_actions(self, habitat_sim, sim, agent) -> None:
        if self.start_xy_yaw is not None:
            x, y, yaw = self.start_xy_yaw
            floor = np.array([x, y, 0.0])
            hab = R_ZUP_FROM_YUP.T @ floor
            if sim.pathfinder.is_loaded:
                hab[1] = sim.pathfinder.snap_point(hab)[1]  # floor height of the navmesh under (x, y)
            floor_z = (R_ZUP_FROM_YUP @ hab)[2]
        else:
            sim.pathfinder.seed(self.seed)
            hab = np.asarray(sim.pathfinder.get_random_navigable_point(), dtype=np.float64)
            p = R_ZUP_FROM_YUP @ hab
            x, y, floor_z = p
            yaw = float(np.random.default_rng(self.seed).uniform(-np.pi, np.pi))
        # an un-tilted camera at the agent origin has the agent's orientation (sensor orientation is zero)
        self._set_camera(habitat_sim, agent, camera_pose([x, y], yaw, 0.0, 0.0, floor_z))

    def _frame(self, obs: dict, agent, i: int, id_to_label: dict[int, str]) -> Frame:
        from habitat_sim.utils.common import quat_to_coeffs

        s = agent.get_state().sensor_states["color"]
        T = habitat_to_opencv_pose(np.asarray(s.position), quat_to_coeffs(s.rotation))
        rgb = np.ascontiguousarray(np.asarray(obs["color"])[..., :3], dtype=np.uint8)
        depth = np.asarray(obs["depth"], dtype=np.float32)
        ids = np.asarray(obs["semantic"]).astype(np.int32) if "semantic" in obs else None
        frame = Frame(
            stamp_ns=int(round(i * 1e9 / self.rate_hz)), rgb=rgb, depth=depth, intrinsics=self._intrinsics,
            T_world_camera=T, instance_ids=ids, id_to_label=dict(id_to_label), index=i,
        )
        return frame.validate()

    def __iter__(self) -> Iterator[Frame]:
        habitat_sim = _import_habitat()
        sim = habitat_sim.Simulator(self._configuration(habitat_sim))
        try:
            agent = sim.initialize_agent(0)
            id_to_label = semantic_id_to_label(sim.semantic_scene.objects) if self.semantic else {}
            if self.actions is not None:
                self._start_actions(habitat_sim, sim, agent)
            for i in range(len(self)):
                try:
                    if self.poses is not None:
                        self._set_camera(habitat_sim, agent, self.poses[i])
                        obs = sim.get_sensor_observations()
                    else:
                        obs = sim.step(self.actions[i])
                    frame = self._frame(obs, agent, i, id_to_label)
                except (EmemError, ValueError) as e:
                    self.stats.skip(f"frame {i}: {e}")
                    continue
                self.stats.yielded += 1
                yield frame
        finally:
            sim.close()


__all__ = [
    "HabitatFrameSource",
    "R_GL_FROM_CV",
    "R_ZUP_FROM_YUP",
    "habitat_intrinsics",
    "habitat_to_opencv_pose",
    "opencv_to_habitat_pose",
    "semantic_id_to_label",
]
