"""The one public entry point for rendering 3D Gaussians: :func:`rasterization`.

Three interchangeable backends render the same image (see ``docs`` in each module):

- ``"cpu"``: numba kernels (:mod:`splatting.cpu_kernels`) with a hand-written backward pass;
- ``"gsplat"``: gsplat's CUDA rasterizer (CUDA tensors only);
- ``"torch"``: the dense PyTorch reference (``bench/torch_reference_rasterizer.py``), slow,
  differentiated by autograd; for tests and small scenes.

``"auto"`` picks gsplat for CUDA tensors when gsplat is usable, the CPU kernel otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from spatial_memory.errors import ConfigError

from .backends.cpu import rasterize_cpu
from .backends.gsplat_backend import gsplat_available, rasterize_gsplat

Backend = Literal["auto", "cpu", "gsplat", "torch"]
_BACKENDS = ("auto", "cpu", "gsplat", "torch")


@dataclass
class RenderOutput:
    """One rendered view.

    Attributes:
        rgb: ``[H, W, 3]`` composited colour plus ``(1 - alpha) * background``.
        depth: ``[H, W]`` expected camera z of the visible surface,
            ``sum_i w_i z_i / max(alpha, 1e-10)`` (normalised by alpha, like gsplat "ED");
            0 where nothing was rendered. Multiply by ``alpha`` for the un-normalised sum.
        alpha: ``[H, W]`` accumulated opacity ``sum_i w_i = 1 - T_final``.
        features: ``[H, W, F]`` composited per-Gaussian features (background 0) or None.
        meta: ``means2d`` (2D means as an autograd node with ``retain_grad``; after
            ``backward()`` use :func:`means2d_grad`), ``radii [N, 2]`` (0 = culled),
            ``visible [N] bool``, ``n_visible``, ``depths [N]`` camera z, ``backend``,
            ``width``, ``height``.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    features: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)


def means2d_grad(meta: dict[str, Any]) -> torch.Tensor | None:
    """Gradient of the loss w.r.t. the projected 2D means, ``[N, 2]`` in pixels (None before backward)."""
    g = meta["means2d"].grad
    return None if g is None else g.reshape(-1, 2)


def _check(name: str, t: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"rasterization: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"rasterization: {name} must have shape {want}, got {list(t.shape)}")


def _torch_reference():
    """The reference rasterizer lives in the repository's ``bench`` package (imported on demand)."""
    try:
        from bench.torch_reference_rasterizer import rasterize_torch
    except ImportError as e:
        raise ConfigError(f"backend 'torch' needs the repository's bench/ package on sys.path: {e}") from None
    return rasterize_torch


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in _BACKENDS:
        raise ConfigError(f"rasterization: backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "cpu"
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_available()):
        raise ConfigError("rasterization: backend 'gsplat' needs CUDA tensors and an importable gsplat")
    return backend


def rasterization(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    features: torch.Tensor | None = None,
    near: float = 0.01,
    far: float = 100.0,
    background: torch.Tensor | None = None,
    backend: Backend = "auto",
    tile_size: int = 16,
) -> RenderOutput:
    """Render N 3D Gaussians into one pinhole view, differentiably.

    Args:
        means: ``[N, 3]`` world positions.
        quats: ``[N, 4]`` rotations, (w, x, y, z), need not be normalised.
        scales: ``[N, 3]`` standard deviations along the local axes (linear, not log).
        opacities: ``[N]`` in [0, 1].
        colors: ``[N, 3]`` RGB (already evaluated, e.g. with :func:`splatting.gaussians.eval_sh`).
        viewmat: ``[4, 4]`` world -> camera (OpenCV optical frame), i.e. ``inv(T_world_camera)``.
        K: ``[3, 3]`` pinhole intrinsics; pixel (row i, col j) is centred at (u=j, v=i).
        width, height: image size in pixels.
        features: optional ``[N, F]`` per-Gaussian features composited like colour.
        near, far: Gaussians whose camera z is outside [near, far] are culled.
        background: optional ``[3]`` colour added with weight ``1 - alpha``.
        backend: "auto" | "cpu" | "gsplat" | "torch".
        tile_size: tile edge in pixels (binning granularity; does not change the image).

    Returns:
        :class:`RenderOutput`; gradients flow to means, quats, scales, opacities, colors, features.

    Raises:
        ValueError: a tensor has the wrong shape. ConfigError: unknown/unavailable backend or bad size.
    """
    _check("means", means, (None, 3))
    n = means.shape[0]
    _check("quats", quats, (n, 4))
    _check("scales", scales, (n, 3))
    _check("opacities", opacities, (n,))
    _check("colors", colors, (n, 3))
    _check("viewmat", viewmat, (4, 4))
    _check("K", K, (3, 3))
    if features is not None:
        _check("features", features, (n, None))
    if int(width) <= 0 or int(height) <= 0 or int(tile_size) <= 0:
        raise ConfigError(f"rasterization: width/height/tile_size must be positive, got {width}x{height}/{tile_size}")
    if not (0.0 < near < far):
        raise ConfigError(f"rasterization: need 0 < near < far, got near={near}, far={far}")
    chosen = _resolve_backend(backend, means.device)
    n_feat = 0 if features is None else features.shape[1]
    chans = colors if features is None else torch.cat([colors, features.to(colors.dtype)], dim=1)
    args = (means, quats, scales, opacities, chans, viewmat.to(means.dtype), K.to(means.dtype))
    args = args + (int(width), int(height), float(near), float(far), int(tile_size))
    if chosen == "cpu":
        out, depth_acc, alpha, meta = rasterize_cpu(*args)
        depth = depth_acc / alpha.clamp_min(1e-10)
    elif chosen == "torch":
        rasterize_torch = _torch_reference()
        out, depth_acc, alpha, meta = rasterize_torch(*args[:-1], block=int(tile_size))
        depth = depth_acc / alpha.clamp_min(1e-10)
    else:
        out, depth, alpha, meta = rasterize_gsplat(*args)
    if meta["means2d"].requires_grad:
        meta["means2d"].retain_grad()
    rgb = out[..., :3]
    if background is not None:
        bg = background.to(device=rgb.device, dtype=rgb.dtype).reshape(3)
        rgb = rgb + (1.0 - alpha)[..., None] * bg
    meta.update(
        backend=chosen, n_visible=int(meta["visible"].sum()), width=int(width), height=int(height)
    )
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha, features=out[..., 3:] if n_feat else None, meta=meta)
