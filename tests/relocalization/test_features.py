"""Local features: shapes, normalisation, dense patches, ORB-as-cosine, matcher, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from relocalization.features import make_features, mutual_nn
from spatial_memory.errors import ConfigError, InvalidFrameError


@pytest.fixture(scope="module")
def rgb(icl_mapping):
    return icl_mapping[0].rgb


@pytest.mark.parametrize("name,dim", [("xfeat", 64), ("sift", 128), ("orb", 256)])
def test_detect_shapes_and_unit_descriptors(rgb, name, dim):
    kp = make_features(name, top_k=300).detect(rgb)
    assert 50 <= len(kp) <= 300
    assert kp.xy.shape == (len(kp), 2) and kp.xy.dtype == np.float32
    assert kp.scores.shape == (len(kp),)
    assert kp.descriptors.shape == (len(kp), dim)
    np.testing.assert_allclose(np.linalg.norm(kp.descriptors, axis=1), 1.0, atol=1e-5)
    h, w = rgb.shape[:2]
    assert (kp.xy[:, 0] >= 0).all() and (kp.xy[:, 0] < w).all() and (kp.xy[:, 1] < h).all()


def test_xfeat_dense_patches_agree_with_keypoint_descriptors(rgb):
    ex = make_features("xfeat", top_k=200)
    kp, dense = ex.detect_and_dense(rgb)
    assert dense.map.shape[0] == 64 and dense.stride == 8
    patches = ex.sample_patches(dense, kp.xy[:20], size=7)
    assert patches.shape == (20, 7, 7, 64)
    # The patch centre is sampled exactly where the keypoint descriptor was.
    np.testing.assert_allclose((patches[:, 3, 3] * kp.descriptors[:20]).sum(-1), 1.0, atol=1e-4)
    # ... and the corners differ from it (the patch really spans 7 pixels).
    assert ((patches[:, 0, 0] * kp.descriptors[:20]).sum(-1) < 0.9999).all()


def test_orb_cosine_equals_hamming(rgb):
    import cv2

    kp = make_features("orb", top_k=100).detect(rgb)
    bits = (kp.descriptors > 0).astype(np.uint8)
    packed = np.packbits(bits, axis=1)
    ham = np.array([[cv2.norm(a, b, cv2.NORM_HAMMING) for b in packed[:10]] for a in packed[:10]])
    np.testing.assert_allclose(kp.descriptors[:10] @ kp.descriptors[:10].T, 1 - 2 * ham / 256, atol=1e-5)


def test_sparse_extractors_have_no_dense_map(rgb):
    with pytest.raises(ConfigError):
        make_features("sift").dense(rgb)


def test_unknown_extractor():
    with pytest.raises(ConfigError, match="unknown local features"):
        make_features("superpoint")


@pytest.mark.parametrize(
    "img",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((64, 64, 3), np.float32),
     np.zeros((8, 8, 3), np.uint8), [[1, 2, 3]]],
)
def test_bad_images_raise(img):
    with pytest.raises(InvalidFrameError):
        make_features("xfeat").detect(img)


def test_blank_image_has_no_keypoints():
    assert len(make_features("xfeat").detect(np.zeros((240, 320, 3), np.uint8))) == 0


def test_mutual_nn_window_and_ratio():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 16)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    perm = rng.permutation(20)
    b = a[perm] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    ia, ib, c = mutual_nn(a, b, min_cos=0.9)
    assert len(ia) == 20 and (perm[ib] == ia).all() and (c > 0.9).all()
    mask = np.zeros((20, 20), bool)
    mask[:10] = True  # only the first 10 rows may match
    ia, ib, _ = mutual_nn(a, b, min_cos=0.9, mask=mask)
    assert set(ia.tolist()) == set(range(10))
    # Duplicated targets are ambiguous: the ratio test removes them.
    ia, _, _ = mutual_nn(a, np.concatenate([b, b]), min_cos=0.9, ratio=0.9)
    assert len(ia) == 0


def test_subpixel_recovers_a_blob_centre_and_keeps_borders():
    import torch

    from relocalization.features import subpixel

    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(30.0), indexing="ij")
    heat = torch.exp(-((xx - 10.3) ** 2 + (yy - 20.7) ** 2) / 4.0)
    out = subpixel(heat, torch.tensor([[10.0, 21.0], [0.0, 0.0], [5.0, 5.0]]))
    assert torch.allclose(out[0], torch.tensor([10.3, 20.7]), atol=0.05)  # quadratic fit of a Gaussian
    assert torch.equal(out[1], torch.tensor([0.0, 0.0]))  # on the border: unchanged
    assert (out[2] - torch.tensor([5.0, 5.0])).abs().max() <= 0.5  # never moves past half a pixel


def _brute_mutual(a, b, min_cos, ratio=1.0, mask=None):
    """Reference: full cosine matrix, arg-max both ways, Lowe ratio on distances."""
    sim = a @ b.T
    if mask is not None:
        sim = np.where(mask, sim, -np.inf)
    ab, ba = sim.argmax(1), sim.argmax(0)
    srt = np.sort(sim, axis=1)
    best, second = srt[:, -1], srt[:, -2]
    keep = (ba[ab] == np.arange(len(a))) & (best >= min_cos)
    if ratio < 1.0:
        keep &= np.sqrt(np.maximum(2 - 2 * best, 0)) < ratio * np.sqrt(np.maximum(2 - 2 * second, 0))
    return np.flatnonzero(keep), ab[keep]


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_mutual_nn_and_windows_equal_brute_force():
    from relocalization.features import match_in_windows

    rng = np.random.default_rng(1)
    a = _unit(rng.normal(size=(400, 32)))
    b = _unit(np.concatenate([a[:150] + 0.05 * rng.normal(size=(150, 32)), rng.normal(size=(250, 32))]))
    uv = rng.uniform(0, 200, size=(400, 2))
    xy = np.concatenate([uv[:150] + rng.normal(scale=1.0, size=(150, 2)), rng.uniform(0, 200, size=(250, 2))])
    for ratio in (1.0, 0.9):
        ia, ib, c = mutual_nn(a, b, 0.5, ratio)
        ra, rb = _brute_mutual(a, b, 0.5, ratio)
        assert np.array_equal(ia, ra) and np.array_equal(ib, rb) and len(ia) >= 100
        assert np.allclose(c, np.einsum("nc,nc->n", a[ia], b[ib]), atol=1e-5)
        for radius in (3.0, 25.0):
            mask = ((uv[:, None] - xy[None]) ** 2).sum(-1) <= radius**2
            wa, wb, _ = match_in_windows(uv, a, xy, b, radius, 0.5, ratio)
            ra, rb = _brute_mutual(a, b, 0.5, ratio, mask)
            assert np.array_equal(wa, ra) and np.array_equal(wb, rb), (ratio, radius)


def test_window_matching_by_distance_takes_the_nearest_compatible_keypoint():
    from relocalization.features import match_in_windows

    d = _unit(np.eye(4)[[0, 0, 0, 1]] + 0.01)
    uv = np.array([[10.0, 10.0]])
    xy = np.array([[12.5, 10.0], [10.5, 10.0], [10.0, 10.2], [11.0, 11.0]])  # nearest (#2) is incompatible below
    desc_b = _unit(np.stack([d[0], d[0] * 0.99 + 0.01, d[3], d[0]]))
    ia, ib, _ = match_in_windows(uv, d[:1], xy, desc_b, 3.0, 0.9, by="distance")
    assert ib.tolist() == [1]  # the closest keypoint whose descriptor agrees, not the most similar one
    ia, ib, _ = match_in_windows(uv, d[:1], xy, desc_b, 3.0, 0.9, by="descriptor")
    assert ib.tolist() == [0] or ib.tolist() == [3]
    with pytest.raises(ConfigError, match="by"):
        match_in_windows(uv, d[:1], xy, desc_b, 3.0, 0.9, by="colour")


def test_nms_peaks_equal_max_pool_nms():
    import torch

    from relocalization.features import nms_peaks

    heat = np.random.default_rng(2).random((48, 64)).astype(np.float32) ** 4
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(heat)[None, None], 5, stride=1, padding=2)[0, 0].numpy()
    ys, xs = np.nonzero((heat == pooled) & (heat > 0.05))
    assert np.array_equal(nms_peaks(heat, 0.05), np.stack([xs, ys], 1)) and len(xs) > 20


def test_candidates_extend_the_keypoints_from_one_pass(rgb):
    ex = make_features("xfeat", top_k=256)
    kp = ex.detect(rgb)
    kp2, cand = ex.detect_with_candidates(rgb, 2048, 0.01)
    assert np.array_equal(kp.xy, kp2.xy) and np.allclose(kp.descriptors, kp2.descriptors)
    assert len(cand) > len(kp)
    # every keypoint is also a candidate, with the same descriptor
    d2 = ((kp.xy[:, None] - cand.xy[None]) ** 2).sum(-1)
    j = d2.argmin(1)
    assert (d2.min(1) < 1e-8).all() and np.allclose(cand.descriptors[j], kp.descriptors, atol=1e-6)
