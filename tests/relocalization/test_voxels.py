"""Landmark voxel fields: rendering maths and batched training."""

from __future__ import annotations

import numpy as np
import torch

from relocalization.voxels import (
    TrainingData, VoxelConfig, composite, hat, ray_box, ray_geometry, select_landmarks, train_fields,
)


def test_hat_weights_partition_unity():
    x = torch.linspace(-1, 1, 41)
    w = hat(x)
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, atol=1e-6)
    assert torch.allclose(hat(torch.tensor([0.0])), torch.tensor([[0.0, 1.0, 0.0]]))


def test_ray_box_entry_exit():
    o = torch.tensor([[-5.0, 0.0, 0.0], [-5.0, 3.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t0, t1 = ray_box(o, d)
    assert abs(float(t0[0]) - 4.0) < 1e-6 and abs(float(t1[0]) - 6.0) < 1e-6
    assert float(t1[1]) <= float(t0[1])  # misses the cube


def test_opaque_field_renders_the_front_face():
    """Very high density: the ray stops at the entry face, whose (trilinear) value is rendered."""
    o = torch.tensor([[[-4.0, 0.0, 0.0]]])
    d = torch.tensor([[[1.0, 0.0, 0.0]]])
    W, interval, hit = ray_geometry(o, d, 64)
    A, acc = composite(W, interval, hit, torch.full((1, 27), 50.0), shift=-4.6)
    assert float(acc) > 0.999
    feats = torch.zeros(1, 27, 2)
    feats[0, :9, 0] = 1.0  # nodes with ix = 0 (the x = -1 face) carry channel 0
    feats[0, 9:, 1] = 1.0
    out = torch.bmm(A, feats)[0, 0]
    assert out[0] > 0.9 and out[1] < 0.1
    # Empty field: nothing accumulates and the background (0) shows.
    A0, acc0 = composite(W, interval, hit, torch.full((1, 27), -50.0), shift=-4.6)
    assert float(acc0) < 1e-6 and float(A0.abs().sum()) < 1e-6


def _view_dependent_data(L: int = 6, obs: int = 10, P: int = 3, C: int = 8, seed: int = 0) -> TrainingData:
    """Landmarks seen from -x with descriptor ``a`` and from +x with descriptor ``b``."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-1, 1, (L, 3))
    a = np.zeros(C, np.float32)
    a[0] = 1
    b = np.zeros(C, np.float32)
    b[1] = 1
    origins, dirmats, xy, patches = [], [], [], []
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    for l in range(L):
        for k in range(obs):
            side = -1.0 if k % 2 == 0 else 1.0
            eye = centers[l] + np.array([2.0 * side, rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)])
            fwd = centers[l] - eye
            fwd /= np.linalg.norm(fwd)
            x = np.cross(fwd, [0, 0, 1.0])
            x /= np.linalg.norm(x)
            R = np.stack([x, np.cross(fwd, x), fwd], 1)
            origins.append(eye)
            dirmats.append(R @ np.linalg.inv(K))
            xy.append([50.0, 50.0])
            patches.append(np.tile(a if side < 0 else b, (P * P, 1)))
    count = np.full(L, obs)
    return TrainingData(centers, np.full(L, 0.05), np.arange(L) * obs, count, np.array(origins),
                        np.array(dirmats), np.array(xy), np.array(patches, np.float16), P)


def test_batched_training_learns_view_dependent_descriptors(few_threads):
    data = _view_dependent_data()
    init = np.full((6, 8), 1 / np.sqrt(8), np.float32)  # uninformative start
    cfg = VoxelConfig(iterations=150, rays_per_landmark=32, chunk_landmarks=4)  # two chunks
    fields, stats = train_fields(data, init, cfg, progress=False)
    assert stats["loss_last"] < 0.5 * stats["loss_first"]
    assert stats["landmarks_per_s"] > 0
    assert (fields.fit_cos > 0.9).all()
    # Rendered from each side, every landmark shows that side's descriptor.
    left = fields.render(fields.centers + np.array([-2.0, 0, 0]))
    right = fields.render(fields.centers + np.array([2.0, 0, 0]))
    assert (left[:, 0] > left[:, 1]).all() and (right[:, 1] > right[:, 0]).all()
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-5)


def test_select_landmarks_threshold_and_budget():
    fit = np.array([0.95, 0.5, 0.9, 0.99, 0.97])
    n = np.array([10, 50, 10, 6, 12])
    assert select_landmarks(fit, n, 0.8, 10).tolist() == [0, 2, 3, 4]
    assert select_landmarks(fit, n, 0.8, 2).tolist() == [0, 4]  # most observed, then best fit


def test_map_fields_fit_real_patches(favor_map):
    """On ICL, the trained fields render descriptors close to the stored observation patches."""
    assert favor_map.stats["loss_last"] < favor_map.stats["loss_first"]
    assert np.median(favor_map.fields.fit_cos) > 0.9
    assert (favor_map.fields.fit_cos >= favor_map.config.voxel.fit_min_cos).all()


def test_inference_renderer_equals_the_training_renderer():
    """``VoxelFields.render`` (numba, one centre ray each) == ray_weights + A @ F (torch)."""
    from relocalization.voxels import VoxelFields, ray_weights

    rng = np.random.default_rng(3)
    L, C = 50, 16
    fields = VoxelFields(
        centers=rng.uniform(-2, 2, (L, 3)), half_side=rng.uniform(0.01, 0.05, L),
        density=torch.from_numpy(rng.normal(0, 3, (L, 27)).astype(np.float32)),
        descriptors=torch.from_numpy(rng.normal(size=(L, 27, C)).astype(np.float32)),
        fit_cos=np.ones(L, np.float32), shift=-4.6,
    )  # fmt: skip
    origin = np.array([0.3, -3.0, 0.5])
    idx = rng.permutation(L)[:30]
    o = torch.from_numpy((origin - fields.centers[idx]) / fields.half_side[idx, None]).float()[:, None]
    d = -o / o.norm(dim=-1, keepdim=True)
    t = torch.from_numpy(idx)
    A, _, _ = ray_weights(o, d, fields.density[t], fields.shift, 8)
    ref = torch.nn.functional.normalize(torch.bmm(A, fields.descriptors[t])[:, 0], dim=-1).numpy()
    out = fields.render(origin, idx)
    assert out.shape == (30, C) and np.abs(out - ref).max() < 1e-4  # float64 kernel vs float32 torch
