"""CPU renderer of a :class:`sim.scene.Scene`: RGB, z-depth and instance ids from ray casting.

Open3D's ``RaycastingScene`` (Embree, multi-threaded) finds the first triangle each pixel ray
hits; one numba kernel then does everything per pixel that is not ray casting: barycentric UV
interpolation, bilinear texel fetch with wrapping, Lambert + ambient shading, z-depth and the
instance lookup. Per-scene data (packed textures, face normals, corner UVs) is prepared once in
``Renderer.__init__`` and the camera-frame ray directions once per intrinsics.

Camera rays use the pixel-centre convention: pixel ``(u, v)`` looks along ``K^-1 [u, v, 1]``.
Because that direction has unit optical-axis component, Open3D's hit parameter ``t`` (in units
of the direction length) *is* the z-depth.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numba
import numpy as np
import open3d as o3d

from spatial_memory.errors import ConfigError, InvalidIntrinsicsError
from spatial_memory.geometry import validate_pose
from spatial_memory.types import CameraIntrinsics, Frame

from .scene import Scene

# The pip TBB is older than numba wants; numba then falls back to OpenMP/workqueue by itself.
# The warning says nothing actionable, so keep it out of every render's log.
warnings.filterwarnings("ignore", message="The TBB threading layer requires", category=numba.NumbaWarning)


@dataclass(frozen=True)
class Lighting:
    """Ambient + one directional light; colours are linear multipliers of the texture colour.

    Attributes:
        ambient: light reaching every surface, whatever its orientation (>= 0).
        directional: intensity of the directional light (>= 0).
        direction: world vector pointing from the surfaces *towards* the light (normalised on creation).
        tint: ``[3]`` RGB colour of all light (1, 1, 1 = white).
    """

    ambient: float = 0.45
    directional: float = 0.65
    direction: tuple[float, float, float] = (0.35, -0.25, 0.9)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        d = np.asarray(self.direction, dtype=np.float64)
        tint = np.asarray(self.tint, dtype=np.float64)
        if d.shape != (3,) or tint.shape != (3,):
            raise ConfigError(f"lighting direction and tint need 3 values, got {d.tolist()} and {tint.tolist()}")
        vals = np.concatenate([[self.ambient, self.directional], d, tint])
        if not np.all(np.isfinite(vals)):
            raise ConfigError(f"lighting has NaN/inf values: {vals.tolist()}")
        if self.ambient < 0 or self.directional < 0 or np.any(tint < 0):
            raise ConfigError(f"lighting intensities must be >= 0 (ambient={self.ambient}, directional={self.directional}, tint={tint.tolist()})")
        n = np.linalg.norm(d)
        if n < 1e-9:
            raise ConfigError("lighting direction must be non-zero")
        object.__setattr__(self, "direction", tuple(float(x) for x in d / n))
        object.__setattr__(self, "tint", tuple(float(x) for x in tint))

    @classmethod
    def changed(cls, seed: int = 0) -> "Lighting":
        """A seeded, clearly different lighting condition (for lighting-change experiments):
        dimmer ambient, a low light from another side, and a warm or cool colour cast."""
        rng = np.random.default_rng([seed, 0x11647])
        az = rng.uniform(0.0, 2.0 * np.pi)
        el = rng.uniform(np.radians(15.0), np.radians(45.0))
        warm = rng.random() < 0.5
        tint = (1.15, 0.95, 0.7) if warm else (0.75, 0.9, 1.15)
        tint = tuple(float(t * rng.uniform(0.95, 1.05)) for t in tint)
        return cls(
            ambient=float(rng.uniform(0.2, 0.3)),
            directional=float(rng.uniform(0.8, 1.0)),
            direction=(float(np.cos(el) * np.cos(az)), float(np.cos(el) * np.sin(az)), float(np.sin(el))),
            tint=tint,
        )


@dataclass
class RenderResult:
    """One rendered view.

    Attributes:
        rgb: ``[H, W, 3] uint8``.
        depth: ``[H, W] float32`` metres along the optical axis, 0 where no surface was hit.
        instance_ids: ``[H, W] int32`` scene instance ids, 0 where no surface was hit.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance_ids: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def camera_ray_directions(intrinsics: CameraIntrinsics) -> np.ndarray:
    """``[H, W, 3] float32`` camera-frame directions ``K^-1 [u, v, 1]`` (z component exactly 1)."""
    u = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    d = np.empty((intrinsics.height, intrinsics.width, 3), np.float32)
    d[:, :, 0] = u[None, :]
    d[:, :, 1] = v[:, None]
    d[:, :, 2] = 1.0
    return d


@numba.njit(cache=True, parallel=True)
def _make_rays(dirs_cam: np.ndarray, R: np.ndarray, t: np.ndarray, rays: np.ndarray) -> None:
    """Fill ``rays: [N, 6]`` with world origin ``t`` and world directions ``R @ dirs_cam[i]``."""
    for i in numba.prange(dirs_cam.shape[0]):
        x, y, z = dirs_cam[i, 0], dirs_cam[i, 1], dirs_cam[i, 2]
        rays[i, 0] = t[0]
        rays[i, 1] = t[1]
        rays[i, 2] = t[2]
        rays[i, 3] = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z
        rays[i, 4] = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z
        rays[i, 5] = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z


@numba.njit(cache=True, parallel=True)
def _shade(
    prim: np.ndarray, bary: np.ndarray, t_hit: np.ndarray, rays: np.ndarray,
    tri_material: np.ndarray, tri_instance: np.ndarray, tri_uv: np.ndarray, tri_normal: np.ndarray,
    tex_data: np.ndarray, tex_offset: np.ndarray, tex_h: np.ndarray, tex_w: np.ndarray, base_color: np.ndarray,
    ambient: float, directional: float, light_dir: np.ndarray, tint: np.ndarray,
    rgb: np.ndarray, depth: np.ndarray, ids: np.ndarray,
) -> None:
    """Per pixel ``i`` of ``N``: texture, shade, z-depth and instance of the hit triangle.

    Shapes: prim ``[N] uint32`` (0xFFFFFFFF = miss), bary ``[N, 2]`` (Open3D's (u, v): weight of
    corners 1 and 2), t_hit ``[N]``, rays ``[N, 6]``; tri_* ``[T, ...]``; textures packed row-major
    into ``tex_data [sum h*w*3] uint8`` with per-material offset/height/width; outputs rgb ``[N, 3]
    uint8``, depth ``[N] float32``, ids ``[N] int32``.
    """
    for i in numba.prange(prim.shape[0]):
        p = prim[i]
        if p == 0xFFFFFFFF:
            rgb[i, 0] = 0
            rgb[i, 1] = 0
            rgb[i, 2] = 0
            depth[i] = 0.0
            ids[i] = 0
            continue
        ids[i] = tri_instance[p]
        depth[i] = t_hit[i]  # rays have unit camera-z direction, so t is the z-depth
        b1 = bary[i, 0]
        b2 = bary[i, 1]
        b0 = 1.0 - b1 - b2
        tu = b0 * tri_uv[p, 0, 0] + b1 * tri_uv[p, 1, 0] + b2 * tri_uv[p, 2, 0]
        tv = b0 * tri_uv[p, 0, 1] + b1 * tri_uv[p, 1, 1] + b2 * tri_uv[p, 2, 1]
        m = tri_material[p]
        h = tex_h[m]
        w = tex_w[m]
        # bilinear fetch with wrapping; texel centres at integer + 0.5 (glTF: v = 0 is the top row).
        # fx lies in [-0.5, w - 0.5), so x0 in [-1, w - 1]: wrap with compares, not modulo.
        fx = (tu - np.floor(tu)) * w - 0.5
        fy = (tv - np.floor(tv)) * h - 0.5
        x0 = int(np.floor(fx))
        y0 = int(np.floor(fy))
        ax = np.float32(fx - x0)
        ay = np.float32(fy - y0)
        if x0 < 0:
            x0 = w - 1
        if y0 < 0:
            y0 = h - 1
        x1 = x0 + 1
        if x1 >= w:
            x1 = 0
        y1 = y0 + 1
        if y1 >= h:
            y1 = 0
        off = tex_offset[m]
        r0 = off + y0 * w * 3
        r1 = off + y1 * w * 3
        x0 *= 3
        x1 *= 3
        # Lambert with the face normal turned towards the camera (meshes are not consistently wound)
        nx, ny, nz = tri_normal[p, 0], tri_normal[p, 1], tri_normal[p, 2]
        if nx * rays[i, 3] + ny * rays[i, 4] + nz * rays[i, 5] > 0.0:
            nx, ny, nz = -nx, -ny, -nz
        lam = nx * light_dir[0] + ny * light_dir[1] + nz * light_dir[2]
        if lam < 0.0:
            lam = np.float32(0.0)
        shade = np.float32(ambient + directional * lam)
        for c in range(3):
            c00 = np.float32(tex_data[r0 + x0 + c])
            c01 = np.float32(tex_data[r0 + x1 + c])
            c10 = np.float32(tex_data[r1 + x0 + c])
            c11 = np.float32(tex_data[r1 + x1 + c])
            top = c00 + ax * (c01 - c00)
            bot = c10 + ax * (c11 - c10)
            val = (top + ay * (bot - top)) * (base_color[m, c] * shade * tint[c])
            if val > np.float32(255.0):
                val = np.float32(255.0)
            rgb[i, c] = np.uint8(val + np.float32(0.5))


def _pack_textures(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pack every material texture (flat colours as 1x1 white) into one flat uint8 array.

    Returns:
        data ``[sum h*w*3] uint8``, offset ``[M] int64``, height ``[M] int64``, width ``[M] int64``,
        base colour ``[M, 3] float32``. A texture shared by several materials is stored once.
    """
    chunks: list[np.ndarray] = []
    seen: dict[int, tuple[int, int, int]] = {}
    offsets, heights, widths = [], [], []
    total = 0
    white = np.full((1, 1, 3), 255, np.uint8)
    for m in scene.materials:
        tex = white if m.texture is None else m.texture
        if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8:
            raise ConfigError(f"material {m.name!r}: texture must be [h, w, 3] uint8, got {tex.shape} {tex.dtype}")
        key = id(tex)
        if key not in seen:
            seen[key] = (total, tex.shape[0], tex.shape[1])
            chunks.append(np.ascontiguousarray(tex).reshape(-1))
            total += tex.size
        o, h, w = seen[key]
        offsets.append(o)
        heights.append(h)
        widths.append(w)
    colors = np.array([np.asarray(m.base_color, np.float32)[:3] for m in scene.materials], np.float32).reshape(-1, 3)
    return (np.concatenate(chunks), np.array(offsets, np.int64), np.array(heights, np.int64),
            np.array(widths, np.int64), colors)


def _check_scene(scene: Scene) -> None:
    """Raise ConfigError naming the first array of ``scene`` that breaks the Scene contract."""
    T = len(scene.triangles)
    if T == 0:
        raise ConfigError(f"scene {scene.name!r} has no triangles")
    checks = [
        ("vertices", scene.vertices.ndim == 2 and scene.vertices.shape[1] == 3),
        ("triangles", scene.triangles.shape == (T, 3) and 0 <= scene.triangles.min() and scene.triangles.max() < len(scene.vertices)),
        ("tri_instance", scene.tri_instance.shape == (T,)),
        ("tri_material", scene.tri_material.shape == (T,) and 0 <= scene.tri_material.min()
         and scene.tri_material.max() < len(scene.materials)),
        ("tri_uv", scene.tri_uv.shape == (T, 3, 2)),
    ]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"scene {scene.name!r}: {name} does not match the Scene contract ({T} triangles)")


class Renderer:
    """Renders RGB, z-depth and instance ids of a scene from posed pinhole cameras (CPU)."""

    def __init__(self, scene: Scene, lighting: Lighting | None = None) -> None:
        _check_scene(scene)
        self.scene = scene
        self.lighting = lighting or Lighting()
        V = np.ascontiguousarray(scene.vertices, np.float32)
        F = np.ascontiguousarray(scene.triangles, np.uint32)
        self._raycaster = o3d.t.geometry.RaycastingScene()
        self._raycaster.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(F))
        e1 = V[F[:, 1]] - V[F[:, 0]]
        e2 = V[F[:, 2]] - V[F[:, 0]]
        n = np.cross(e1, e2)
        self._tri_normal = (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        self._tri_uv = np.ascontiguousarray(scene.tri_uv, np.float32)
        self._tri_material = np.ascontiguousarray(scene.tri_material, np.int64)
        self._tri_instance = np.ascontiguousarray(scene.tri_instance, np.int32)
        self._tex = _pack_textures(scene)
        self._id_to_label = scene.id_to_label
        self._dirs: OrderedDict[CameraIntrinsics, np.ndarray] = OrderedDict()

    def _directions(self, intrinsics: CameraIntrinsics) -> np.ndarray:
        """``[H*W, 3]`` camera-frame ray directions, cached for the last few intrinsics."""
        d = self._dirs.get(intrinsics)
        if d is None:
            d = camera_ray_directions(intrinsics).reshape(-1, 3)
            self._dirs[intrinsics] = d
            if len(self._dirs) > 4:
                self._dirs.popitem(last=False)
        return d

    def cast(self, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray) -> tuple[dict, np.ndarray]:
        """Ray-cast only (no shading): Open3D's result dict and the ``[H*W, 6]`` rays cast."""
        if not isinstance(intrinsics, CameraIntrinsics):
            raise InvalidIntrinsicsError(f"intrinsics must be CameraIntrinsics, got {type(intrinsics).__name__}")
        T = validate_pose(T_world_camera, "T_world_camera")
        dirs = self._directions(intrinsics)
        rays = np.empty((dirs.shape[0], 6), np.float32)
        _make_rays(dirs, T[:3, :3], T[:3, 3], rays)
        return self._raycaster.cast_rays(o3d.core.Tensor.from_numpy(rays)), rays

    def render(self, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray, lighting: Lighting | None = None) -> RenderResult:
        """Render one view.

        Args:
            intrinsics: pinhole camera.
            T_world_camera: ``[4, 4]`` camera-to-world pose (OpenCV optical frame).
            lighting: overrides the renderer's lighting for this view.

        Raises:
            InvalidPoseError: the pose is not a rigid transform.
            InvalidIntrinsicsError: ``intrinsics`` is not a CameraIntrinsics.
        """
        light = lighting or self.lighting
        t0 = time.perf_counter()
        hits, rays = self.cast(intrinsics, T_world_camera)
        t1 = time.perf_counter()
        n = rays.shape[0]
        rgb = np.empty((n, 3), np.uint8)
        depth = np.empty(n, np.float32)
        ids = np.empty(n, np.int32)
        data, off, th, tw, colors = self._tex
        _shade(
            hits["primitive_ids"].numpy(), hits["primitive_uvs"].numpy(), hits["t_hit"].numpy(), rays,
            self._tri_material, self._tri_instance, self._tri_uv, self._tri_normal,
            data, off, th, tw, colors,
            float(light.ambient), float(light.directional), np.asarray(light.direction, np.float32),
            np.asarray(light.tint, np.float32), rgb, depth, ids,
        )
        t2 = time.perf_counter()
        H, W = intrinsics.height, intrinsics.width
        return RenderResult(
            rgb.reshape(H, W, 3), depth.reshape(H, W), ids.reshape(H, W),
            timings_ms={"raycast": 1e3 * (t1 - t0), "shade": 1e3 * (t2 - t1)},
        )

    def render_frame(self, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray, stamp_ns: int = 0, index: int = -1,
                     lighting: Lighting | None = None) -> Frame:
        """Render one view as a :class:`spatial_memory.Frame` with instance ids and their labels."""
        r = self.render(intrinsics, T_world_camera, lighting)
        return Frame(
            stamp_ns=int(stamp_ns), rgb=r.rgb, depth=r.depth, intrinsics=intrinsics,
            T_world_camera=np.array(T_world_camera, dtype=np.float64), instance_ids=r.instance_ids,
            id_to_label=dict(self._id_to_label), index=int(index),
        )
