"""GaussianTrainer: fitting a target image, densify/prune bookkeeping of Adam state, online growth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatting.bench import make_random_scene
from splatting.gaussians import GaussianModel
from splatting.losses import feature_loss
from splatting.rasterize import rasterization
from splatting.trainer import GaussianTrainer, TrainConfig, TrainView


@pytest.fixture(scope="module")
def target_view() -> tuple[TrainView, dict]:
    s = make_random_scene(150, 48, 36, seed=4, scale_range=(0.03, 0.08), opacity_range=(0.6, 0.95))
    with torch.no_grad():
        out = rasterization(
            s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"], s["K"], 48, 36,
            background=torch.zeros(3),
        )  # fmt: skip
    return TrainView(image=out.rgb, viewmat=s["viewmat"], K=s["K"], depth=out.depth * (out.alpha > 0.5)), s


def _init_model(scene: dict, query_dims=None) -> GaussianModel:
    g = torch.Generator().manual_seed(0)
    xyz = scene["means"][::2] + 0.03 * torch.randn(75, 3, generator=g)
    return GaussianModel.from_points(xyz, torch.full((75, 3), 0.5), sh_degree=1, query_dims=query_dims)


def _adam_consistent(tr: GaussianTrainer) -> None:
    params = tr.model.row_parameters()
    assert {g["name"] for g in tr.optimizer.param_groups} == set(params)
    for group in tr.optimizer.param_groups:
        p = group["params"][0]
        assert p is params[group["name"]]
        st = tr.optimizer.state.get(p)
        if st:
            assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    assert tr.grad_accum.shape[0] == tr.max_radii.shape[0] == len(tr.model)


def test_fits_a_target_image_with_densification(target_view):
    view, scene = target_view
    model = _init_model(scene)
    cfg = TrainConfig(
        densify_from=20, densify_every=20, densify_until=120, opacity_reset_every=0, sh_increase_every=50,
        depth_weight=0.1,
    )  # fmt: skip
    tr = GaussianTrainer(model, cfg)
    hist = tr.train([view], 150, progress=False)
    first = hist[0]
    last = {k: np.mean([h[k] for h in hist[-5:]]) for k in ("l1", "depth", "psnr")}
    assert last["l1"] < 0.5 * first["l1"], (first["l1"], last["l1"])
    assert last["depth"] < first["depth"]
    assert last["psnr"] > first["psnr"] + 4.0
    assert hist[-1]["n_gaussians"] > 75  # densification added Gaussians
    assert model.active_sh_degree == 1
    assert "depth" in hist[-1]
    _adam_consistent(tr)


def test_densify_and_prune_keep_optimizer_state_aligned(target_view):
    view, scene = target_view
    model = _init_model(scene, {"clip": 3})
    tr = GaussianTrainer(model, TrainConfig(densify_from=10_000, opacity_reset_every=0))
    for _ in range(3):
        tr.step(view)
    tr.config.densify_grad_threshold = 0.0  # every seen Gaussian qualifies
    means_before = model.means.detach().clone()
    state_before = tr.optimizer.state[model.means]["exp_avg"].clone()
    seen = tr.grad_count > 0
    big = model.scales.amax(dim=1) > tr.config.percent_dense * tr.scene_extent
    n_clone, n_split = int((seen & ~big).sum()), int((seen & big).sum())
    counts = tr.densify_and_prune()
    assert counts["cloned"] == n_clone and counts["split"] == n_split
    assert counts["cloned"] + counts["split"] > 0
    _adam_consistent(tr)
    # survivors that were neither split nor pruned keep their rows and Adam moments, in order
    kept = ~(seen & big)
    n_kept = int(kept.sum())
    if counts["pruned"] == 0:
        assert torch.equal(model.means.data[:n_kept], means_before[kept])
        assert torch.equal(tr.optimizer.state[model.means]["exp_avg"][:n_kept], state_before[kept])
    tr.step(view)  # the optimizer still runs after the rebuild
    _adam_consistent(tr)


def test_prune_and_extend_through_trainer(target_view):
    view, scene = target_view
    model = _init_model(scene, {"clip": 3})
    tr = GaussianTrainer(model, TrainConfig(densify_from=10_000, opacity_reset_every=0))
    tr.step(view)
    tr.step(view)
    avg = tr.optimizer.state[model.quats]["exp_avg"].clone()
    mask = torch.zeros(len(model), dtype=torch.bool)
    mask[::3] = True
    tr.prune(mask)
    assert torch.equal(tr.optimizer.state[model.quats]["exp_avg"], avg[~mask])
    n = len(model)
    tr.extend_from_points(np.random.rand(7, 3) + [0, 0, 2], np.random.rand(7, 3))
    assert len(model) == n + 7
    st = tr.optimizer.state[model.queries["clip"]]
    assert st["exp_avg"].shape == (n + 7, 3) and st["exp_avg"][n:].abs().max() == 0
    _adam_consistent(tr)
    tr.step(view)
    # edits behind the trainer's back get fresh optimizer state instead of a crash
    model.prune(torch.arange(len(model)) == 0)
    tr.step(view)
    _adam_consistent(tr)


def test_feature_queries_learn_through_extra_loss(target_view):
    view, scene = target_view
    model = _init_model(scene, {"clip": 4})
    target = torch.zeros(9, 12, 4)
    target[..., 0] = 1.0
    target[..., 2] = 0.5
    view = TrainView(view.image, view.viewmat, view.K, targets={"clip": target})

    def extra(out, v, m):
        feats = m.split_features(out.features)["clip"]
        loss, parts = feature_loss(feats, v.targets["clip"], n_samples=300, generator=torch.Generator().manual_seed(0))
        return 0.5 * loss, {"feat": parts["cos"] + parts["l2"]}

    tr = GaussianTrainer(model, TrainConfig(densify_from=10_000, opacity_reset_every=0, query_lr=5e-2))
    hist = tr.train([view], 40, progress=False, extra_loss=extra)
    assert hist[-1]["feat"] < 0.5 * hist[0]["feat"]
    assert model.queries["clip"].data.abs().max() > 0


def test_opacity_reset_caps_opacity_and_clears_moments(target_view):
    view, scene = target_view
    model = _init_model(scene)
    model.opacity_logits.data.fill_(2.0)
    tr = GaussianTrainer(model, TrainConfig(densify_from=10_000, opacity_reset_every=0))
    tr.step(view)
    tr.reset_opacity()
    assert float(model.opacities.detach().max()) <= 0.01 + 1e-6
    assert tr.optimizer.state[model.opacity_logits]["exp_avg"].abs().max() == 0


def test_trains_on_real_rgbd_frames_and_generalises_to_a_held_out_view(open3d_sample_frames):
    """Open3D's ICL-NUIM sample frames at 80x60: init from RGB-D, train on two, render the third."""
    import cv2

    from spatial_memory.types import Frame
    from splatting.losses import psnr

    small = []
    for f in open3d_sample_frames:
        rgb = cv2.resize(f.rgb, (80, 60), interpolation=cv2.INTER_AREA)
        dep = cv2.resize(f.depth, (80, 60), interpolation=cv2.INTER_NEAREST)
        small.append(Frame(f.stamp_ns, rgb, dep, f.intrinsics.scaled(80, 60), f.T_world_camera, index=f.index))
    model = GaussianModel.from_rgbd(small[:2], voxel_size=0.06, stride=1, sh_degree=1)
    held_out = TrainView.from_frame(small[2])
    tr = GaussianTrainer(model, TrainConfig(densify_from=10_000, opacity_reset_every=0, depth_weight=0.1))
    with torch.no_grad():
        before = psnr(tr.render(held_out).rgb, held_out.image)
    hist = tr.train(small[:2], 60, progress=False)
    with torch.no_grad():
        after = psnr(tr.render(held_out).rgb, held_out.image)
    assert hist[-1]["psnr"] > hist[0]["psnr"] + 5.0
    assert after > before + 5.0, (before, after)
