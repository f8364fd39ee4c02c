"""``M3Memory``: a Gaussian-splat map whose Gaussians also remember what foundation models saw.

Per Gaussian the map holds geometry and colour (3DGS) plus, per foundation model, a small
query vector. Per model a bank of principal scene components (PSC) grows as frames stream
in, and memory attention decodes any query (rendered per pixel or read from one Gaussian)
into that model's feature space. Text queries are answered directly in 3D: every Gaussian's
query is decoded (cached until the map changes), scored against the text embedding, and the
best-scoring Gaussians are clustered into object hits.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splatting.gaussians import SH_C0, GaussianModel
from splatting.online import OnlineMapper

from ..errors import ConfigError, EmemError, EmptyMapError, MapFormatError, QueryError
from ..persistence import load_map_dir, require_tensor, save_map_dir
from ..types import CameraIntrinsics, Frame
from .attention import MemoryAttention
from .config import M3Config
from .extractors import FeatureExtractor, FeatureMap, make_extractor
from .psc import StreamingPSC

log = logging.getLogger(__name__)

MAP_KIND = "m3"
FORMAT_VERSION = 1


@dataclass
class IngestResult:
    """Outcome of :meth:`M3Memory.ingest`: whether the frame changed the map, and why (not)."""

    integrated: bool
    reason: str
    seconds: float


@dataclass
class QueryHit:
    """One 3D answer to a text query: a cluster of Gaussians that match the text.

    Attributes:
        label: the query text.
        position: ``[3]`` score-weighted centroid (world, metres).
        extent: ``[3]`` axis-aligned size of the cluster (5th-95th percentile, metres).
        score: mean cosine similarity of the cluster's Gaussians to the text.
        support: number of Gaussians in the cluster.
        gaussian_ids: ``[support]`` indices into the current map.
    """

    label: str
    position: np.ndarray
    extent: np.ndarray
    score: float
    support: int
    gaussian_ids: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "position": [float(x) for x in self.position],
                "extent": [float(x) for x in self.extent], "score": float(self.score), "support": int(self.support)}


@dataclass
class RenderedView:
    """A rendered view: ``rgb [H, W, 3] uint8``, ``depth [H, W] float32`` (0 = empty),
    ``heatmap [H, W]`` text similarity (or None), ``features {model: [H, W, D]}`` decoded."""

    rgb: np.ndarray
    depth: np.ndarray
    heatmap: np.ndarray | None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    alpha: np.ndarray | None = None


class _DecodedCache:
    """Per-Gaussian decoded features of one model, in the cheaper of two exact forms.

    Scores are ``cos(F_i, t)`` with ``F_i = A_i PSC``. When the bank is smaller than the
    feature width (``K < D``) we keep the attention weights ``A [N, K]`` and ``1/|F_i|`` and
    score as ``(A (PSC t)) / |F_i|``; otherwise the unit features ``F / |F| [N, D]``.
    """

    def __init__(self, att: MemoryAttention, queries: torch.Tensor) -> None:
        self.bank = att.bank
        self.A: torch.Tensor | None = None
        self.inv_norm: torch.Tensor | None = None
        self.unit: torch.Tensor | None = None
        with torch.no_grad():
            if att.bank_size < att.feature_dim:
                self.A = att.weights_chunked(queries)
                # |A_i PSC|^2 = A_i (PSC PSC^T) A_i^T: N K^2 work instead of N K D.
                sq = ((self.A @ (self.bank @ self.bank.T)) * self.A).sum(dim=1)
                self.inv_norm = 1.0 / sq.clamp_min(1e-24).sqrt()
            else:
                self.unit = F.normalize(att.decode_chunked(queries), dim=1)

    def scores(self, text: torch.Tensor) -> torch.Tensor:
        """``text [D]`` unit vector -> cosine per Gaussian ``[N]``."""
        if self.unit is not None:
            return self.unit @ text
        return (self.A @ (self.bank @ text)) * self.inv_norm

    def mean_feature(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean decoded feature ``[D]`` of some Gaussians."""
        w = weights / weights.sum().clamp_min(1e-12)
        if self.unit is not None:
            return w @ self.unit[ids]
        return (w * self.inv_norm[ids]) @ self.A[ids] @ self.bank


class M3Memory:
    """The M3 spatial multimodal memory, built online from posed RGB-D frames.

    Args:
        config: :class:`M3Config` (extractors with theta and query width, tau, mapper, backend).
        extractors: optional pre-built extractors by name (e.g. a CLIP model built by the
            caller); others are built from ``config`` with :func:`make_extractor`.
    """

    def __init__(self, config: M3Config | None = None, extractors: dict[str, FeatureExtractor] | None = None) -> None:
        self.config = copy.deepcopy(config) if config is not None else M3Config()
        given = dict(extractors or {})
        self.extractors: dict[str, FeatureExtractor] = {}
        self.psc: dict[str, StreamingPSC] = {}
        self.attention: dict[str, MemoryAttention] = {}
        for i, spec in enumerate(self.config.extractors):
            ex = given.pop(spec.name, None) or make_extractor(spec.name, **spec.options)
            self.extractors[spec.name] = ex
            self.psc[spec.name] = StreamingPSC(spec.theta, max_size=spec.psc_max_size)
            self.attention[spec.name] = MemoryAttention(
                spec.query_dim, np.zeros((0, ex.dim), np.float32), tau=self.config.tau,
                train_W=self.config.train_W, seed=i)
        if given:
            raise ConfigError(f"M3Memory: extractors {sorted(given)} are not in the config")
        self.config.mapper.backend = self.config.render_backend
        self.mapper = OnlineMapper(self.config.mapper, {s.name: int(s.query_dim) for s in self.config.extractors},
                                   self.attention)
        self.vocabulary: list[str] = []  # labels seen in ingested frames, in order of first sight
        self.counts = {"frames": 0, "keyframes": 0, "not_keyframe": 0, "skipped_no_pose": 0,
                       "skipped_no_depth": 0, "skipped_invalid": 0}
        self._cache: dict[str, tuple[int, _DecodedCache]] = {}

    # ------------------------------------------------------------------ ingest
    def ingest(self, frame: Frame) -> IngestResult:
        """Integrate one frame if it is a posed RGB-D keyframe; never raises for a bad frame."""
        t0 = time.perf_counter()
        self.counts["frames"] += 1

        def skip(key: str, reason: str) -> IngestResult:
            self.counts[key] += 1
            if key.startswith("skipped"):
                log.warning("M3Memory: skipping frame %s: %s (%d %s so far)", getattr(frame, "index", "?"), reason,
                            self.counts[key], key)
            return IngestResult(False, reason, time.perf_counter() - t0)

        try:
            frame.validate()
        except (EmemError, ValueError, AttributeError, TypeError) as e:
            return skip("skipped_invalid", f"invalid frame: {e}")
        if frame.T_world_camera is None:
            return skip("skipped_no_pose", "frame has no pose")
        if frame.depth is None or not frame.valid_depth_mask().any():
            return skip("skipped_no_depth", "frame has no (valid) depth")
        is_kf, why = self.mapper.is_keyframe(frame)
        if not is_kf:
            return skip("not_keyframe", f"not a keyframe ({why})")
        fmaps: dict[str, FeatureMap] = {}
        for name, ex in self.extractors.items():
            fm = ex.extract(frame)
            fmaps[name] = fm
            if self.psc[name].update(fm.valid_vectors()):
                self.attention[name].set_bank(self.psc[name].bank)
        self._remember_labels(frame)
        info = self.mapper.integrate(frame, fmaps)
        self.counts["keyframes"] += 1
        return IngestResult(True, f"keyframe ({why}): +{info.added} Gaussians, loss {info.loss:.3f}",
                            time.perf_counter() - t0)

    def _remember_labels(self, frame: Frame) -> None:
        seen = set(self.vocabulary)
        self.vocabulary.extend(lab for lab in frame.labels_present() if lab not in seen)

    # ------------------------------------------------------------------ map access
    @property
    def num_gaussians(self) -> int:
        return self.mapper.num_gaussians

    def _model(self) -> GaussianModel:
        if self.mapper.model is None or self.num_gaussians == 0:
            raise EmptyMapError("the M3 map has no Gaussians yet (ingest posed RGB-D frames first)")
        return self.mapper.model

    def gaussian_points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz [N, 3] float32, rgb [N, 3] uint8)`` of the Gaussian centres."""
        if self.num_gaussians == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        m = self._model()
        with torch.no_grad():
            xyz = m.means.detach().numpy().astype(np.float32)
            # View-independent (DC) colour: what a point cloud viewer can show.
            rgb = ((m.sh_dc.detach()[:, 0] * SH_C0 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return xyz, rgb

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "gaussians": self.num_gaussians,
            "psc_bank_sizes": {n: p.size for n, p in self.psc.items()},
            "psc_vectors_seen": {n: p.n_seen for n, p in self.psc.items()},
            "vocabulary": len(self.vocabulary),
            "mapper": self.mapper.stats(),
        }

    # ------------------------------------------------------------------ text queries
    def _text_extractor(self, extractor: str | None) -> str:
        if extractor is None:
            for n, ex in self.extractors.items():
                if ex.supports_text:
                    return n
            raise QueryError(f"no text-capable extractor in this memory (have {sorted(self.extractors)})")
        if extractor not in self.extractors:
            raise QueryError(f"unknown extractor {extractor!r}; this memory has {sorted(self.extractors)}")
        if not self.extractors[extractor].supports_text:
            raise QueryError(f"extractor {extractor!r} cannot encode text")
        return extractor

    def _decoded(self, name: str) -> _DecodedCache:
        """Decoded per-Gaussian features of one model, recomputed only when the map changed."""
        key = self.mapper.version
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        if self.attention[name].bank_size == 0:
            raise EmptyMapError(f"model {name!r} has no principal scene components yet")
        cache = _DecodedCache(self.attention[name], self._model().queries[name].detach())
        self._cache[name] = (key, cache)
        return cache

    def _text_vector(self, name: str, text: str) -> torch.Tensor:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("query text is empty")
        return torch.from_numpy(self.extractors[name].encode_text([text.strip()])[0]).float()

    def gaussian_scores(self, text: str, extractor: str | None = None) -> np.ndarray:
        """Cosine similarity ``[N]`` of every Gaussian's decoded feature to the text."""
        name = self._text_extractor(extractor)
        t = self._text_vector(name, text)
        if self.num_gaussians == 0:
            return np.zeros(0, np.float32)
        return self._decoded(name).scores(t).numpy()

    def query_text(self, text: str, top_k: int = 5, min_score: float = 0.0, extractor: str | None = None) -> list[QueryHit]:
        """Find where a text description is in 3D.

        Steps: decode every Gaussian's query -> cosine with the text embedding -> keep the
        Gaussians within ``score_margin`` of the best (at least ``min_score``, opaque enough)
        -> cluster them in 3D (:func:`cluster_points`) -> one hit per cluster,
        best score first.

        Raises:
            QueryError: empty text, unknown or text-less extractor, bad ``top_k``.
        """
        if int(top_k) < 1:
            raise QueryError(f"top_k must be >= 1, got {top_k}")
        name = self._text_extractor(extractor)
        t = self._text_vector(name, text)
        if self.num_gaussians == 0 or self.attention[name].bank_size == 0:
            return []
        qc = self.config.query
        m = self._model()
        scores = self._decoded(name).scores(t)
        with torch.no_grad():
            opaque = torch.sigmoid(m.opacity_logits.detach()) >= qc.min_opacity
        scores = torch.where(opaque, scores, torch.full_like(scores, -2.0))
        best = float(scores.max())
        thr = max(float(min_score), best - qc.score_margin)
        cand = torch.nonzero(scores >= thr).squeeze(1)
        if cand.numel() == 0:
            return []
        if cand.numel() > qc.max_candidates:
            cand = cand[torch.topk(scores[cand], qc.max_candidates).indices]
        cand = cand.numpy()
        s = scores.numpy()[cand]
        xyz = m.means.detach().numpy()[cand]
        labels = cluster_points(xyz, qc.cluster_eps_m)
        hits = []
        for c in np.unique(labels):
            sel = labels == c
            if sel.sum() < qc.min_support:
                continue
            hits.append(_make_hit(text.strip(), xyz[sel], s[sel], cand[sel]))
        hits.sort(key=lambda h: (-h.score, -h.support))
        return hits[: int(top_k)]

    # ------------------------------------------------------------------ rendering
    def render(self, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray, text: str | None = None,
               decode: bool = True, extractor: str | None = None) -> RenderedView:
        """Render colour, depth, decoded features (per model) and optionally a text heat map."""
        self._model()
        out = self.mapper.render(intrinsics, np.asarray(T_world_camera, np.float64), with_queries=True)
        alpha = out.alpha.numpy()
        rgb = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        depth = np.where(alpha > 0.5, out.depth.numpy(), 0.0).astype(np.float32)
        feats: dict[str, np.ndarray] = {}
        heat = None
        if out.features is not None:
            q = self.mapper.split_queries(out.features)
            need = set(self.extractors) if decode else set()
            if text is not None:
                need.add(self._text_extractor(extractor))
            decoded = {}
            for name in need:
                if self.attention[name].bank_size == 0:
                    continue
                H, W = q[name].shape[:2]
                decoded[name] = self.attention[name].decode_chunked(q[name].reshape(H * W, -1)).reshape(H, W, -1)
            if decode:
                feats = {n: v.numpy() for n, v in decoded.items()}
            if text is not None:
                name = self._text_extractor(extractor)
                t = self._text_vector(name, text)
                if name in decoded:
                    heat = (F.normalize(decoded[name], dim=-1) @ t).numpy().astype(np.float32)
                    heat = np.where(alpha > 0.05, heat, 0.0).astype(np.float32)
        return RenderedView(rgb=rgb, depth=depth, heatmap=heat, features=feats, alpha=alpha)

    def heatmap(self, text: str, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray,
                extractor: str | None = None) -> np.ndarray:
        """``[H, W] float32`` cosine between decoded rendered features and the text (0 where empty)."""
        name = self._text_extractor(extractor)
        self._text_vector(name, text)
        view = self.render(intrinsics, T_world_camera, text=text, decode=False, extractor=name)
        if view.heatmap is None:
            raise EmptyMapError(f"model {name!r} has no principal scene components yet")
        return view.heatmap

    # ------------------------------------------------------------------ what is here
    def what_is_here(self, position: np.ndarray, k: int = 3, radius: float = 0.3,
                     vocabulary: list[str] | None = None, extractor: str | None = None) -> list[tuple[str, float]]:
        """Best-matching labels for the Gaussians within ``radius`` of ``position [3]``.

        The opacity-weighted mean decoded feature of those Gaussians is compared with the
        embeddings of ``vocabulary`` (default: every label seen in ingested frames).
        Returns up to ``k`` ``(label, cosine)`` pairs, best first; empty if nothing is near.
        """
        name = self._text_extractor(extractor)
        vocab = list(vocabulary) if vocabulary is not None else list(self.vocabulary)
        if not vocab:
            raise QueryError("what_is_here needs a vocabulary (none given and no labels seen yet)")
        p = np.asarray(position, np.float64).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise QueryError(f"position must be 3 finite numbers, got {position!r}")
        if self.num_gaussians == 0 or self.attention[name].bank_size == 0:
            return []
        m = self._model()
        with torch.no_grad():
            d = torch.linalg.vector_norm(m.means.detach().double() - torch.from_numpy(p), dim=1)
            ids = torch.nonzero(d <= radius).squeeze(1)
            if ids.numel() == 0:
                return []
            w = torch.sigmoid(m.opacity_logits.detach()[ids])
            feat = F.normalize(self._decoded(name).mean_feature(ids, w), dim=0)
        emb = torch.from_numpy(self.extractors[name].encode_text(vocab)).float()
        sims = (F.normalize(emb, dim=1) @ feat).numpy()
        order = np.argsort(-sims)[: int(k)]
        return [(vocab[i], float(sims[i])) for i in order]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the map atomically (safetensors + JSON; see :mod:`spatial_memory.persistence`)."""
        m = self._model()
        gauss = m.state_tensors()  # includes the queries as query.<name>
        att = {}
        for name, a in self.attention.items():
            att[f"W.{name}"] = a.W.detach()
            att[f"bank.{name}"] = torch.from_numpy(np.ascontiguousarray(self.psc[name].bank)) if self.psc[name].size else a.bank
            att[f"counts.{name}"] = torch.from_numpy(self.psc[name].counts.copy()) if self.psc[name].size else torch.zeros(0, dtype=torch.int64)
        tensors = {"gaussians": gauss, "attention": att}
        vocab_name = self._vocab_extractor()
        if vocab_name is not None and self.vocabulary:
            tensors["vocabulary"] = {"embeddings": torch.from_numpy(self.extractors[vocab_name].encode_text(self.vocabulary))}
        meta = {
            "config": self.config.to_dict(),
            "extractors": {n: {"dim": int(ex.dim), "options": ex.config()} for n, ex in self.extractors.items()},
            "vocabulary": list(self.vocabulary),
            "vocabulary_extractor": vocab_name,
            "counts": dict(self.counts),
            "mapper_stats": self.mapper.stats(),
        }
        return save_map_dir(path, MAP_KIND, FORMAT_VERSION, meta, tensors)

    def _vocab_extractor(self) -> str | None:
        try:
            return self._text_extractor(None)
        except QueryError:
            return None

    @classmethod
    def load(cls, path: str | Path, extractors: dict[str, FeatureExtractor] | None = None) -> "M3Memory":
        """Read a map written by :meth:`save`.

        Raises:
            MapFormatError: not an M3 map, another format version, missing or mis-shaped tensors.
        """
        meta, tensors = load_map_dir(path, MAP_KIND, FORMAT_VERSION)
        where = str(path)
        try:
            config = M3Config.from_dict(meta["config"])
        except (KeyError, ConfigError, TypeError) as e:
            raise MapFormatError(f"{where}: bad config in meta.json ({e})") from None
        for stem in ("gaussians", "attention"):
            if stem not in tensors:
                raise MapFormatError(f"{where}: missing tensor file {stem}.safetensors")
        mem = cls(config, extractors=extractors)
        g = tensors["gaussians"]
        n = int(require_tensor(g, "means", (None, 3), f"{where}/gaussians").shape[0])
        for spec in config.extractors:
            require_tensor(g, f"query.{spec.name}", (n, int(spec.query_dim)), f"{where}/gaussians")
        extra = sorted(k for k in g if k.startswith("query.") and k[6:] not in mem.extractors)
        if extra:
            raise MapFormatError(f"{where}/gaussians: queries {extra} belong to no configured extractor")
        try:
            model = GaussianModel.from_state_tensors(g)
        except (ConfigError, ValueError, RuntimeError) as e:
            raise MapFormatError(f"{where}: bad Gaussian tensors ({e})") from None
        for spec in config.extractors:
            dim = mem.extractors[spec.name].dim
            W = require_tensor(tensors["attention"], f"W.{spec.name}", (int(spec.query_dim), dim), f"{where}/attention")
            bank = require_tensor(tensors["attention"], f"bank.{spec.name}", (None, dim), f"{where}/attention")
            counts = require_tensor(tensors["attention"], f"counts.{spec.name}", (bank.shape[0],), f"{where}/attention")
            with torch.no_grad():
                mem.attention[spec.name].W.copy_(W.float())
            mem.attention[spec.name].set_bank(bank.float())
            if bank.shape[0]:
                mem.psc[spec.name].set_bank(bank.float().numpy(), counts.numpy())
        mem.mapper.set_model(model)
        vocab = meta.get("vocabulary", [])
        if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab):
            raise MapFormatError(f"{where}: vocabulary must be a list of strings")
        mem.vocabulary = list(vocab)
        vname = meta.get("vocabulary_extractor")
        if vocab and vname in mem.extractors:
            emb = require_tensor(tensors.get("vocabulary", {}), "embeddings", (len(vocab), mem.extractors[vname].dim),
                                 f"{where}/vocabulary")
            cache = getattr(mem.extractors[vname], "_cache", None)
            if isinstance(cache, dict):  # saves re-encoding the vocabulary after a load
                cache.update({v: e for v, e in zip(vocab, emb.float().numpy())})
        counts = meta.get("counts", {})
        if isinstance(counts, dict):
            mem.counts.update({k: int(v) for k, v in counts.items() if k in mem.counts})
        return mem

    def export_ply(self, path: str | Path) -> Path:
        """Standard 3DGS PLY plus the per-Gaussian queries as ``f_emb_0 .. f_emb_{d-1}``.

        Columns are the models' queries concatenated in sorted model-name order
        (:meth:`ply_embedding_layout` gives the column range of each model).
        """
        m = self._model()
        return m.to_ply(path, {"emb": m.features().detach()})

    def ply_embedding_layout(self) -> dict[str, tuple[int, int]]:
        """``{model: (first, last + 1)}`` columns of ``f_emb_*`` in :meth:`export_ply`."""
        out, c = {}, 0
        for name, d in self._model().query_dims().items():
            out[name] = (c, c + d)
            c += d
        return out


def _neighbour_offsets() -> np.ndarray:
    """Half of the voxel offsets within 2 voxels (|d|^2 <= 4): voxel centres closer than eps."""
    r = range(-2, 3)
    offs = [(a, b, c) for a in r for b in r for c in r if 0 < a * a + b * b + c * c <= 4 and (a, b, c) > (0, 0, 0)]
    return np.array(offs, np.int64)


_OFFSETS = _neighbour_offsets()


def cluster_points(xyz: np.ndarray, eps: float) -> np.ndarray:
    """Cluster labels ``[N]`` of points ``[N, 3]``.

    Equal to DBSCAN with ``min_samples=1`` (single linkage at distance ``eps``) on the centres
    of a voxel grid of size ``eps / 2``: voxels are linked when their centres are within ``eps``
    (offsets of at most 2 cells with squared length <= 4), and clusters are the connected
    components. Voxelising bounds the cost by the occupied volume, not the number of
    Gaussians; one sorted key array and a few ``searchsorted`` calls replace a KD-tree.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(xyz) == 0:
        return np.zeros(0, np.int64)
    cells = np.floor(np.asarray(xyz, np.float64) / (eps * 0.5)).astype(np.int64)
    cells -= cells.min(axis=0) - 2  # a 2-cell margin keeps neighbour keys from wrapping
    dims = cells.max(axis=0) + 3
    lin = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    uniq, inverse = np.unique(lin, return_inverse=True)
    rows, cols = [], []
    for a, b, c in _OFFSETS:
        nb = uniq + (a * dims[1] + b) * dims[2] + c
        pos = np.minimum(np.searchsorted(uniq, nb), len(uniq) - 1)
        hit = uniq[pos] == nb
        rows.append(np.nonzero(hit)[0])
        cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(uniq), len(uniq)))
    _, vox_labels = connected_components(graph, directed=False)
    return vox_labels[inverse.reshape(-1)].astype(np.int64)


def _make_hit(text: str, xyz: np.ndarray, s: np.ndarray, ids: np.ndarray) -> QueryHit:
    w = np.maximum(s, 1e-6).astype(np.float64)
    pos = (w[:, None] * xyz).sum(0) / w.sum()
    lo, hi = np.percentile(xyz, [5, 95], axis=0)
    return QueryHit(label=text, position=pos, extent=hi - lo, score=float(s.mean()), support=int(len(ids)),
                    gaussian_ids=np.asarray(ids, np.int64))
