"""Feature extractors: labels (MiniLM), xfeat (dense descriptors), clip (open_clip plumbing)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from spatial_memory import CameraIntrinsics, Frame
from spatial_memory.errors import ConfigError, QueryError
from spatial_memory.m3.extractors import FeatureMap, make_extractor


def _frame(h: int = 48, w: int = 64, with_ids: bool = True) -> Frame:
    rng = np.random.default_rng(0)
    ids = np.zeros((h, w), np.int32)
    ids[:, : w // 2] = 3
    ids[: h // 2, w // 2 :] = 7
    return Frame(
        stamp_ns=0,
        rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        depth=np.ones((h, w), np.float32),
        intrinsics=CameraIntrinsics.from_fov(w, h, 60.0),
        T_world_camera=np.eye(4),
        instance_ids=ids if with_ids else None,
        id_to_label={3: "sofa", 7: "tea_set"},
    )


@pytest.fixture(scope="module")
def labels():
    return make_extractor("labels")


def test_labels_pixels_are_minilm_embeddings_of_their_label(labels) -> None:
    from spatial_memory.m3.extractors import load_minilm

    fm = labels.extract(_frame())
    assert fm.grid_shape == (48, 64) and fm.dim == 384
    feats = fm.features
    ref = load_minilm().encode(["sofa", "tea set"], normalize_embeddings=True)
    np.testing.assert_allclose(feats[5, 5], ref[0], atol=1e-5)
    np.testing.assert_allclose(feats[5, 60], ref[1], atol=1e-5)
    # id 0 is background: no supervision there.
    assert not fm.valid[40, 60] and fm.valid[5, 5] and fm.valid[5, 60]
    # Text queries use the same encoder: cos("sofa" text, sofa pixel) = 1, other label lower.
    t = labels.encode_text(["sofa"])[0]
    assert float(t @ feats[5, 5]) == pytest.approx(1.0, abs=1e-5)
    assert float(t @ feats[5, 60]) < 0.9


def test_labels_palette_vectors_and_sampling(labels) -> None:
    fm = labels.extract(_frame())
    vecs = fm.valid_vectors()
    assert vecs.shape == (2, 384)  # one per distinct valid label, in first-appearance order
    uv = torch.tensor([[5.0, 5.0], [60.0, 5.0], [60.0, 40.0]])
    f, v = fm.sample(uv, (48, 64))
    assert f.shape == (3, 384) and v.tolist() == [True, True, False]
    np.testing.assert_allclose(f[0].numpy(), fm.features[5, 5], atol=1e-6)


def test_labels_without_instance_ids_gives_invalid_map(labels) -> None:
    fm = labels.extract(_frame(with_ids=False))
    assert fm.grid_shape == (48, 64) and not fm.valid.any()
    assert fm.valid_vectors().shape == (0, 384)


def test_xfeat_dense_descriptors_shape() -> None:
    ex = make_extractor("xfeat")
    fm = ex.extract(_frame(h=96, w=128))
    assert ex.dim == 64 and fm.grid_shape == (12, 16) and fm.dim == 64
    assert fm.valid.all()
    np.testing.assert_allclose(np.linalg.norm(fm.features, axis=-1), 1.0, atol=1e-4)
    # Descriptors depend on the image content.
    fm2 = ex.extract(replace(_frame(h=96, w=128), rgb=np.full((96, 128, 3), 128, np.uint8)))
    assert not np.allclose(fm.features, fm2.features)
    with pytest.raises(QueryError):
        ex.encode_text(["sofa"])
    # Bilinear sampling at a cell centre returns that cell.
    f, v = fm.sample(torch.tensor([[8 * 3 + 3.5, 8 * 2 + 3.5]]), (96, 128))
    np.testing.assert_allclose(f[0].numpy(), fm.features[2, 3], atol=1e-5)


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        make_extractor("dino")
    with pytest.raises(ConfigError, match="bad arguments"):
        make_extractor("labels", colour="red")
    with pytest.raises(ConfigError, match="checkpoint"):
        make_extractor("clip", model_name="ViT-B-32", checkpoint_path=None)
    with pytest.raises(ConfigError, match="does not exist"):
        make_extractor("clip", model_name="ViT-B-32", checkpoint_path="/nonexistent/clip.bin")


def test_feature_map_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError):
        FeatureMap(valid=np.ones((2, 2), bool), dense=np.zeros((3, 3, 4), np.float32))


def test_clip_plumbing_with_random_small_model() -> None:
    from spatial_memory._torch_compat import ensure_torchvision_importable

    assert ensure_torchvision_importable()
    import open_clip
    from spatial_memory.m3.extractors import ClipExtractor

    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32}
    text = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}
    model = open_clip.CLIP(embed_dim=48, vision_cfg=vision, text_cfg=text)
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    ex = ClipExtractor.from_model(model, tok, "tiny")
    assert ex.dim == 48
    fm = ex.extract(_frame())
    assert fm.grid_shape == (4, 4) and fm.dim == 48 and fm.valid.all()
    t = ex.encode_text(["sofa", "table"])
    assert t.shape == (2, 48)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    # The dense read-out equals open_clip's own token output mapped through the projection.
    img = torch.rand(1, 3, 32, 32)
    model.visual.output_tokens = True
    with torch.no_grad():
        _, tokens = model.visual(img)
    np.testing.assert_allclose(ex.patch_tokens(img).reshape(16, 48).numpy(), (tokens[0] @ model.visual.proj).detach().numpy(), atol=1e-5)
