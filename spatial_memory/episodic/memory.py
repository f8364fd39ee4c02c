"""Online place-centric episodic memory: ingest frames, recall entries, answer task queries.

``EpisodicMemory`` owns a :class:`PlaceClusterer` (places from camera positions), an
:class:`EpisodicStore` (hard budget + write strategy), the observation encoder and the SAT
reader. It never raises on a bad frame: ``ingest`` returns False and records the reason
(``last_error``, ``skipped`` counters), so a ROS node can keep streaming.

``last_seen`` is answered exactly from a small per-label index (one record per category,
updated on every ingested frame whatever the store evicts); ``answer("last_seen", ...)`` is
the reader's learned answer from the budgeted memory.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatial_memory.errors import ConfigError, MapFormatError, QueryError
from spatial_memory.persistence import load_map_dir, require_tensor, save_map_dir
from spatial_memory.types import Frame

from .calibration import META_KEY, Offsets, offset_for, reader_offsets
from .encoder import ObservationEncoder, encode
from .reader import TASK_INDEX, ReaderConfig, SATReader
from .store import STRATEGIES, EpisodicEntry, EpisodicStore, PlaceClusterer
from .tasks import MULTI_LABEL_TASKS, STRUCTURE, TASKS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_KIND = "episodic_weights"
WEIGHTS_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass
class EpisodicConfig:
    """Memory settings.

    Attributes:
        budget: L, the most entries kept.
        strategy: write strategy (``store.STRATEGIES``).
        place_radius: leader-clustering radius (m).
        weights: directory with ``meta.json``, ``encoder.safetensors``, ``reader.safetensors``;
            None = the shipped defaults.
        min_pixels: pixels an instance must cover to count as seen.
    """

    budget: int = 64
    strategy: str = "sat_pm"
    place_radius: float = 2.0
    weights: str | None = None
    min_pixels: int = 4

    def validate(self) -> "EpisodicConfig":
        if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget <= 0:
            raise ConfigError(f"episodic budget must be a positive integer, got {self.budget!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown write strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if not (isinstance(self.place_radius, (int, float)) and math.isfinite(self.place_radius) and self.place_radius > 0):
            raise ConfigError(f"place_radius must be a positive number of metres, got {self.place_radius!r}")
        return self


@dataclass
class LastSeen:
    """Where and when a category was last observed."""

    label: str
    place_id: int
    position: np.ndarray  # [3]
    T_world_camera: np.ndarray  # [4, 4]
    stamp_ns: int


@dataclass
class Answer:
    """A reader answer: ``prediction`` is a label list (what_was_there, first_visit), a place id
    (last_seen) or the place visited first (order); None with ``reason`` when unanswerable."""

    prediction: Any
    confidence: float
    reason: str = ""
    scores: dict = field(default_factory=dict)


@dataclass
class Models:
    """The trained encoder + reader, their label vocabulary, and the optional allocator policy
    weights (``policy_state``, an sb3 ActorCriticPolicy state dict)."""

    encoder: ObservationEncoder
    reader: SATReader
    vocab: list[str]
    meta: dict
    policy_state: dict | None = None
    tfifo_state: dict | None = None  # the T-FIFO baseline reader (evaluation only)

    @property
    def decision_offsets(self) -> Offsets | None:
        """Calibrated decision offsets of the reader's multi-label answers (None: decode at logit 0)."""
        return reader_offsets(self.meta, "reader")

    def tfifo_reader(self) -> SATReader | None:
        """The T-FIFO baseline reader built from ``tfifo_state`` (None when the weights have none)."""
        if self.tfifo_state is None:
            return None
        tfifo = SATReader(self.reader.cfg.time_only())
        tfifo.load_state_dict(self.tfifo_state)
        return tfifo

    @property
    def tfifo_decision_offsets(self) -> Offsets | None:
        """The T-FIFO baseline's own calibrated offsets (None: decode at logit 0)."""
        return reader_offsets(self.meta, "tfifo")

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "Models":
        """Load a weights directory (``meta.json`` + ``encoder``/``reader``[/``policy``] safetensors).

        Raises:
            MapFormatError: missing or inconsistent files (run ``emem episodic train`` to create them).
        """
        d = Path(directory) if directory else DEFAULT_WEIGHTS
        meta, files = load_map_dir(d, WEIGHTS_KIND, WEIGHTS_VERSION)
        if "encoder" not in files or "reader" not in files:
            raise MapFormatError(f"{d}: episodic weights need encoder and reader tensors")
        m = cls.from_state(meta, files["encoder"], files["reader"], files.get("policy"))
        m.tfifo_state = files.get("tfifo")
        return m

    @classmethod
    def from_state(cls, meta: dict, enc_sd: dict, rd_sd: dict, policy_state: dict | None = None) -> "Models":
        try:
            vocab = list(meta["vocab"])
            # reader fields added after some weights were written default to the behaviour those
            # weights were trained with (no place-pooled read, order gate on absolute steps)
            rcfg = ReaderConfig(**{"place_pool": False, "order_gate_relative": False, **meta["reader"]})
            enc = ObservationEncoder(len(vocab), int(meta["encoder"]["dim"]))
            enc.load_state_dict(enc_sd)
            reader = SATReader(rcfg)
            reader.load_state_dict(rd_sd)
        except (KeyError, TypeError, RuntimeError) as e:
            raise MapFormatError(f"episodic weights do not match their meta.json ({e})") from None
        enc.eval()
        reader.eval()
        return cls(enc, reader, vocab, meta, policy_state)

    def save(self, directory: str | Path) -> Path:
        """Write the weights directory (atomic, via persistence; replaces ``directory``)."""
        reserved = ("vocab", "reader", "encoder", "kind", "format_version", "tensors")
        meta = {"vocab": self.vocab, "reader": self.reader.cfg.to_dict(), "encoder": {"dim": self.encoder.dim},
                **{k: v for k, v in self.meta.items() if k not in reserved}}
        files = {"encoder": self.encoder.state_dict(), "reader": self.reader.state_dict()}
        if self.policy_state is not None:
            files["policy"] = {k: v.contiguous() for k, v in self.policy_state.items()}
        if self.tfifo_state is not None:
            files["tfifo"] = {k: v.contiguous() for k, v in self.tfifo_state.items()}
        return save_map_dir(directory, WEIGHTS_KIND, WEIGHTS_VERSION, meta, files)


def _heading(T: np.ndarray) -> float:
    """Yaw of the optical axis (camera z) projected on the world floor plane."""
    z = T[:3, 2]
    return float(math.atan2(z[1], z[0]))


class EpisodicMemory:
    """Budgeted place-centric episodic memory with a SAT reader (see module docstring)."""

    def __init__(self, config: EpisodicConfig | None = None, models: Models | None = None) -> None:
        self.config = (config or EpisodicConfig()).validate()
        self.models = models or Models.load(self.config.weights)
        self.store = EpisodicStore(self.config.budget, self.config.strategy)
        self.places = PlaceClusterer(self.config.place_radius)
        self._last_seen: dict[str, LastSeen] = {}
        self.step = 0
        self.skipped: Counter[str] = Counter()
        self.last_error = ""

    # ----------------------------------------------------------------- writing
    def _reject(self, frame: Any, reason: str) -> bool:
        self.skipped[reason.split(":")[0]] += 1
        self.last_error = reason
        log.warning("episodic: skipped frame %s: %s", getattr(frame, "index", "?"), reason)
        return False

    def ingest(self, frame: Frame) -> bool:
        """Encode and remember one frame; False (with ``last_error``) for unusable frames."""
        if not isinstance(frame, Frame):
            return self._reject(frame, f"not a Frame: got {type(frame).__name__}")
        T = frame.T_world_camera
        if T is None:
            return self._reject(frame, "no pose: T_world_camera is None")
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return self._reject(frame, "bad pose: T_world_camera must be a finite 4x4 matrix")
        rgb = frame.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
            return self._reject(frame, f"bad rgb: need HxWx3 uint8, got {getattr(rgb, 'shape', None)}")
        try:
            emb = encode(self.models.encoder, rgb)[0]
        except Exception as e:  # the encoder must never take the stream down
            return self._reject(frame, f"encoder failed: {e}")
        labels = self._labels(frame)
        pos = T[:3, 3].copy()
        place = self.places.assign(pos)
        e = EpisodicEntry(emb, place, pos, _heading(T), int(frame.stamp_ns), labels, self.step, T)
        self.store.write(e)
        for lab in labels:
            self._last_seen[lab] = LastSeen(lab, place, pos, T, int(frame.stamp_ns))
        self.step += 1
        return True

    def _labels(self, frame: Frame) -> list[str]:
        if frame.instance_ids is None or not frame.id_to_label:
            return []
        ids, counts = np.unique(frame.instance_ids, return_counts=True)
        out = {frame.id_to_label.get(int(i)) for i, c in zip(ids, counts) if i > 0 and c >= self.config.min_pixels}
        return sorted(l for l in out if l and l not in STRUCTURE)

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.store)

    def recall(self, place_id: int | None = None, position: np.ndarray | None = None, radius: float | None = None,
               t_min_ns: int | None = None, t_max_ns: int | None = None) -> list[EpisodicEntry]:
        """Stored entries matching all filters (chronological).

        Raises:
            QueryError: unknown place id, position without radius, non-finite values.
        """
        if place_id is not None:
            self._check_place(place_id)
        return self.store.recall(place_id, position, radius, t_min_ns, t_max_ns)

    def last_seen(self, label: str) -> LastSeen | None:
        """Last sighting of ``label`` or None (reason in ``last_error``) if never seen."""
        ls = self._last_seen.get(label)
        if ls is None:
            self.last_error = f"label {label!r} was never seen"
        return ls

    def _check_place(self, place_id: Any) -> int:
        if isinstance(place_id, bool) or not isinstance(place_id, (int, np.integer)):
            raise QueryError(f"place_id must be an integer, got {place_id!r}")
        if not 0 <= int(place_id) < self.places.n_places:
            raise QueryError(f"unknown place id {place_id}; known places are 0..{self.places.n_places - 1}")
        return int(place_id)

    def _query_args(self, task: str, args: dict) -> np.ndarray:
        if task in ("what_was_there", "first_visit"):
            return np.array([self._check_place(args.get("place_id")), -1])
        if task == "last_seen":
            label = args.get("label")
            if label not in self.models.vocab:
                raise QueryError(f"label {label!r} is not in the reader's vocabulary {self.models.vocab}")
            return np.array([self.models.vocab.index(label), -1])
        if task == "order":
            a, b = self._check_place(args.get("place_a")), self._check_place(args.get("place_b"))
            if a == b:
                raise QueryError("order needs two different places")
            return np.array([a, b])
        raise QueryError(f"unknown task {task!r}; choose one of {list(TASKS)}")

    @torch.no_grad()
    def answer(self, task: str, args: dict) -> Answer:
        """Ask the reader.

        Args:
            task: one of ``TASKS``.
            args: ``{"place_id"}`` (what_was_there, first_visit), ``{"label"}`` (last_seen),
                ``{"place_a", "place_b"}`` (order).

        Raises:
            QueryError: unknown task, place or label.
        """
        if not isinstance(args, dict):
            raise QueryError(f"task args must be a dict, got {type(args).__name__}")
        a = self._query_args(task, args)
        entries = self.store.entries()
        if not entries:
            return Answer(None, 0.0, "memory is empty")
        emb = torch.from_numpy(np.stack([e.embedding for e in entries]))[None]
        step = torch.tensor([[e.step for e in entries]])
        place = torch.tensor([[e.place_id for e in entries]])
        mask = torch.ones_like(step, dtype=torch.bool)
        out = self.models.reader(emb, step, place, mask, torch.tensor([TASK_INDEX[task]]), torch.from_numpy(a)[None])
        logits = out[task][0]
        if task in MULTI_LABEL_TASKS:
            # the calibrated threshold (nearest calibrated budget); scores are the shifted probabilities,
            # so a label is predicted exactly when its score exceeds 0.5
            p = torch.sigmoid(logits + offset_for(self.models.decision_offsets, task, self.config.budget)).numpy()
            chosen = [self.models.vocab[i] for i in np.flatnonzero(p > 0.5)]
            conf = float(np.mean(np.where(p > 0.5, p, 1 - p)))  # mean certainty of every per-label decision
            return Answer(chosen, conf, scores={l: float(x) for l, x in zip(self.models.vocab, p)})
        p = torch.softmax(logits, -1).numpy()
        if task == "last_seen":
            known = np.zeros_like(p)
            n = min(self.places.n_places, len(p))
            known[:n] = p[:n]  # only places that exist can be answered
            i = int(np.argmax(known))
            return Answer(i, float(known[i] / max(known.sum(), 1e-12)))
        first = int(a[0]) if p[1] >= p[0] else int(a[1])
        return Answer(first, float(max(p)))

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the memory (entries, places, models) as a versioned ``episodic`` map directory."""
        entries = self.store.entries()
        n = len(entries)
        labels = sorted({l for e in entries for l in e.labels} | set(self._last_seen))
        li = {l: i for i, l in enumerate(labels)}
        multi = np.zeros((n, len(labels)), np.uint8)
        for k, e in enumerate(entries):
            multi[k, [li[l] for l in e.labels]] = 1
        D = self.models.encoder.dim
        T_all = np.stack([e.T_world_camera if e.T_world_camera is not None else np.full((4, 4), np.nan) for e in entries]) if n else np.zeros((0, 4, 4))
        tensors = {
            "embedding": np.stack([e.embedding for e in entries]).astype(np.float32) if n else np.zeros((0, D), np.float32),
            "place": np.array([e.place_id for e in entries], np.int64),
            "position": np.array([e.position for e in entries], np.float64).reshape(n, 3),
            "heading": np.array([e.heading for e in entries], np.float64),
            "stamp_ns": np.array([e.stamp_ns for e in entries], np.int64),
            "step": np.array([e.step for e in entries], np.int64),
            "T_world_camera": T_all.astype(np.float64),
            "labels": multi,
        }
        meta = {
            "config": asdict(self.config),
            "labels": labels,
            "places": self.places.state(),
            "visits": {str(k): v for k, v in self.store.visits.items()},
            "counters": {"step": self.step, "n_writes": self.store.n_writes, "n_evictions": self.store.n_evictions,
                         "n_skipped": self.store.n_skipped},
            "last_seen": {l: {"place_id": s.place_id, "position": s.position.tolist(), "T_world_camera": s.T_world_camera.tolist(),
                              "stamp_ns": s.stamp_ns} for l, s in self._last_seen.items()},
            "models": {"vocab": self.models.vocab, "reader": self.models.reader.cfg.to_dict(),
                       "encoder": {"dim": self.models.encoder.dim},
                       # the calibrated decision thresholds travel with the reader (absent in old maps)
                       **({META_KEY: self.models.meta[META_KEY]} if META_KEY in self.models.meta else {})},
        }
        return save_map_dir(path, "episodic", FORMAT_VERSION, meta, {
            "entries": tensors, "encoder": self.models.encoder.state_dict(), "reader": self.models.reader.state_dict()})

    @classmethod
    def load(cls, path: str | Path) -> "EpisodicMemory":
        """Read a directory written by :meth:`save`.

        Raises:
            MapFormatError: wrong kind/version, missing tensors, inconsistent shapes.
        """
        meta, files = load_map_dir(path, "episodic", FORMAT_VERSION)
        try:
            cfg = EpisodicConfig(**meta["config"])
            models = Models.from_state(meta["models"], files["encoder"], files["reader"])
            t = files["entries"]
            labels = list(meta["labels"])
        except (KeyError, TypeError) as e:
            raise MapFormatError(f"{path}: episodic map is missing {e}") from None
        mem = cls(cfg, models)
        n = int(t["step"].shape[0]) if "step" in t else 0
        where = f"{path}/entries.safetensors"
        emb = require_tensor(t, "embedding", (n, models.encoder.dim), where).numpy()
        place = require_tensor(t, "place", (n,), where).numpy()
        pos = require_tensor(t, "position", (n, 3), where).numpy()
        head = require_tensor(t, "heading", (n,), where).numpy()
        stamp = require_tensor(t, "stamp_ns", (n,), where).numpy()
        step = require_tensor(t, "step", (n,), where).numpy()
        Ts = require_tensor(t, "T_world_camera", (n, 4, 4), where).numpy()
        multi = require_tensor(t, "labels", (n, len(labels)), where).numpy()
        mem.places = PlaceClusterer.from_state(meta["places"])
        for k in range(n):
            Tk = None if np.isnan(Ts[k]).any() else Ts[k]
            e = EpisodicEntry(emb[k], int(place[k]), pos[k], float(head[k]), int(stamp[k]),
                              [labels[i] for i in np.flatnonzero(multi[k])], int(step[k]), Tk)
            mem.store.write(e)
        mem.store.visits = {int(k): int(v) for k, v in meta["visits"].items()}
        c = meta["counters"]
        mem.step = int(c["step"])
        mem.store.n_writes, mem.store.n_evictions, mem.store.n_skipped = int(c["n_writes"]), int(c["n_evictions"]), int(c["n_skipped"])
        mem._last_seen = {l: LastSeen(l, int(s["place_id"]), np.asarray(s["position"]), np.asarray(s["T_world_camera"]), int(s["stamp_ns"]))
                          for l, s in meta["last_seen"].items()}
        return mem
