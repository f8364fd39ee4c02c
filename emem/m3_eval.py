"""Evaluation and benchmarks of the M3 memory on simulated scenes.

Metrics (per scene):

- ``psnr_db``: rendered colour vs the simulator image on held-out views (every
  ``holdout_every``-th frame of the stream is never ingested).
- ``feature_cosine_distance``: M3's Table-1 metric: mean ``1 - cos`` between features decoded
  from rendered queries and the extractor's own features of the held-out image, over valid
  cells of the extractor's grid where the map is opaque.
- ``text_query_success``: for every object category of the scene (structure excluded), the
  top hit of ``query_text(label)`` must lie within 0.5 m of an object of that label; the
  distance is to the object's axis-aligned box (0 inside it).
- ``compression_ratio``: bytes of a Feature-3DGS-style map (full-width features stored per
  Gaussian) over the bytes of this map on disk.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spatial_memory.types import Frame
from spatial_memory.m3.config import M3Config

log = logging.getLogger(__name__)

SUCCESS_RADIUS_M = 0.5


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of two uint8 images ``[H, W, 3]``."""
    mse = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-10)))


def aabb_distance(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Euclidean distance from a point to an axis-aligned box (0 inside)."""
    d = np.maximum(np.maximum(lo - p, 0.0), p - hi)
    return float(np.linalg.norm(d))


def feature_cosine_distance(memory: Any, frame: Frame, view: Any) -> dict[str, float]:
    """Mean ``1 - cos`` per model between decoded rendered features and the model's own features."""
    out = {}
    H, W = frame.intrinsics.shape
    for name, ex in memory.extractors.items():
        if name not in view.features:
            continue
        fm = ex.extract(frame)
        h, w = fm.grid_shape
        # Compare at the extractor's grid (cell centres), like M3 compares at feature resolution.
        step = max(1, int(round(h / 60)))  # full-resolution label maps: every few pixels suffices
        gy, gx = np.meshgrid(np.arange(0, h, step), np.arange(0, w, step), indexing="ij")
        u = ((gx + 0.5) * W / w - 0.5).round().astype(int).clip(0, W - 1)
        v = ((gy + 0.5) * H / h - 0.5).round().astype(int).clip(0, H - 1)
        ok = fm.valid[gy, gx] & (view.alpha[v, u] > 0.5)
        if not ok.any():
            continue
        target = torch.from_numpy(fm.features[gy[ok], gx[ok]])
        pred = torch.from_numpy(view.features[name][v[ok], u[ok]])
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
        out[name] = float((1.0 - cos).mean())
    return out


def text_query_success(memory: Any, scene: Any) -> dict[str, Any]:
    """Query every object category of ``scene``; success = top hit within 0.5 m of such an object.

    ``rate`` counts every category of the scene; ``rate_seen`` only those that appeared in an
    ingested frame (a category the camera never saw cannot be found by any memory).
    """
    per = {}
    for label in scene.labels():
        hits = memory.query_text(label, top_k=1)
        objs = [o for o in scene.objects if o.label == label]
        if not hits:
            per[label] = {"success": False, "aabb_distance_m": None}
            continue
        p = hits[0].position
        d_box = min(aabb_distance(p, np.asarray(o.aabb_min), np.asarray(o.aabb_max)) for o in objs)
        d_ctr = min(float(np.linalg.norm(p - o.center)) for o in objs)
        per[label] = {"success": d_box <= SUCCESS_RADIUS_M, "aabb_distance_m": d_box, "centre_distance_m": d_ctr,
                      "score": hits[0].score, "support": hits[0].support}
    for label in per:
        per[label]["seen"] = label in memory.vocabulary
    rate = float(np.mean([v["success"] for v in per.values()])) if per else 0.0
    seen = [v["success"] for v in per.values() if v["seen"]]
    return {"rate": rate, "rate_seen": float(np.mean(seen)) if seen else 0.0, "n_seen": len(seen), "per_label": per}


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def compression(memory: Any) -> dict[str, float]:
    """Map bytes on disk vs a Feature-3DGS-style map that stores each model's full ``D`` floats per Gaussian."""
    with TemporaryDirectory() as tmp:
        p = memory.save(Path(tmp) / "map")
        ours = _dir_bytes(p)
    n = memory.num_gaussians
    m3_feature_bytes = 0
    full_feature_bytes = 0
    for name, ex in memory.extractors.items():
        att = memory.attention[name]
        m3_feature_bytes += 4 * (n * att.query_dim + att.W.numel() + att.bank.numel()) + 8 * att.bank_size
        full_feature_bytes += 4 * n * ex.dim
    baseline = ours - m3_feature_bytes + full_feature_bytes
    return {"map_bytes": float(ours), "baseline_bytes": float(baseline), "compression_ratio": baseline / max(ours, 1)}


def evaluate_scene(scene_name: str, frames: int = 60, seed: int = 0, width: int = 320, height: int = 240,
                   iters: int | None = None, holdout_every: int = 8,
                   config: M3Config | None = None, progress: bool = True,
                   look_around_deg: float = 25.0) -> dict[str, Any]:
    """Map a simulated scene online and report PSNR, feature distance, text-query success, compression.

    The exploration tilts the camera up by ``look_around_deg`` and back every 24 frames: a robot
    building a memory of a room looks up too, or ceiling fixtures are never seen.
    """
    from sim.simulator import make_sim_source

    from spatial_memory.m3.memory import M3Memory

    cfg = config or M3Config()
    if iters is not None:
        cfg.mapper.iters_per_keyframe = int(iters)
    src = make_sim_source(scene=scene_name, seed=seed, frames=frames, width=width, height=height, progress=False,
                          look_around_deg=look_around_deg)
    mem = M3Memory(cfg)
    held: list[Frame] = []
    kf_seconds = []
    t0 = time.perf_counter()
    for f in tqdm(src, total=len(src), desc=f"eval m3 {scene_name}", unit="frame", disable=not progress):
        if f.index % holdout_every == holdout_every // 2:
            held.append(f)
            continue
        r = mem.ingest(f)
        if r.integrated:
            kf_seconds.append(r.seconds)
    build_s = time.perf_counter() - t0
    psnrs, fdist = [], {}
    for f in held:
        view = mem.render(f.intrinsics, f.T_world_camera, decode=True)
        psnrs.append(psnr(view.rgb, f.rgb))
        for k, v in feature_cosine_distance(mem, f, view).items():
            fdist.setdefault(k, []).append(v)
    tq = text_query_success(mem, src.scene)
    comp = compression(mem)
    fd = {k: float(np.mean(v)) for k, v in fdist.items()}
    return {
        "psnr_db": float(np.mean(psnrs)) if psnrs else float("nan"),
        "psnr_db_median": float(np.median(psnrs)) if psnrs else float("nan"),
        "psnr_db_per_view": psnrs,
        "feature_cosine_distance": float(np.mean(list(fd.values()))) if fd else float("nan"),
        "feature_cosine_distance_per_model": fd,
        "text_query_success": tq["rate"],
        "text_query_success_seen_categories": tq["rate_seen"],
        "categories": len(tq["per_label"]),
        "categories_seen": tq["n_seen"],
        "text_query_distance": "to the object's axis-aligned bounding box (0 inside), success radius 0.5 m",
        "text_queries": tq["per_label"],
        "compression_ratio": comp["compression_ratio"],
        "map_bytes": comp["map_bytes"],
        "feature3dgs_baseline_bytes": comp["baseline_bytes"],
        "frames": frames,
        "held_out_views": len(held),
        "keyframes": mem.counts["keyframes"],
        "gaussians": mem.num_gaussians,
        "psc_bank_sizes": {n: p.size for n, p in mem.psc.items()},
        "keyframe_seconds_mean": float(np.mean(kf_seconds)) if kf_seconds else 0.0,
        "build_seconds": build_s,
        "width": width,
        "height": height,
        "seed": seed,
    }


def bench_keyframe_integration(width: int = 320, height: int = 240, keyframes: int = 6,
                               budget_s: float | None = None) -> dict[str, Any]:
    """Seconds to integrate one keyframe (extract + PSC + grow + optimise) on the Drake room (CPU tensors).

    With ``budget_s`` the mapper stops optimising early to stay near that time per keyframe
    (``MapperConfig.keyframe_budget_s``); the iterations it managed are reported.
    """
    from sim.simulator import make_sim_source

    from spatial_memory.m3.memory import M3Memory

    cfg = M3Config()
    # Keyframe thresholds at 0 make every frame a keyframe, so each ingest is one integration.
    cfg.mapper.keyframe_translation_m = 1e-9
    cfg.mapper.keyframe_rotation_deg = 1e-9
    cfg.mapper.keyframe_budget_s = budget_s
    src = make_sim_source(scene="drake_living_room", frames=keyframes + 1, width=width, height=height, progress=False)
    frames = list(src)
    mem = M3Memory(cfg)
    mem.ingest(frames[0])  # warm-up: numba compilation, model loading
    secs, iters = [], []
    for f in frames[1:]:
        secs.append(mem.ingest(f).seconds)
        iters.append(mem.mapper.last_iterations)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"keyframe_integration_s": float(np.median(secs)), "keyframe_integration_s_max": float(np.max(secs)),
            "keyframe_resolution": f"{width}x{height}", "keyframe_gaussians": float(mem.num_gaussians),
            "keyframe_iterations_mean": float(np.mean(iters)), "cpu_load_average_1min": load,
            "cpu_count": os.cpu_count()}


def bench_query(n_gaussians: int = 100_000, repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """Text-query latency on a synthetic map of ``n_gaussians`` with a realistic label bank.

    Gaussians form 20 labelled blobs; each blob's queries are set to ``PSC_j W^T`` (plus
    noise), which the attention decodes mostly to label ``j``, so a query selects about one
    blob (``N / 20`` candidates) as in a real room. Reports the cached query time (decoded
    features reused) and the first query after a map change (decode included).
    """
    from splatting.gaussians import GaussianModel

    from spatial_memory.m3.memory import M3Memory

    rng = np.random.default_rng(seed)
    mem = M3Memory(M3Config())
    labels = ["sofa", "table", "chair", "lamp", "bookshelf", "cabinet", "stool", "tea set", "curtain", "door",
              "window", "bed", "plant", "television", "rug", "desk", "sink", "oven", "fridge", "toilet"]
    ex = mem.extractors["labels"]
    mem.psc["labels"].update(ex.encode_text(labels))
    att = mem.attention["labels"]
    att.set_bank(mem.psc["labels"].bank)
    centres = rng.uniform(-3, 3, (len(labels), 3))
    which = rng.integers(0, len(labels), n_gaussians)
    pts = centres[which] + 0.2 * rng.normal(size=(n_gaussians, 3))
    with torch.no_grad():
        codes = att.bank @ att.W.T  # [K, d]
        q = codes[torch.from_numpy(which)] + 0.01 * torch.randn(n_gaussians, att.query_dim)
    model = GaussianModel.from_points(pts, rng.uniform(0, 1, (n_gaussians, 3)), sh_degree=0,
                                      query_dims={"labels": att.query_dim}, init_opacity=0.8,
                                      scales=np.full(n_gaussians, 0.02))
    with torch.no_grad():
        model.queries["labels"].copy_(q)
    mem.mapper.set_model(model)
    mem.query_text("sofa")  # warm-up (text cache, decode)
    cold = []
    for i in range(3):
        mem.mapper.version += 1
        t = time.perf_counter()
        mem.query_text(labels[i])
        cold.append(time.perf_counter() - t)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        mem.query_text(labels[i % len(labels)])
        times.append(time.perf_counter() - t)
    hits = mem.query_text("sofa")
    return {"query_ms_100k": 1e3 * float(np.median(times)), "query_ms_100k_after_map_change": 1e3 * float(np.median(cold)),
            "query_gaussians": float(n_gaussians), "query_top_hit_support": float(hits[0].support) if hits else 0.0}
