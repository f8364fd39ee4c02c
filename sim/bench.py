"""Benchmark of the embedded renderer: full render rate vs Open3D ray casting alone."""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm import tqdm

from spatial_memory.geometry import look_at
from spatial_memory.types import CameraIntrinsics

from .renderer import Renderer
from .scenes import load_scene


def orbit_poses(center: np.ndarray, radius: float, height: float, target_z: float, n: int) -> list[np.ndarray]:
    """``n`` camera poses ``[4, 4]`` on a horizontal circle around ``center [2]``, looking across it."""
    poses = []
    for k in range(n):
        a = 2.0 * np.pi * k / n
        eye = np.array([center[0] + radius * np.cos(a), center[1] + radius * np.sin(a), height])
        target = np.array([center[0] - radius * np.cos(a), center[1] - radius * np.sin(a), target_z])
        poses.append(look_at(eye, target))
    return poses


def bench_sim(scene: str = "drake_living_room", frames: int = 30, width: int = 640, height: int = 480,
              seed: int = 0) -> dict:
    """Render ``frames`` views of ``scene`` around its first room and time them.

    The reference is Open3D's ray cast alone on the same rays (measured in the same run, frames
    interleaved), so ``shading_overhead_ratio = render_ms_mean / raycast_ms_mean`` says what
    texturing, shading, depth and ids cost on top of the cast itself. Wall-clock numbers depend on
    other load on the machine (``load_average_1min``); CPU-time numbers much less.
    """
    t0 = time.perf_counter()
    sc = load_scene(scene, seed=seed)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    renderer = Renderer(sc)
    init_s = time.perf_counter() - t0
    K = CameraIntrinsics.from_fov(width, height, 70.0)
    room = sc.rooms[0]
    c = 0.5 * (room.xy_min + room.xy_max)
    radius = 0.3 * float(np.min(room.xy_max - room.xy_min))
    poses = orbit_poses(c, radius, sc.floor_z + 1.4, sc.floor_z + 0.9, frames)
    renderer.render(K, poses[0])  # warm-up: numba compile/cache load, ray directions
    render_ms, render_cpu_ms, cast_ms, cast_cpu_ms, shade_ms, valid = [], [], [], [], [], []
    for T in tqdm(poses, desc=f"bench sim {scene}", leave=False):
        t, c = time.perf_counter(), time.process_time()
        r = renderer.render(K, T)
        render_ms.append(1e3 * (time.perf_counter() - t))
        render_cpu_ms.append(1e3 * (time.process_time() - c))
        shade_ms.append(r.timings_ms["shade"])
        valid.append(float((r.depth > 0).mean()))
        t, c = time.perf_counter(), time.process_time()
        renderer.cast(K, T)
        cast_ms.append(1e3 * (time.perf_counter() - t))
        cast_cpu_ms.append(1e3 * (time.process_time() - c))
    render_mean, cast_mean = float(np.mean(render_ms)), float(np.mean(cast_ms))
    return {
        "scene": sc.name,
        "width": width,
        "height": height,
        "frames": frames,
        "triangles": int(len(sc.triangles)),
        "objects": int(len(sc.objects)),
        "materials": int(len(sc.materials)),
        "load_s": round(load_s, 3),
        "renderer_init_s": round(init_s, 3),
        f"render_fps_{width}x{height}": round(1e3 / render_mean, 2),
        "render_ms_mean": round(render_mean, 2),
        "render_ms_p90": round(float(np.percentile(render_ms, 90)), 2),
        "raycast_ms_mean": round(cast_mean, 2),
        "shade_ms_mean": round(float(np.mean(shade_ms)), 2),
        "shading_overhead_ratio": round(render_mean / cast_mean, 3),
        # CPU time (all threads) is what a frame costs regardless of other load on the machine
        "render_cpu_ms_mean": round(float(np.mean(render_cpu_ms)), 2),
        "raycast_cpu_ms_mean": round(float(np.mean(cast_cpu_ms)), 2),
        "valid_depth_fraction": round(float(np.mean(valid)), 3),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
