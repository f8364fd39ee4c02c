"""Rasterizer benchmark: numba CPU kernel vs the PyTorch reference (and gsplat on CUDA).

``bench_rasterizer`` builds random but realistic scenes (Gaussians 1-3 m in front of a
60-degree camera, 1-5 cm scales, random rotations and opacities), times forward+backward of
every backend in the same run, and checks that the images agree.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spatial_memory.errors import ConfigError


def make_random_scene(
    n: int,
    width: int = 256,
    height: int = 256,
    n_features: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    hfov_deg: float = 60.0,
    depth_range: tuple[float, float] = (1.0, 3.0),
    scale_range: tuple[float, float] = (0.01, 0.05),
    opacity_range: tuple[float, float] = (0.05, 0.95),
) -> dict[str, Any]:
    """Random Gaussians inside the view frustum of an identity camera.

    Returns a dict of tensors: means [N,3], quats [N,4], scales [N,3], opacities [N],
    colors [N,3], features [N,F] | None, viewmat [4,4], K [3,3], plus width/height.
    """
    g = torch.Generator().manual_seed(seed)
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=dtype)
    z = depth_range[0] + (depth_range[1] - depth_range[0]) * torch.rand(n, generator=g, dtype=dtype)
    u = torch.rand(n, generator=g, dtype=dtype) * (width + 20) - 10
    v = torch.rand(n, generator=g, dtype=dtype) * (height + 20) - 10
    x = (u - K[0, 2]) / f * z
    y = (v - K[1, 2]) / f * z
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype))
    op = opacity_range[0] + (opacity_range[1] - opacity_range[0]) * torch.rand(n, generator=g, dtype=dtype)
    return {
        "means": torch.stack([x, y, z], dim=1),
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": scales,
        "opacities": op,
        "colors": torch.rand(n, 3, generator=g, dtype=dtype),
        "features": torch.randn(n, n_features, generator=g, dtype=dtype) if n_features else None,
        "viewmat": torch.eye(4, dtype=dtype),
        "K": K,
        "width": width,
        "height": height,
    }


_PARAMS = ("means", "quats", "scales", "opacities", "colors", "features")


def _fwd_bwd(scene: dict[str, Any], backend: str, device: str) -> tuple[float, dict[str, torch.Tensor]]:
    """One timed forward+backward; returns (milliseconds, detached outputs)."""
    from .rasterize import rasterization

    ps = {k: scene[k].to(device).clone().requires_grad_(True) for k in _PARAMS if scene.get(k) is not None}
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = rasterization(
        ps["means"], ps["quats"], ps["scales"], ps["opacities"], ps["colors"],
        scene["viewmat"].to(device), scene["K"].to(device), scene["width"], scene["height"],
        features=ps.get("features"), backend=backend,
    )  # fmt: skip
    loss = out.rgb.sum() + (out.depth * out.alpha).sum() + out.alpha.sum()
    if out.features is not None:
        loss = loss + out.features.sum()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1000.0
    res = {"rgb": out.rgb, "depth": out.depth, "alpha": out.alpha}
    if out.features is not None:
        res["features"] = out.features
    res = {k: v.detach().cpu().float() for k, v in res.items()}
    res["grad_means"] = ps["means"].grad.detach().cpu().float()
    return ms, res


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys=("rgb", "depth", "alpha", "features")) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in keys if k in a and k in b)


def bench_rasterizer(
    n_list: tuple[int, ...] = (10_000, 50_000),
    width: int = 256,
    height: int = 256,
    features: int = 16,
    iters: int = 3,
    ref_iters: int = 1,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Time forward+backward of the numba CPU kernel against the PyTorch reference (same run).

    For each N in ``n_list`` (keys use ``10k``-style labels): ``fwd_bwd_ms_<N>`` (CPU kernel,
    median of ``iters`` after one warm-up), ``torch_fwd_bwd_ms_<N>`` (reference, median of
    ``ref_iters``; it is slow), ``cpu_speedup_vs_torch_<N>``, ``max_abs_diff_vs_torch_<N>``
    (all rendered channels: rgb/depth/alpha/features), ``max_abs_diff_rgb_vs_torch_<N>`` and
    ``max_abs_diff_vs_torch`` over all N. The kernel computes in float64 and the reference in
    float32, so the differences are the reference's rounding: mostly < 1e-5, plus rare pixels
    where float32 flips a 1/255 or 1e-4 threshold decision (bounded by ~1e-4 x feature magnitude). With
    ``device="cuda"`` also ``gsplat_fwd_bwd_ms_<N>``, ``gsplat_speedup_vs_cpu_<N>`` and
    ``max_abs_diff_gsplat_vs_cpu``.
    """
    from numba import get_num_threads

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench_rasterizer: device='cuda' but CUDA is not available")
    res: dict[str, Any] = {
        "width": width, "height": height, "features": features, "iters": iters, "ref_iters": ref_iters,
        "numba_threads": get_num_threads(), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    diffs, gdiffs = [], []
    steps = [(n, b) for n in n_list for b in (["cpu", "torch"] + (["gsplat"] if device == "cuda" else []))]
    bar = tqdm(steps, desc="bench rasterizer", disable=not progress)
    outs: dict[tuple[int, str], dict] = {}
    for n, backend in bar:
        bar.set_postfix(n=n, backend=backend)
        label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        scene = make_random_scene(n, width, height, n_features=features, seed=seed)
        dev = "cuda" if backend == "gsplat" else "cpu"
        reps = ref_iters if backend == "torch" else iters
        if backend != "torch":
            _fwd_bwd(scene, backend, dev)  # warm-up: numba cache load / CUDA context
        times = []
        for _ in range(max(reps, 1)):
            ms, out = _fwd_bwd(scene, backend, dev)
            times.append(ms)
        outs[(n, backend)] = out
        key = {"cpu": "fwd_bwd_ms", "torch": "torch_fwd_bwd_ms", "gsplat": "gsplat_fwd_bwd_ms"}[backend]
        res[f"{key}_{label}"] = float(np.median(times))
        if backend == "torch":
            res[f"cpu_speedup_vs_torch_{label}"] = res[f"torch_fwd_bwd_ms_{label}"] / res[f"fwd_bwd_ms_{label}"]
            d = _max_diff(outs[(n, "cpu")], out)
            res[f"max_abs_diff_vs_torch_{label}"] = d
            res[f"max_abs_diff_rgb_vs_torch_{label}"] = _max_diff(outs[(n, "cpu")], out, ("rgb",))
            diffs.append(d)
        if backend == "gsplat":
            res[f"gsplat_speedup_vs_cpu_{label}"] = res[f"fwd_bwd_ms_{label}"] / res[f"gsplat_fwd_bwd_ms_{label}"]
            d = _max_diff(outs[(n, "cpu")], out)
            res[f"max_abs_diff_gsplat_vs_cpu_{label}"] = d
            gdiffs.append(d)
    res["max_abs_diff_vs_torch"] = max(diffs) if diffs else float("nan")
    if gdiffs:
        res["max_abs_diff_gsplat_vs_cpu"] = max(gdiffs)
    return res
