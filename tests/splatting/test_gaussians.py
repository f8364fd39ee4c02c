"""GaussianModel: SH colour, structural edits, state tensors, PLY round trip, RGB-D initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spatial_memory.errors import EmptyMapError, MapFormatError
from spatial_memory.types import CameraIntrinsics, Frame
from splatting.gaussians import GaussianModel, eval_sh, read_ply_vertices, rgb_to_sh_dc


def _model(n: int = 20, degree: int = 2, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return GaussianModel(
        means=torch.randn(n, 3, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 3,
        quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, generator=g),
        sh_dc=torch.randn(n, 1, 3, generator=g),
        sh_rest=torch.randn(n, k - 1, 3, generator=g) * 0.1,
        queries={"clip": torch.randn(n, 5, generator=g), "dino": torch.randn(n, 3, generator=g)},
        active_sh_degree=degree,
    )


def test_eval_sh_degree0_inverts_rgb_and_higher_degrees_depend_on_view():
    rgb = torch.rand(10, 3)
    sh = torch.zeros(10, 16, 3)
    sh[:, 0] = rgb_to_sh_dc(rgb)
    dirs = torch.randn(10, 3)
    assert torch.allclose(eval_sh(sh, dirs, 0), rgb, atol=1e-6)
    assert torch.allclose(eval_sh(sh, dirs, 3), rgb, atol=1e-6)  # zero higher bands change nothing
    sh[:, 1:] = 0.3 * torch.randn(10, 15, 3)
    for degree in (1, 2, 3):
        a, b = eval_sh(sh, dirs, degree), eval_sh(sh, -dirs, degree)
        assert not torch.allclose(a, b)
        assert (a >= 0).all()


def test_eval_sh_band1_matches_closed_form():
    sh = torch.zeros(1, 4, 3)
    sh[0, 3, 0] = 1.0  # the x-band of the red channel
    c = eval_sh(sh, torch.tensor([[-2.0, 0.0, 0.0]]), 1)  # direction normalised inside
    assert math.isclose(float(c[0, 0]), 0.5 + 0.4886025119029199, rel_tol=1e-6)


def test_prune_clone_split_append_keep_rows_consistent():
    m = _model(20)
    before = {k: v.detach().clone() for k, v in m.row_parameters().items()}
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[1, 4, 7]] = True
    r = m.prune(mask)
    assert len(m) == 17 and r.n_new == 0
    assert torch.equal(m.means.data, before["means"][~mask])
    assert torch.equal(m.queries["clip"].data, before["query.clip"][~mask])
    m.clone_gaussians(torch.arange(17) < 2)
    assert len(m) == 19 and torch.equal(m.means.data[17:], m.means.data[:2])
    sel = torch.zeros(19, dtype=torch.bool)
    sel[0] = True
    scale0 = m.scales[0].detach().clone()
    m.split(sel, 2, torch.Generator().manual_seed(0))
    assert len(m) == 20
    assert torch.allclose(m.scales[-1], scale0 / 1.6) and torch.allclose(m.scales[-2], scale0 / 1.6)
    assert not torch.equal(m.means.data[-1], m.means.data[-2])
    n0 = len(m)
    m.extend_from_points(np.random.rand(5, 3), np.random.rand(5, 3))
    assert len(m) == n0 + 5 and m.queries["dino"].shape == (n0 + 5, 3)
    assert m.queries["clip"].data[-5:].abs().max() == 0
    for p in m.row_parameters().values():
        assert p.shape[0] == len(m) and p.requires_grad


def test_state_tensors_round_trip():
    m = _model(12)
    back = GaussianModel.from_state_tensors(m.state_tensors())
    for k, v in m.row_parameters().items():
        assert torch.equal(back.row_parameters()[k].data, v.data)
    assert back.active_sh_degree == m.active_sh_degree and back.sh_degree == 2
    bad = m.state_tensors()
    del bad["quats"]
    with pytest.raises(MapFormatError, match="quats"):
        GaussianModel.from_state_tensors(bad)


def test_ply_round_trip_and_standard_layout(tmp_path):
    m = _model(15, degree=3)
    path = m.to_ply(tmp_path / "scene.ply")
    data = read_ply_vertices(path)
    names = list(data.dtype.names)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:62] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert "f_clip_4" in names and "f_dino_2" in names
    # 3DGS stores f_rest channel-major: f_rest_0..14 are the red channel's bands 1..15
    assert np.allclose(data["f_rest_1"], m.sh_rest.detach().numpy()[:, 1, 0])
    back = GaussianModel.from_ply(path)
    for k, v in m.row_parameters().items():
        assert torch.allclose(back.row_parameters()[k].data, v.data), k
    assert back.sh_degree == 3
    path2 = m.to_ply(tmp_path / "extra.ply", extra={"emb": torch.ones(15, 2)})
    back2 = GaussianModel.from_ply(path2)
    assert back2.query_names() == ["emb"] and back2.queries["emb"].data.sum() == 30


def test_ply_errors(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    with pytest.raises(MapFormatError, match="not a PLY"):
        GaussianModel.from_ply(bad)
    m = _model(4)
    path = m.to_ply(tmp_path / "t.ply")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MapFormatError, match="truncated"):
        GaussianModel.from_ply(path)


def test_from_rgbd_synthetic_plane():
    intr = CameraIntrinsics.from_fov(40, 30, 60.0)
    depth = np.full((30, 40), 2.0, dtype=np.float32)
    depth[:5] = 0.0  # invalid rows are skipped
    rgb = np.zeros((30, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]
    frames = [Frame(0, rgb, depth, intr, T), Frame(1, rgb, depth, intr, None)]
    m = GaussianModel.from_rgbd(frames, voxel_size=0.05, stride=1, query_dims={"clip": 4})
    assert 50 < len(m) < 30 * 40
    assert torch.allclose(m.means[:, 2], torch.full((len(m),), 2.0), atol=0.03)
    assert m.means[:, 0].mean() > 0.5  # the pose was applied
    assert torch.allclose(m.opacities, torch.full((len(m),), 0.1), atol=1e-5)
    assert (m.scales > 0.01).all() and (m.scales < 0.2).all()
    colour = eval_sh(m.sh, torch.ones(len(m), 3), 0)
    assert torch.allclose(colour[:, 0], torch.full((len(m),), 200 / 255), atol=1e-4)
    assert m.queries["clip"].shape == (len(m), 4)
    with pytest.raises(EmptyMapError):
        GaussianModel.from_rgbd([Frame(0, rgb, None, intr, T)])


def test_from_rgbd_real_frames(open3d_sample_frames):
    """ICL-NUIM frames (Open3D sample, millimetre PNGs, ground-truth poses) give a bounded cloud."""
    frames = open3d_sample_frames[:2]
    m = GaussianModel.from_rgbd(frames, voxel_size=0.05, max_points=5000, stride=4)
    assert 500 < len(m) <= 5000
    centers = np.stack([f.T_world_camera[:3, 3] for f in frames])
    dist = np.linalg.norm(m.means.detach().numpy()[:, None] - centers[None], axis=2).min(axis=1)
    assert dist.min() > 0.2 and dist.max() < 10.0  # within the sensor's range of some camera
    assert (m.scales > 0).all() and float(m.scales.detach().median()) < 0.2
