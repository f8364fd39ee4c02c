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
