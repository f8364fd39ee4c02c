"""The numba CPU rasterizer against the PyTorch reference: forward, backward, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from spatial_memory.errors import ConfigError
from splatting.bench import make_random_scene
from splatting.rasterize import means2d_grad, rasterization

PARAMS = ("means", "quats", "scales", "opacities", "colors", "features")


def _render(scene: dict, backend: str, tile_size: int = 16, background=None, leaf: bool = True):
    ps = {k: scene[k].clone().requires_grad_(True) for k in PARAMS if scene.get(k) is not None}
    out = rasterization(
        ps["means"], ps["quats"], ps["scales"], ps["opacities"], ps["colors"], scene["viewmat"], scene["K"],
        scene["width"], scene["height"], features=ps.get("features"), background=background,
        backend=backend, tile_size=tile_size,
    )  # fmt: skip
    return out, ps


def _weighted_loss(out, seed: int = 7) -> torch.Tensor:
    """A loss touching every output with random weights, so every gradient path is exercised."""
    g = torch.Generator().manual_seed(seed)
    dt = out.rgb.dtype
    rnd = lambda t: torch.randn(t.shape, generator=g, dtype=dt)  # noqa: E731
    loss = (out.rgb * rnd(out.rgb)).sum() + (out.depth * out.alpha * rnd(out.depth)).sum()
    loss = loss + (out.alpha * rnd(out.alpha)).sum()
    if out.features is not None:
        loss = loss + (out.features * rnd(out.features)).sum()
    return loss


@pytest.fixture(scope="module")
def scene64() -> dict:
    # dense enough that many pixels terminate early and Gaussians straddle tile borders
    return make_random_scene(60, 40, 30, n_features=4, seed=1, dtype=torch.float64, opacity_range=(0.3, 1.0))


def test_forward_matches_reference_float32():
    scene = make_random_scene(300, 64, 48, n_features=5, seed=2)
    a, _ = _render(scene, "cpu")
    b, _ = _render(scene, "torch")
    assert a.meta["n_visible"] == b.meta["n_visible"] > 150
    assert a.alpha.max() > 0.9  # the scene is not trivially empty
    for name in ("rgb", "depth", "alpha", "features"):
        diff = (getattr(a, name) - getattr(b, name)).abs().max().item()
        assert diff < 1e-4, f"{name} differs by {diff}"


def test_backward_matches_reference_float64(scene64):
    a, pa = _render(scene64, "cpu")
    b, pb = _render(scene64, "torch")
    _weighted_loss(a).backward()
    _weighted_loss(b).backward()
    for name in PARAMS:
        ga, gb = pa[name].grad, pb[name].grad
        scale = gb.abs().max().item()
        assert scale > 0, f"reference gradient of {name} is zero: test scene too weak"
        assert torch.allclose(ga, gb, rtol=1e-7, atol=1e-9 * scale), f"{name}: {(ga - gb).abs().max().item()}"
    g2a, g2b = means2d_grad(a.meta), means2d_grad(b.meta)
    assert g2a is not None and torch.allclose(g2a, g2b, rtol=1e-7, atol=1e-9)


def test_backward_matches_finite_differences(scene64):
    """The hand-written backward against central differences of the CPU forward itself."""
    sub = {k: (v[:12] if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == 60 else v) for k, v in scene64.items()}
    out, ps = _render(sub, "cpu")
    _weighted_loss(out).backward()
    g = torch.Generator().manual_seed(0)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        for _ in range(3):
            idx = tuple(int(torch.randint(0, s, (1,), generator=g)) for s in sub[name].shape)
            vals = []
            for sign in (1.0, -1.0):
                pert = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in sub.items()}
                pert[name][idx] += sign * 1e-6
                with torch.no_grad():
                    o, _ = _render(pert, "cpu")
                    vals.append(_weighted_loss(o).item())
            fd = (vals[0] - vals[1]) / 2e-6
            an = ps[name].grad[idx].item()
            assert abs(fd - an) <= 1e-4 * max(1.0, abs(fd)), f"{name}{idx}: analytic {an} vs numeric {fd}"


def _two_wall_scene(hidden_opacity: float = 0.9) -> dict:
    """Two huge opaque white Gaussians at z=1, 1.1 in front of a small red one at z=2."""
    dt = torch.float64
    K = torch.tensor([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]], dtype=dt)
    return {
        "means": torch.tensor([[0, 0, 1.0], [0, 0, 1.1], [0, 0, 2.0]], dtype=dt),
        "quats": torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=dt),
        "scales": torch.tensor([[50.0, 50.0, 0.01], [50.0, 50.0, 0.01], [0.05, 0.05, 0.05]], dtype=dt),
        "opacities": torch.tensor([1.0, 1.0, hidden_opacity], dtype=dt),
        "colors": torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=dt),
        "features": None,
        "viewmat": torch.eye(4, dtype=dt),
        "K": K,
        "width": 32,
        "height": 24,
    }


def test_early_termination_hides_what_is_behind():
    scene = _two_wall_scene()
    out, ps = _render(scene, "cpu")
    # walls clamp to alpha 0.99: T = 1e-2 after the first and (1e-4 + rounding) > 1e-4 after the
    # second, so both count; the red Gaussian would take T to 1e-5 <= 1e-4 and is excluded
    expected = torch.full((3,), 0.99 + 0.01 * 0.99 * 0.5, dtype=torch.float64)
    assert torch.allclose(out.rgb, expected.expand_as(out.rgb), atol=1e-9)
    assert torch.allclose(out.alpha, torch.full_like(out.alpha, 1 - 0.01 * 0.01), atol=1e-9)
    out.rgb.sum().backward()
    assert ps["colors"].grad[1].abs().min() > 0
    assert ps["colors"].grad[2].abs().max() == 0.0 and ps["opacities"].grad[2] == 0.0
    ref, _ = _render(scene, "torch")
    assert (ref.rgb - out.rgb).abs().max() < 1e-9
    # with translucent walls the red Gaussian shows through
    scene["opacities"][:2] = 0.5
    see, _ = _render(scene, "cpu")
    centre = see.rgb[11, 15]
    assert centre[0] > centre[1] + 0.1


@pytest.mark.parametrize("tile_size", [4, 8, 16, 64])
def test_tile_size_does_not_change_the_image(scene64, tile_size):
    """Gaussians straddling tile borders (and a 40x30 image that tiles unevenly) render identically."""
    base, _ = _render(scene64, "cpu", tile_size=16)
    other, _ = _render(scene64, "cpu", tile_size=tile_size)
    assert torch.equal(base.rgb, other.rgb) and torch.equal(base.alpha, other.alpha)


def test_gaussian_on_a_tile_corner():
    dt = torch.float64
    K = torch.tensor([[30.0, 0, 16.0], [0, 30.0, 16.0], [0, 0, 1]], dtype=dt)  # centre lands on pixel (16, 16)
    scene = {
        "means": torch.tensor([[0.0, 0.0, 1.0]], dtype=dt),
        "quats": torch.tensor([[0.9, 0.1, 0.3, 0.2]], dtype=dt),
        "scales": torch.tensor([[0.1, 0.05, 0.02]], dtype=dt),
        "opacities": torch.tensor([0.8], dtype=dt),
        "colors": torch.tensor([[0.2, 0.4, 0.6]], dtype=dt),
        "features": None,
        "viewmat": torch.eye(4, dtype=dt),
        "K": K,
        "width": 32,
        "height": 32,
    }
    a, pa = _render(scene, "cpu", tile_size=16)
    b, pb = _render(scene, "torch", tile_size=16)
    nz = a.alpha > 0
    assert nz[:16, :16].any() and nz[16:, 16:].any() and nz[:16, 16:].any() and nz[16:, :16].any()
    assert (a.rgb - b.rgb).abs().max() < 1e-12
    a.rgb.sum().backward()
    b.rgb.sum().backward()
    for name in ("means", "quats", "scales", "opacities"):
        assert torch.allclose(pa[name].grad, pb[name].grad, rtol=1e-8, atol=1e-12)


def test_empty_scene_and_everything_behind_camera():
    bg = torch.tensor([0.1, 0.2, 0.3])
    empty = make_random_scene(0, 20, 10)
    out, _ = _render(empty, "cpu", background=bg)
    assert out.meta["n_visible"] == 0
    assert torch.allclose(out.rgb, bg.expand(10, 20, 3)) and out.alpha.abs().max() == 0
    assert out.depth.abs().max() == 0
    behind = make_random_scene(50, 20, 10, seed=3)
    behind["means"] = behind["means"] * torch.tensor([1.0, 1.0, -1.0])
    out, ps = _render(behind, "cpu", background=bg)
    assert out.meta["n_visible"] == 0 and torch.allclose(out.rgb, bg.expand(10, 20, 3))
    (out.rgb.sum() + out.depth.sum()).backward()
    assert ps["means"].grad.abs().max() == 0 and ps["colors"].grad.abs().max() == 0


def test_background_and_depth_normalisation(scene64):
    bg = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    plain, _ = _render(scene64, "cpu")
    with_bg, _ = _render(scene64, "cpu", background=bg)
    assert torch.allclose(with_bg.rgb, plain.rgb + (1 - plain.alpha)[..., None] * bg)
    covered = plain.alpha > 0.5
    z = scene64["means"][:, 2]
    assert covered.any()
    assert (plain.depth[covered] >= z.min() - 1e-9).all() and (plain.depth[covered] <= z.max() + 1e-9).all()


def test_bad_inputs_raise_typed_errors():
    s = make_random_scene(5, 8, 8)
    args = [s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K")]
    with pytest.raises(ValueError, match="quats"):
        rasterization(args[0], args[1][:, :3], *args[2:], 8, 8)
    with pytest.raises(ValueError, match="features"):
        rasterization(*args, 8, 8, features=torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="backend"):
        rasterization(*args, 8, 8, backend="vulkan")
    with pytest.raises(ConfigError, match="gsplat"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present: gsplat on CPU tensors is the only failure left to check")
        rasterization(*args, 8, 8, backend="gsplat")
    with pytest.raises(ConfigError, match="near"):
        rasterization(*args, 8, 8, near=1.0, far=0.5)


def test_unnormalised_quaternions_and_radius_meta():
    s = make_random_scene(40, 32, 32, seed=5, dtype=torch.float64)
    a, _ = _render(s, "cpu")
    s2 = dict(s, quats=s["quats"] * 3.7)
    b, _ = _render(s2, "cpu")
    assert torch.allclose(a.rgb, b.rgb, atol=1e-12)
    radii = a.meta["radii"]
    assert radii.shape == (40, 2) and ((radii.amax(1) > 0) == a.meta["visible"]).all()
    assert math.isclose(a.meta["n_visible"], int(a.meta["visible"].sum()))


def test_gradients_of_large_gaussians_centred_outside_the_view():
    """Centres beyond the field-of-view clamp (J evaluated at the clamped direction) still match."""
    s = make_random_scene(30, 40, 30, seed=11, dtype=torch.float64)
    s["means"][:10, 0] = s["means"][:10, 2]  # x/z = 1, right of the view
    s["means"][10:20, 1] = -s["means"][10:20, 2]  # above the view
    s["scales"][:20] *= 20.0
    a, pa = _render(s, "cpu")
    b, pb = _render(s, "torch")
    assert a.meta["visible"][:20].sum() >= 10
    assert (a.rgb - b.rgb).abs().max() < 1e-10
    _weighted_loss(a).backward()
    _weighted_loss(b).backward()
    for name in ("means", "quats", "scales", "opacities"):
        scale = pb[name].grad.abs().max().item()
        assert torch.allclose(pa[name].grad, pb[name].grad, rtol=1e-7, atol=1e-9 * scale), name
