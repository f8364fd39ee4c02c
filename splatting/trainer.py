"""Optimise a :class:`GaussianModel` against posed images with the 3DGS recipe.

Schedule (3DGS defaults, iterations counted from 0 by the trainer):

- Adam, one parameter group per tensor: means 1.6e-4 * scene_extent decaying exponentially to
  1.6e-6 * scene_extent over ``position_lr_max_steps``; log_scales 5e-3; quats 1e-3; opacity
  logits 5e-2; SH DC 2.5e-3 and the higher SH bands 2.5e-3 / 20; queries ``query_lr``.
- The active SH degree grows by one every ``sh_increase_every`` steps up to the model's degree.
- Densification between ``densify_from`` and ``densify_until`` every ``densify_every`` steps:
  Gaussians whose mean view-space positional gradient (the 2D-mean gradient in NDC units,
  averaged over the views that saw them) is >= ``densify_grad_threshold`` are cloned when their
  largest scale is <= ``percent_dense * scene_extent`` and split in two otherwise. Then Gaussians
  with opacity < ``prune_opacity`` are pruned and, once the first opacity reset has happened,
  also those with a world scale > ``max_world_scale * scene_extent`` or a screen radius >
  ``max_screen_radius`` px.
- Every ``opacity_reset_every`` steps all opacities are clamped to <= 0.01.

Adam's moments follow every structural change (``Remap``): survivors keep their state, new
Gaussians start at zero.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from spatial_memory.errors import ConfigError, InvalidFrameError
from spatial_memory.types import Frame

from .gaussians import GaussianModel, Remap
from .losses import depth_l1_loss, psnr, rgb_loss
from .rasterize import RenderOutput, means2d_grad


@dataclass
class TrainView:
    """One training image on the model's device.

    image ``[H, W, 3]`` float in [0, 1]; viewmat ``[4, 4]`` world -> camera; K ``[3, 3]``;
    depth ``[H, W]`` metres (0/NaN invalid) or None; ``targets`` holds anything an extra loss
    needs (e.g. feature maps).
    """

    image: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor
    depth: torch.Tensor | None = None
    targets: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def camera_center(self) -> torch.Tensor:
        return -self.viewmat[:3, :3].T @ self.viewmat[:3, 3]

    @classmethod
    def from_frame(cls, frame: Frame, device: str | torch.device = "cpu") -> "TrainView":
        """Convert a posed :class:`Frame` (raises InvalidFrameError without a pose)."""
        if frame.T_world_camera is None:
            raise InvalidFrameError(f"frame {frame.index}: a training view needs T_world_camera")
        T = np.asarray(frame.T_world_camera, dtype=np.float64)
        viewmat = np.linalg.inv(T)
        depth = None if frame.depth is None else torch.from_numpy(np.nan_to_num(frame.depth.astype(np.float32)))
        return cls(
            image=torch.from_numpy(frame.rgb.astype(np.float32) / 255.0).to(device),
            viewmat=torch.from_numpy(viewmat).float().to(device),
            K=torch.from_numpy(frame.intrinsics.K).float().to(device),
            depth=None if depth is None else depth.to(device),
        )


@dataclass
class TrainConfig:
    """Hyper-parameters (see the module docstring for the schedule they drive)."""

    position_lr_init: float = 1.6e-4
    position_lr_final: float = 1.6e-6
    position_lr_max_steps: int = 30_000
    scaling_lr: float = 5e-3
    rotation_lr: float = 1e-3
    opacity_lr: float = 5e-2
    sh_lr: float = 2.5e-3
    sh_rest_lr_factor: float = 1.0 / 20.0
    query_lr: float = 2.5e-3
    query_lrs: dict[str, float] = field(default_factory=dict)  # per-query override
    lambda_dssim: float = 0.2
    depth_weight: float = 0.0
    sh_increase_every: int = 1000
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    max_screen_radius: float = 20.0
    max_world_scale: float = 0.1
    opacity_reset_every: int = 3000
    max_gaussians: int = 2_000_000
    scene_extent: float | None = None  # None: from the training cameras (3DGS: 1.1 x max distance to their centroid)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    render_features: bool = True
    backend: str = "auto"
    seed: int = 0

    def validate(self) -> "TrainConfig":
        positive = ("position_lr_init", "scaling_lr", "rotation_lr", "opacity_lr", "sh_lr", "densify_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.lambda_dssim <= 1.0:
            raise ConfigError(f"TrainConfig.lambda_dssim must be in [0, 1], got {self.lambda_dssim}")
        return self


ExtraLoss = Callable[[RenderOutput, TrainView, GaussianModel], tuple[torch.Tensor, dict]]


def camera_extent(viewmats: Sequence[torch.Tensor]) -> float:
    """3DGS scene radius: 1.1 x the largest distance of a camera centre to their centroid."""
    centers = torch.stack([-v[:3, :3].T @ v[:3, 3] for v in viewmats]).double()
    return 1.1 * float((centers - centers.mean(0)).norm(dim=1).max())


class GaussianTrainer:
    """Adam + 3DGS densification for one :class:`GaussianModel`.

    ``step(view)`` runs one iteration on one view and returns its losses; ``train(views, n)``
    loops over random views. Structural edits made elsewhere should go through
    :meth:`apply_remap` (or the ``extend_from_points`` / ``prune`` helpers) so Adam keeps its
    moments; parameters replaced behind the trainer's back get fresh optimizer state.
    """

    def __init__(self, model: GaussianModel, config: TrainConfig | None = None, scene_extent: float | None = None):
        self.model = model
        self.config = (config or TrainConfig()).validate()
        self.iteration = 0
        self._extent_fixed = scene_extent is not None or self.config.scene_extent is not None
        self.scene_extent = float(scene_extent or self.config.scene_extent or self._points_extent())
        self._rng = random.Random(self.config.seed)
        self._gen = torch.Generator().manual_seed(self.config.seed)
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=0.0, eps=1e-15)
        self._reset_stats()
        self._opacity_was_reset = False

    # ------------------------------------------------------------------ setup
    def _points_extent(self) -> float:
        m = self.model.means.detach()
        if len(m) < 2:
            return 1.0
        d = (m - m.mean(0)).norm(dim=1)
        return max(float(torch.quantile(d.double().cpu(), 0.9)), 1e-3)

    def _lr_for(self, name: str) -> float:
        c = self.config
        if name == "means":
            return self._position_lr()
        if name.startswith("query."):
            return c.query_lrs.get(name[len("query.") :], c.query_lr)
        return {
            "log_scales": c.scaling_lr,
            "quats": c.rotation_lr,
            "opacity_logits": c.opacity_lr,
            "sh_dc": c.sh_lr,
            "sh_rest": c.sh_lr * c.sh_rest_lr_factor,
        }[name]

    def _param_groups(self) -> list[dict]:
        return [{"params": [p], "name": n, "lr": self._lr_for(n)} for n, p in self.model.row_parameters().items()]

    def _position_lr(self) -> float:
        c = self.config
        t = min(self.iteration / max(c.position_lr_max_steps, 1), 1.0)
        lr = math.exp((1 - t) * math.log(c.position_lr_init) + t * math.log(c.position_lr_final))
        return lr * self.scene_extent

    def _reset_stats(self) -> None:
        n, dev = len(self.model), self.model.means.device
        self.grad_accum = torch.zeros(n, device=dev)
        self.grad_count = torch.zeros(n, device=dev)
        self.max_radii = torch.zeros(n, device=dev)

    def _sync_optimizer(self) -> None:
        """Give parameters that were replaced or added outside :meth:`apply_remap` a fresh group."""
        params = self.model.row_parameters()
        groups = {g["name"]: g for g in self.optimizer.param_groups}
        stale = [n for n, g in groups.items() if n not in params or g["params"][0] is not params[n]]
        if not stale and len(groups) == len(params):
            return
        for name, group in groups.items():
            if name in stale:
                self.optimizer.state.pop(group["params"][0], None)
        self.optimizer.param_groups = [g for n, g in groups.items() if n not in stale]
        for name, p in params.items():
            if name in stale or name not in groups:
                self.optimizer.add_param_group({"params": [p], "name": name, "lr": self._lr_for(name)})
        if self.grad_accum.shape[0] != len(self.model):
            self._reset_stats()

    # ------------------------------------------------------------------ structural edits
    def apply_remap(self, remap: Remap) -> None:
        """Carry Adam moments and densification statistics through a model edit already applied."""
        params = self.model.row_parameters()
        idx = remap.index.to(self.model.means.device)
        for group in self.optimizer.param_groups:
            old = group["params"][0]
            new = params.get(group["name"])
            if new is None:
                continue
            state = self.optimizer.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        kept = state[key][idx]
                        pad = torch.zeros((remap.n_new, *kept.shape[1:]), dtype=kept.dtype, device=kept.device)
                        state[key] = torch.cat([kept, pad], dim=0)
                self.optimizer.state[new] = state
            group["params"] = [new]
        self._sync_optimizer()
        for name in ("grad_accum", "grad_count", "max_radii"):
            t = getattr(self, name)[idx]
            setattr(self, name, torch.cat([t, torch.zeros(remap.n_new, device=t.device)]))

    def extend_from_points(self, xyz, rgb, init_opacity: float = 0.1, scales=None) -> Remap:
        """Append Gaussians (online mapping) keeping optimizer state of the existing ones."""
        remap = self.model.extend_from_points(xyz, rgb, init_opacity=init_opacity, scales=scales)
        self.apply_remap(remap)
        return remap

    def prune(self, mask: torch.Tensor) -> Remap:
        """Remove Gaussians where ``mask`` is True, keeping optimizer state of the rest."""
        remap = self.model.prune(mask)
        self.apply_remap(remap)
        return remap

    # ------------------------------------------------------------------ one iteration
    def render(self, view: TrainView) -> RenderOutput:
        bg = torch.tensor(self.config.background, dtype=torch.float32, device=view.image.device)
        return self.model.render(
            view.viewmat, view.K, view.width, view.height, background=bg,
            with_features=self.config.render_features, backend=self.config.backend,
        )  # fmt: skip

    def step(self, view: TrainView | Frame, extra_loss: ExtraLoss | None = None) -> dict[str, float]:
        """One optimisation step on one view; returns the loss terms, PSNR and the Gaussian count.

        ``extra_loss(render, view, model) -> (loss, parts)`` is added to the photometric loss
        (e.g. the M3 feature loss on ``render.features``).
        """
        if isinstance(view, Frame):
            view = TrainView.from_frame(view, self.model.means.device)
        if len(self.model) == 0:
            raise ConfigError("GaussianTrainer.step: the model has no Gaussians")
        self._sync_optimizer()
        c = self.config
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr_for(g["name"])
        if c.sh_increase_every > 0 and self.iteration > 0 and self.iteration % c.sh_increase_every == 0:
            self.model.active_sh_degree = min(self.model.active_sh_degree + 1, self.model.sh_degree)

        out = self.render(view)
        loss, parts = rgb_loss(out.rgb, view.image, c.lambda_dssim)
        if c.depth_weight > 0 and view.depth is not None:
            d = depth_l1_loss(out.depth, view.depth)
            loss = loss + c.depth_weight * d
            parts["depth"] = float(d.detach())
        if extra_loss is not None:
            e, eparts = extra_loss(out, view, self.model)
            loss = loss + e
            parts.update(eparts)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._accumulate_densify_stats(out)
        self.optimizer.step()
        self.iteration += 1
        self._maybe_densify()
        parts.update(loss=float(loss.detach()), psnr=psnr(out.rgb, view.image), n_gaussians=len(self.model))
        return parts

    @torch.no_grad()
    def _accumulate_densify_stats(self, out: RenderOutput) -> None:
        g2d = means2d_grad(out.meta)
        if g2d is None:
            return
        w, h = out.meta["width"], out.meta["height"]
        # pixel-space gradient -> NDC-space gradient (3DGS thresholds the NDC one)
        ndc = g2d * torch.tensor([w / 2.0, h / 2.0], device=g2d.device, dtype=g2d.dtype)
        vis = out.meta["visible"].to(self.grad_accum.device)
        self.grad_accum[vis] += ndc.norm(dim=1)[vis].to(self.grad_accum)
        self.grad_count[vis] += 1
        radii = out.meta["radii"].amax(dim=1).to(self.max_radii)
        self.max_radii = torch.maximum(self.max_radii, radii)

    @torch.no_grad()
    def _maybe_densify(self) -> None:
        c, it = self.config, self.iteration
        if it < c.densify_until:
            if it > c.densify_from and it % c.densify_every == 0:
                self.densify_and_prune()
            if c.opacity_reset_every > 0 and it % c.opacity_reset_every == 0:
                self.reset_opacity()

    @torch.no_grad()
    def densify_and_prune(self) -> dict[str, int]:
        """Clone/split high-gradient Gaussians, then prune; returns the counts."""
        c = self.config
        grads = self.grad_accum / self.grad_count.clamp_min(1)
        big = self.model.scales.amax(dim=1) > c.percent_dense * self.scene_extent
        selected = grads >= c.densify_grad_threshold
        room = c.max_gaussians - len(self.model)
        clone_mask = selected & ~big
        split_mask = selected & big
        if int(clone_mask.sum()) + int(split_mask.sum()) > room:  # keep the strongest within budget
            order = torch.argsort(grads * selected, descending=True)
            allowed = torch.zeros_like(selected)
            allowed[order[: max(room, 0)]] = True
            clone_mask &= allowed
            split_mask &= allowed
        n_clone, n_split = int(clone_mask.sum()), int(split_mask.sum())
        if n_clone:
            self.apply_remap(self.model.clone_gaussians(clone_mask))
            split_mask = torch.cat([split_mask, torch.zeros(n_clone, dtype=torch.bool, device=split_mask.device)])
        if n_split:
            self.apply_remap(self.model.split(split_mask, 2, self._gen))
        prune_mask = self.model.opacities < c.prune_opacity
        if self._opacity_was_reset:  # as in 3DGS, size-based pruning starts after the first reset
            prune_mask |= self.model.scales.amax(dim=1) > c.max_world_scale * self.scene_extent
            prune_mask |= self.max_radii > c.max_screen_radius
        if bool(prune_mask.all()):  # never empty the model
            prune_mask[torch.argmax(self.model.opacities)] = False
        n_prune = int(prune_mask.sum())
        if n_prune:
            self.apply_remap(self.model.prune(prune_mask))
        self._reset_stats()
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}

    @torch.no_grad()
    def reset_opacity(self, max_opacity: float = 0.01) -> None:
        """Clamp opacities to <= ``max_opacity`` and zero their Adam moments (3DGS opacity reset)."""
        p = self.model.opacity_logits
        cap = math.log(max_opacity / (1 - max_opacity))
        p.data.clamp_(max=cap)
        state = self.optimizer.state.get(p)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].zero_()
        self._opacity_was_reset = True

    # ------------------------------------------------------------------ loop
    def train(
        self,
        views: Sequence[TrainView | Frame],
        iterations: int,
        progress: bool = True,
        extra_loss: ExtraLoss | None = None,
    ) -> list[dict[str, float]]:
        """Run ``iterations`` steps on views drawn uniformly at random; returns per-step losses."""
        if not views:
            raise ConfigError("GaussianTrainer.train: no views")
        tv = [v if isinstance(v, TrainView) else TrainView.from_frame(v, self.model.means.device) for v in views]
        if not self._extent_fixed and len(tv) > 1:
            ext = camera_extent([v.viewmat for v in tv])
            if ext > 1e-3:
                self.scene_extent = ext
        history = []
        bar = tqdm(range(iterations), desc="train splats", disable=not progress)
        for _ in bar:
            parts = self.step(tv[self._rng.randrange(len(tv))], extra_loss)
            history.append(parts)
            bar.set_postfix(loss=f"{parts['loss']:.4f}", psnr=f"{parts['psnr']:.2f}", n=parts["n_gaussians"])
        return history
