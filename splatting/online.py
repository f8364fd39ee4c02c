"""Online Gaussian-splat mapping: posed RGB-D frames arrive one at a time, the map is always usable.

M3 trains offline for thousands of iterations after the whole video is seen. A robot needs
the map while it drives, so this mapper follows the incremental recipe of splat SLAM systems
(SplaTAM, MonoGS) with known poses:

1. **Keyframe selection**: a frame becomes a keyframe when the camera moved more than a
   translation or rotation threshold since the last keyframe (or when too little of it is
   covered by the current map).
2. **Growth**: the keyframe is rendered from the current map; pixels where the map is
   empty (alpha below a threshold) or wrong (new surface in front of the rendered one by more
   than a depth margin) are back-projected, voxel-filtered and added as new Gaussians.
3. **Local optimisation**: a few iterations over a window of the most recent keyframes plus
   random older ones (against forgetting), with RGB (0.8 L1 + 0.2 (1 - SSIM)), depth L1 and
   per-model feature losses on rendered query vectors decoded by the caller's decoders.
4. **Maintenance**: every few keyframes, Gaussians with high view-space gradient are cloned
   or split (3DGS adaptive density control) and transparent or huge ones are pruned.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from spatial_memory.errors import ConfigError, InvalidFrameError
from spatial_memory.geometry import invert_pose
from spatial_memory.types import CameraIntrinsics, Frame, backproject_depth

from .gaussians import GaussianModel
from .losses import depth_l1_loss, rgb_loss
from .rasterize import RenderOutput, means2d_grad

log = logging.getLogger(__name__)


@dataclass
class MapperConfig:
    """Online mapping settings (units: metres, degrees, pixels, iterations)."""

    keyframe_translation_m: float = 0.15
    keyframe_rotation_deg: float = 12.0
    keyframe_min_uncovered: float = 0.15  # also a keyframe when this fraction of pixels is unmapped
    voxel_size_m: float = 0.03
    add_stride: int = 2
    add_alpha_threshold: float = 0.5
    add_depth_error_m: float = 0.08
    min_depth_m: float = 0.1
    max_depth_m: float = 8.0
    init_opacity: float = 0.7
    sh_degree: int = 0  # view-dependent colour costs time per render; a robot map is mostly diffuse
    iters_per_keyframe: int = 6
    keyframe_budget_s: float | None = None  # stop optimising early so a keyframe takes about this long
    window_recent: int = 2
    window_random: int = 1
    train_downscale: int = 2
    lambda_depth: float = 0.2
    lambda_feature: float = 0.5
    feature_pixels: int = 2000
    lr_means: float = 2e-4
    lr_log_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_color: float = 5e-3  # SH DC; higher bands use lr_color / 20 like 3DGS
    lr_queries: float = 2e-2
    lr_decoders: float = 2e-3
    maintain_every: int = 4
    densify_grad_threshold: float = 2e-4
    densify_max_new_fraction: float = 0.05
    prune_opacity: float = 0.02
    prune_max_scale_m: float = 0.4
    query_init_std: float = 0.1
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("keyframe_translation_m", "keyframe_rotation_deg", "voxel_size_m", "max_depth_m"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"MapperConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("add_stride", "train_downscale", "maintain_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MapperConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.iters_per_keyframe < 0 or self.window_recent < 1 or self.window_random < 0:
            raise ConfigError("MapperConfig: iters_per_keyframe >= 0, window_recent >= 1, window_random >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MapperConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"MapperConfig: unknown keys {sorted(unknown)}")
        return cls(**dict(d))


@dataclass
class Keyframe:
    """A stored training view at the training resolution (``h = H / train_downscale``)."""

    index: int
    T_world_camera: np.ndarray  # [4, 4]
    intrinsics: CameraIntrinsics  # full resolution
    rgb: torch.Tensor  # [h, w, 3] float in [0, 1]
    depth: torch.Tensor  # [h, w] metres, 0 = invalid
    features: dict[str, Any] = field(default_factory=dict)  # name -> FeatureMap (full-res pixel coords)


@dataclass
class IntegrationInfo:
    """What one :meth:`OnlineMapper.integrate` call did."""

    added: int
    pruned: int
    densified: int
    iterations: int
    loss: float
    seconds: float
    timings: dict[str, float]


def pose_delta(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """Translation (m) and rotation angle (deg) between two camera poses ``[4, 4]``."""
    d = invert_pose(T_a) @ T_b
    cos = np.clip((np.trace(d[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(d[:3, 3])), float(np.degrees(np.arccos(cos)))


def voxel_filter(points: np.ndarray, voxel: float) -> np.ndarray:
    """Index of the first point in each occupied voxel: ``points [N, 3]`` -> ``[M] int64``."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    keys = np.floor(points / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def _train_view(K: np.ndarray, ds: int) -> np.ndarray:
    """Intrinsics ``[3, 3]`` of an image downsampled ``ds`` times (pixel-centre convention)."""
    Kd = K.copy()
    Kd[0, 0] /= ds
    Kd[1, 1] /= ds
    Kd[0, 2] = (K[0, 2] + 0.5) / ds - 0.5
    Kd[1, 2] = (K[1, 2] + 0.5) / ds - 0.5
    return Kd


def _strided_view(K: np.ndarray, s: int) -> np.ndarray:
    """Intrinsics ``[3, 3]`` of the pixel subset ``img[::s, ::s]`` (pixel j is original pixel j s)."""
    Ks = K.copy()
    Ks[:2] /= s
    Ks[2] = K[2]
    return Ks


def _downsample(img: np.ndarray, ds: int, depth: bool = False) -> np.ndarray:
    """Box-downsample ``[H, W, C]`` (colour) or nearest-pick ``[H, W]`` (depth: averaging edges invents surfaces)."""
    if ds == 1:
        return img
    H, W = img.shape[:2]
    h, w = H // ds, W // ds
    if depth:
        return img[ds // 2 : h * ds : ds, ds // 2 : w * ds : ds]
    return img[: h * ds, : w * ds].reshape(h, ds, w, ds, -1).mean(axis=(1, 3))


class OnlineMapper:
    """Incremental 3DGS mapping from posed RGB-D frames with known poses.

    Args:
        config: :class:`MapperConfig`.
        query_dims: floats per Gaussian of each feature model (``{name: d}``); the queries
            are rendered like colour and supervised through ``decoders``.
        decoders: ``{name: module}`` mapping rendered queries ``[P, d]`` to features ``[P, D]``
            (M3's memory attention); trainable parameters of a decoder are optimised too.
    """

    def __init__(self, config: MapperConfig | None = None, query_dims: Mapping[str, int] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None) -> None:
        self.config = config or MapperConfig()
        self.query_dims = dict(query_dims or {})
        self.decoders = dict(decoders or {})
        unknown = set(self.decoders) - set(self.query_dims)
        if unknown:
            raise ConfigError(f"OnlineMapper: decoders {sorted(unknown)} have no query_dims entry")
        self.model: GaussianModel | None = None
        self.keyframes: list[Keyframe] = []
        self.version = 0  # bumped whenever the Gaussians change
        self.n_frames = 0
        self.total_added = 0
        self.total_pruned = 0
        self.total_densified = 0
        self._rng = np.random.default_rng(self.config.seed)
        self._torch_rng = torch.Generator().manual_seed(self.config.seed)
        self._last_T: np.ndarray | None = None
        self.last_iterations = 0

    # ------------------------------------------------------------------ queries of the map
    @property
    def num_gaussians(self) -> int:
        return 0 if self.model is None else int(self.model.means.shape[0])

    def set_model(self, model: GaussianModel) -> None:
        """Replace the map (e.g. one loaded from disk); keyframes are not part of a saved map."""
        have = model.query_dims()
        for name, d in self.query_dims.items():
            if have.get(name) != d:
                raise ConfigError(f"OnlineMapper.set_model: model lacks a [N, {d}] query {name!r} (has {have})")
        self.model = model
        self.version += 1

    def render(self, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray, with_queries: bool = True,
               backend: str | None = None) -> RenderOutput:
        """Render the map at a pose; ``features`` holds the concatenated queries (see :meth:`split_queries`)."""
        if self.model is None:
            raise ConfigError("OnlineMapper.render: the map is empty")
        K = torch.from_numpy(intrinsics.K).float()
        with torch.no_grad():
            return self._render(K, T_world_camera, intrinsics.width, intrinsics.height, with_queries, backend)

    def _render(self, K: torch.Tensor, T_world_camera: np.ndarray, width: int, height: int,
                with_queries: bool, backend: str | None = None) -> RenderOutput:
        viewmat = torch.from_numpy(invert_pose(np.asarray(T_world_camera, np.float64))).float()
        return self.model.render(
            viewmat, K, width, height, with_features=with_queries and bool(self.query_dims),
            backend=backend or self.config.backend, near=self.config.min_depth_m * 0.5, far=self.config.max_depth_m * 2.0,
        )

    def split_queries(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split rendered ``[..., sum d]`` query channels into ``{name: [..., d]}``."""
        return self.model.split_features(features)

    # ------------------------------------------------------------------ keyframe selection
    def is_keyframe(self, frame: Frame) -> tuple[bool, str]:
        """Decide whether a posed frame becomes a keyframe (motion since the last one)."""
        if self._last_T is None:
            return True, "first keyframe"
        dt, dr = pose_delta(self._last_T, frame.T_world_camera)
        if dt >= self.config.keyframe_translation_m:
            return True, f"moved {dt:.2f} m"
        if dr >= self.config.keyframe_rotation_deg:
            return True, f"turned {dr:.1f} deg"
        if self.config.keyframe_min_uncovered < 1.0 and self.num_gaussians:
            uncovered = self.uncovered_fraction(frame)
            if uncovered >= self.config.keyframe_min_uncovered:
                return True, f"{100 * uncovered:.0f}% of the view is unmapped"
        return False, f"moved only {dt:.2f} m / {dr:.1f} deg"

    def uncovered_fraction(self, frame: Frame, downscale: int = 8) -> float:
        """Fraction of valid-depth pixels the map leaves (nearly) transparent, from a coarse render."""
        ds = max(1, int(downscale))
        depth = _downsample(np.nan_to_num(frame.depth, nan=0.0), ds, depth=True)
        valid = (depth >= self.config.min_depth_m) & (depth <= self.config.max_depth_m)
        if not valid.any():
            return 0.0
        K = torch.from_numpy(_train_view(frame.intrinsics.K, ds)).float()
        with torch.no_grad():
            out = self._render(K, frame.T_world_camera, depth.shape[1], depth.shape[0], with_queries=False)
        alpha = out.alpha.numpy()
        return float((alpha[valid] < self.config.add_alpha_threshold).mean())

    # ------------------------------------------------------------------ integration
    def integrate(self, frame: Frame, feature_maps: Mapping[str, Any] | None = None) -> IntegrationInfo:
        """Add a keyframe: grow the map where it is empty or wrong, then optimise locally.

        Args:
            frame: posed RGB-D frame (validated; pose and depth required).
            feature_maps: ``{name: FeatureMap}`` targets for the query losses (may be partial).

        Raises:
            InvalidFrameError: no pose or no depth.
        """
        if frame.T_world_camera is None or frame.depth is None:
            raise InvalidFrameError(f"frame {frame.index}: online mapping needs a pose and depth")
        t0 = time.perf_counter()
        cfg = self.config
        timings: dict[str, float] = {}
        self.n_frames += 1
        kf = self._make_keyframe(frame, feature_maps or {})
        t = time.perf_counter()
        added = self._grow(frame)
        timings["grow"] = time.perf_counter() - t
        self.keyframes.append(kf)
        self._last_T = np.array(frame.T_world_camera)
        t = time.perf_counter()
        deadline = None if cfg.keyframe_budget_s is None else t0 + cfg.keyframe_budget_s
        loss, grad_acc, grad_cnt = self._optimise(cfg.iters_per_keyframe, deadline)
        timings["optimise"] = time.perf_counter() - t
        pruned = densified = 0
        if len(self.keyframes) % cfg.maintain_every == 0 and self.num_gaussians:
            t = time.perf_counter()
            densified = self._densify(grad_acc, grad_cnt)
            pruned = self._prune()
            timings["maintain"] = time.perf_counter() - t
        self.version += 1
        self.total_added += added
        self.total_pruned += pruned
        self.total_densified += densified
        info = IntegrationInfo(added, pruned, densified, self.last_iterations, loss, time.perf_counter() - t0, timings)
        log.debug("keyframe %d: %s", len(self.keyframes), info)
        return info

    def _make_keyframe(self, frame: Frame, feature_maps: Mapping[str, Any]) -> Keyframe:
        ds = self.config.train_downscale
        rgb = _downsample(frame.rgb.astype(np.float32) / 255.0, ds)
        depth = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0).astype(np.float32)
        depth = np.where((depth >= self.config.min_depth_m) & (depth <= self.config.max_depth_m), depth, 0.0)
        depth = _downsample(depth, ds, depth=True)
        return Keyframe(len(self.keyframes), np.array(frame.T_world_camera), frame.intrinsics,
                        torch.from_numpy(np.ascontiguousarray(rgb, np.float32)),
                        torch.from_numpy(np.ascontiguousarray(depth, np.float32)),
                        {k: v for k, v in feature_maps.items() if k in self.query_dims})

    def _grow(self, frame: Frame) -> int:
        """Back-project pixels the map does not explain (empty or behind the true surface)."""
        cfg = self.config
        s = cfg.add_stride
        depth = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0)
        depth = np.where((depth >= cfg.min_depth_m) & (depth <= cfg.max_depth_m), depth, 0.0).astype(np.float32)
        sub = depth[::s, ::s]
        need = sub > 0
        if self.model is not None and self.num_gaussians:
            Ks = _strided_view(frame.intrinsics.K, s)
            out = self._render(torch.from_numpy(Ks).float(), frame.T_world_camera, sub.shape[1], sub.shape[0], False)
            alpha = out.alpha.detach().numpy()
            rdepth = out.depth.detach().numpy()
            wrong = rdepth - sub > cfg.add_depth_error_m
            need &= (alpha < cfg.add_alpha_threshold) | wrong
        masked = np.where(need, sub, 0.0).astype(np.float32)
        intr_s = CameraIntrinsics.from_K(_strided_view(frame.intrinsics.K, s), sub.shape[1], sub.shape[0])
        pts, vu = backproject_depth(masked, intr_s, frame.T_world_camera)
        if len(pts) == 0:
            return 0
        keep = voxel_filter(pts, cfg.voxel_size_m)
        pts, vu = pts[keep], vu[keep]
        z = masked[vu[:, 0], vu[:, 1]]
        rgb = frame.rgb[::s, ::s][vu[:, 0], vu[:, 1]].astype(np.float32) / 255.0
        # A Gaussian's initial size is its pixel footprint at the sampling stride, capped by the voxel.
        scale = np.minimum(z / intr_s.fx, cfg.voxel_size_m)
        self._append(pts, rgb, scale)
        return int(len(pts))

    def _append(self, pts: np.ndarray, rgb: np.ndarray, scale: np.ndarray) -> None:
        cfg = self.config
        n = len(pts)
        if self.model is None:
            self.model = GaussianModel.from_points(pts, rgb, sh_degree=cfg.sh_degree, query_dims=self.query_dims,
                                                   init_opacity=cfg.init_opacity, scales=scale)
        else:
            self.model.extend_from_points(pts, rgb, init_opacity=cfg.init_opacity, scales=scale)
        # Queries start small and random, not zero: a zero query has no direction after q W,
        # so the normalised attention logits would be undefined there.
        with torch.no_grad():
            for name, d in self.query_dims.items():
                self.model.queries[name][-n:] = torch.randn(n, d, generator=self._torch_rng) * cfg.query_init_std

    def _window(self) -> list[Keyframe]:
        """Newest keyframe first, then the other recent ones, then random older ones."""
        cfg = self.config
        recent = self.keyframes[-cfg.window_recent :][::-1]
        older = self.keyframes[: -cfg.window_recent]
        if older and cfg.window_random:
            pick = self._rng.choice(len(older), size=min(cfg.window_random, len(older)), replace=False)
            recent = recent + [older[i] for i in sorted(pick)]
        return recent

    def _optimiser(self) -> torch.optim.Optimizer:
        """A fresh Adam per keyframe: the Gaussian set changes between keyframes, and with
        few iterations per keyframe stale moments from another view set would only add lag."""
        cfg = self.config
        m = self.model
        groups = [
            {"params": [m.means], "lr": cfg.lr_means},
            {"params": [m.log_scales], "lr": cfg.lr_log_scales},
            {"params": [m.quats], "lr": cfg.lr_quats},
            {"params": [m.opacity_logits], "lr": cfg.lr_opacity},
            {"params": [m.sh_dc], "lr": cfg.lr_color},
        ]
        if m.sh_rest.shape[1]:
            groups.append({"params": [m.sh_rest], "lr": cfg.lr_color / 20.0})
        if self.query_dims:
            groups.append({"params": [m.queries[n] for n in self.query_dims], "lr": cfg.lr_queries})
        dec = [p for d in self.decoders.values() for p in d.parameters() if p.requires_grad]
        if dec:
            groups.append({"params": dec, "lr": cfg.lr_decoders})
        return torch.optim.Adam(groups, eps=1e-15)

    def view_loss(self, kf: Keyframe, out: RenderOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """RGB + depth + feature-query loss of one rendered keyframe view."""
        cfg = self.config
        parts: dict[str, float] = {}
        loss, _ = rgb_loss(out.rgb, kf.rgb)
        parts["rgb"] = float(loss.detach())
        if cfg.lambda_depth > 0 and bool((kf.depth > 0).any()):
            # Un-normalised depth (alpha * z) so holes in the map are penalised too.
            dl = depth_l1_loss(out.depth, kf.depth, alpha=out.alpha)
            loss = loss + cfg.lambda_depth * dl
            parts["depth"] = float(dl.detach())
        if cfg.lambda_feature > 0 and out.features is not None and kf.features:
            fl = self._feature_loss(kf, out.features, out.alpha.detach())
            if fl is not None:
                loss = loss + cfg.lambda_feature * fl
                parts["feature"] = float(fl.detach())
        return loss, parts

    def _feature_loss(self, kf: Keyframe, rendered: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor | None:
        from spatial_memory.m3.attention import feature_loss  # decoder-side loss; no import cycle at module load

        h, w = rendered.shape[:2]
        P = min(self.config.feature_pixels, h * w)
        idx = torch.randperm(h * w, generator=self._torch_rng)[:P]
        vt, ut = idx // w, idx % w
        ds = self.config.train_downscale
        uv_full = torch.stack([(ut.float() + 0.5) * ds - 0.5, (vt.float() + 0.5) * ds - 0.5], dim=1)
        # Only where the map has a surface: a query rendered into empty space is 0 and says nothing.
        covered = alpha[vt, ut] > 0.5
        vt, ut, uv_full = vt[covered], ut[covered], uv_full[covered]
        queries = self.split_queries(rendered[vt, ut])
        total = None
        for name, fmap in kf.features.items():
            dec = self.decoders.get(name)
            if dec is None or getattr(dec, "bank_size", 1) == 0:
                continue
            target, valid = fmap.sample(uv_full, kf.intrinsics.shape)
            if not bool(valid.any()):
                continue
            term = feature_loss(dec(queries[name][valid]), target[valid])
            total = term if total is None else total + term
        return total

    def refine(self, iters: int) -> float:
        """Extra optimisation over the keyframe window (e.g. while the robot is idle); returns the last loss."""
        loss, _, _ = self._optimise(int(iters))
        if iters > 0 and self.model is not None:
            self.version += 1
        return loss

    def _optimise(self, iters: int, deadline: float | None = None) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
        """Up to ``iters`` Adam steps over the keyframe window; with a ``deadline`` (perf_counter
        time) at least one step, then only steps expected to finish before it."""
        self.last_iterations = 0
        if self.model is None or iters == 0 or not self.keyframes:
            return 0.0, None, None
        cfg = self.config
        opt = self._optimiser()
        n = self.num_gaussians
        grad_acc = torch.zeros(n)
        grad_cnt = torch.zeros(n)
        last = 0.0
        ds = cfg.train_downscale
        window = self._window()
        for it in range(iters):
            t_it = time.perf_counter()
            kf = window[it % len(window)]
            h, w = kf.rgb.shape[:2]
            K = torch.from_numpy(_train_view(kf.intrinsics.K, ds)).float()
            out = self._render(K, kf.T_world_camera, w, h, with_queries=bool(self.query_dims))
            loss, _ = self.view_loss(kf, out)
            if not bool(torch.isfinite(loss)):
                log.warning("online mapping: non-finite loss on keyframe %d, step skipped", kf.index)
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            g = means2d_grad(out.meta)
            if g is not None:
                vis = out.meta["visible"]
                # Gradients are in training-resolution pixels; express them at full resolution
                # so the 3DGS threshold keeps its meaning whatever the downscale.
                grad_acc[vis] += g[vis].norm(dim=-1) / ds
                grad_cnt[vis] += 1
            opt.step()
            with torch.no_grad():
                self.model.log_scales.clamp_(max=math.log(cfg.prune_max_scale_m))
            last = float(loss.detach())
            self.last_iterations += 1
            now = time.perf_counter()
            if deadline is not None and now + (now - t_it) > deadline:
                break
        return last, grad_acc, grad_cnt

    def _densify(self, grad_acc: torch.Tensor | None, grad_cnt: torch.Tensor | None) -> int:
        """3DGS adaptive density control: clone small / split large high-gradient Gaussians."""
        if grad_acc is None or grad_acc.shape[0] != self.num_gaussians:
            return 0
        cfg = self.config
        avg = grad_acc / grad_cnt.clamp_min(1)
        hot = avg > cfg.densify_grad_threshold
        cap = max(1, int(cfg.densify_max_new_fraction * self.num_gaussians))
        if int(hot.sum()) > cap:
            thr = torch.topk(avg, cap).values[-1]
            hot &= avg >= thr
        if not bool(hot.any()):
            return 0
        # Small Gaussians in under-reconstructed areas are cloned, large ones split (3DGS).
        big = torch.exp(self.model.log_scales.detach()).max(dim=1).values > cfg.voxel_size_m
        n = int(hot.sum())
        clone = hot & ~big
        if bool(clone.any()):
            self.model.clone_gaussians(clone)
        split = torch.cat([hot & big, torch.zeros(self.num_gaussians - hot.shape[0], dtype=torch.bool)])
        if bool(split.any()):
            self.model.split(split, n_split=2, generator=self._torch_rng)
        return n

    def _prune(self) -> int:
        cfg = self.config
        m = self.model
        with torch.no_grad():
            bad = (torch.sigmoid(m.opacity_logits) < cfg.prune_opacity) | (
                torch.exp(m.log_scales).max(dim=1).values > cfg.prune_max_scale_m
            )
        n_bad = int(bad.sum())
        if n_bad:
            m.prune(bad)
        return n_bad

    def stats(self) -> dict[str, Any]:
        return {
            "gaussians": self.num_gaussians,
            "keyframes": len(self.keyframes),
            "frames_integrated": self.n_frames,
            "added": self.total_added,
            "pruned": self.total_pruned,
            "densified": self.total_densified,
        }
