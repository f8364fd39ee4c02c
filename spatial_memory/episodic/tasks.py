"""Embodied episodic-memory tasks built from plain walk records.

An *episode* is a walk through an apartment recorded by the simulator
(``sim.episodes.generate_record``: views, positions, categories seen per step, visit index).
This module turns such a record into what the memory experiments need, without importing the
simulator: place ids from :class:`~spatial_memory.episodic.store.PlaceClusterer` on camera
positions (never room ids), relabelled into random slots, and four query types:

* ``what_was_there``  place p -> multi-hot of the categories ever seen from p, scored only over
  the episode's *distinctive* categories (seen from at most half of its places, see
  :func:`distinctive_categories`); query places show at least one of them.
* ``last_seen``       category c -> the place of the last frame in which c was visible.
* ``first_visit``     place p -> multi-hot of the categories seen during p's first visit
  (places whose view changed are preferred, so old memories matter).
* ``order``           places (p, q) -> 1 if p was first visited before q, else 0 (balanced).

Episodes are cached as ``<cache>/<key>/<name>.safetensors`` + ``.json`` (no pickle); the key
hashes the generation config so a config change never reads stale episodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from spatial_memory.errors import ConfigError

from .store import PlaceClusterer

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("what_was_there", "last_seen", "first_visit", "order")
MULTI_LABEL_TASKS = ("what_was_there", "first_visit")
STRUCTURE = frozenset({"wall", "floor", "ceiling", "door_frame", "window", "door"})
EPISODE_FORMAT = 5  # bump whenever generation changes: it is part of the cache key (5: what_was_there masks)
# a category seen from more than this share of an episode's places is answered by its label prior
# under any memory, so what_was_there does not score it (see distinctive_categories)
DISTINCTIVE_MAX_SHARE = 0.5
_NOT_WALK = ("place_radius", "place_slots", "queries_per_task")


@dataclass
class EpisodeConfig:
    """How episodes are generated (lengths in frames, distances in metres).

    The walk fields mirror ``sim.episodes.WalkConfig`` (see there); ``place_radius``,
    ``place_slots`` and ``queries_per_task`` are used here.
    """

    scene_generator: str = "apartment"  # "apartment" (sim.apartment) or "toy"
    n_rooms: int = 8
    n_steps: int = 512
    frames_per_visit: tuple[int, int] = (6, 12)
    yaw_bins: int = 12
    spots_per_room: int = 2
    first_tour: int = 6
    visit_skew: float = 1.5
    n_moves: tuple[int, int] = (4, 8)
    width: int = 64
    height: int = 48
    hfov_deg: float = 80.0
    camera_height: float = 1.3
    pitch: float = -0.3
    min_pixels: int = 150
    place_radius: float = 0.8
    place_slots: int = 32  # place ids are relabelled into random distinct slots in [0, place_slots)
    queries_per_task: int = 8

    def key(self) -> str:
        return hashlib.sha1(json.dumps({**asdict(self), "format": EPISODE_FORMAT}, sort_keys=True).encode()).hexdigest()[:12]

    def walk_kwargs(self) -> dict:
        """The fields of ``sim.episodes.WalkConfig``."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_WALK}


@dataclass
class Episode:
    """One episode (T steps, V distinct views, C categories, Q queries per task).

    Attributes:
        name: ``"<scene seed>_<walk seed>"``.
        views: ``[V, H, W, 3] uint8`` distinct rendered views; view_index: ``[T] int64``.
        positions: ``[T, 3]`` camera positions; headings ``[T]`` yaw (rad).
        places: ``[T] int64`` place ids from the clusterer (relabelled slots).
        seen: ``[T, C] bool`` categories visible per step (ground truth, used for targets).
        rooms: ``[T] int64`` simulator room id (evaluation only, never read by memories).
        visit: ``[T] int64`` walk visit index of each step.
        queries: ``{task: {"args": [Q, 2] int64, "cls": [Q] int64, "multi": [Q, C] float32}}``;
            what_was_there also has ``"mask": [Q, C] float32``, the categories it is scored on.
        moves: the object moves (step, label, from/to room) for reports.
        embeddings: ``[T, D] float32`` once an encoder has been applied.
    """

    name: str
    views: np.ndarray
    view_index: np.ndarray
    positions: np.ndarray
    headings: np.ndarray
    places: np.ndarray
    seen: np.ndarray
    rooms: np.ndarray
    visit: np.ndarray
    queries: dict[str, dict[str, np.ndarray]]
    moves: list[dict] = field(default_factory=list)
    embeddings: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return len(self.places)

    @property
    def rgb(self) -> np.ndarray:
        """``[T, H, W, 3] uint8`` the view of every step."""
        return self.views[self.view_index]

    @property
    def scene(self) -> str:
        """The scene (apartment) seed part of ``name``: walks of one scene share its layout."""
        return self.name.split("_", 1)[0]


def episode_from_record(record, cfg: EpisodeConfig) -> Episode:
    """Places (leader clustering of the record's positions), slot relabelling and queries.

    ``record`` is a plain walk record (``sim.episodes.EpisodeRecord``: ``name``, ``views``,
    ``view_index``, ``positions``, ``headings``, ``seen``, ``rooms``, ``visit``, ``moves``
    whose entries may carry ``label_index``); only its arrays are read.

    Raises:
        ConfigError: more places than ``place_slots``.
    """
    name = str(record.name)
    places = PlaceClusterer(cfg.place_radius).assign_many(np.asarray(record.positions))
    n_places = int(places.max()) + 1
    if n_places > cfg.place_slots:
        raise ConfigError(f"episode {name} has {n_places} places > place_slots {cfg.place_slots}; "
                          "raise place_slots (and the reader's max_places) or place_radius")
    seed = [int(x) for x in name.split("_") if x.isdigit()] or [0]
    rng = np.random.default_rng([*seed, 7])
    # The clusterer numbers places in discovery order, which would give the order task away:
    # relabel them into random distinct slots (ids are arbitrary names for the reader).
    places = rng.permutation(cfg.place_slots)[:n_places][places]
    seen = np.asarray(record.seen, bool)
    moved = [int(m["label_index"]) for m in record.moves if "label_index" in m]
    queries = make_queries(places, seen, np.asarray(record.visit), rng, cfg.queries_per_task, moved=moved)
    return Episode(name, np.asarray(record.views), np.asarray(record.view_index, np.int64),
                   np.asarray(record.positions, np.float64), np.asarray(record.headings, np.float64), places, seen,
                   np.asarray(record.rooms, np.int64), np.asarray(record.visit, np.int64), queries, list(record.moves))


def place_runs(places: np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs ``(place, start, end_exclusive)`` of a ``[T]`` place sequence."""
    runs = []
    start = 0
    for t in range(1, len(places) + 1):
        if t == len(places) or places[t] != places[start]:
            runs.append((int(places[start]), start, t))
            start = t
    return runs


def task_targets(places: np.ndarray, seen: np.ndarray) -> dict:
    """Answers of every possible query of an episode.

    Returns:
        ``{"ever": {p: [C] bool}, "first": {p: [C] bool}, "first_step": {p: int},
        "last_place": {c: place}}``.
    """
    ever, first, first_step = {}, {}, {}
    for p, s, e in place_runs(places):
        ever[p] = ever.get(p, np.zeros(seen.shape[1], bool)) | seen[s:e].any(0)
        if p not in first:
            first[p], first_step[p] = seen[s:e].any(0), s
    last_place = {}
    for c in range(seen.shape[1]):
        ts = np.flatnonzero(seen[:, c])
        if ts.size:
            last_place[c] = int(places[ts[-1]])
    return {"ever": ever, "first": first, "first_step": first_step, "last_place": last_place}


def distinctive_categories(ever: dict[int, np.ndarray], max_share: float = DISTINCTIVE_MAX_SHARE) -> np.ndarray:
    """``[C] bool``: categories seen from at most ``max_share`` of the episode's places.

    Why: a category seen from most places (cabinet from ~80 % of them) is predicted correctly from
    its label prior whether or not memory kept the place, so scoring it measures priors, not
    memory; it is the same reasoning that keeps walls and floors out of the vocabulary. Categories
    the episode never showed stay in (predicting one is an error a memory can avoid). When no
    category seen in the episode qualifies (e.g. an episode with a single place) every category
    counts.

    Args:
        ever: ``{place: [C] bool}`` categories ever seen from each place (``task_targets()["ever"]``).
    """
    if not ever:
        raise ConfigError("distinctive_categories needs at least one place")
    share = np.stack([np.asarray(v, bool) for v in ever.values()]).mean(0)
    dist = share <= max_share
    return dist if (dist & (share > 0)).any() else np.ones_like(dist)


def make_queries(places: np.ndarray, seen: np.ndarray, visit: np.ndarray, rng: np.random.Generator, q: int,
                 moved: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """``q`` queries per task with their answers (see module docstring)."""
    tg = task_targets(places, seen)
    C = seen.shape[1]
    P = sorted(tg["ever"])
    out: dict[str, dict[str, np.ndarray]] = {}

    def pack(args, cls, multi):
        return {"args": np.asarray(args, np.int64).reshape(-1, 2), "cls": np.asarray(cls, np.int64),
                "multi": np.asarray(multi, np.float32).reshape(-1, C)}

    dist = distinctive_categories(tg["ever"])
    # a place that showed no distinctive category has nothing for memory to recall: ask about the others
    ps = rng.choice(distinctive_places(tg["ever"], dist) or P, size=q)
    out["what_was_there"] = pack([[p, -1] for p in ps], [-1] * q, [tg["ever"][p] for p in ps])
    out["what_was_there"]["mask"] = np.tile(dist.astype(np.float32), (q, 1))
    changed = [p for p in P if not np.array_equal(tg["first"][p], tg["ever"][p])]
    ps = [changed[int(rng.integers(len(changed)))] if changed and rng.random() < 0.75 else P[int(rng.integers(len(P)))] for _ in range(q)]
    out["first_visit"] = pack([[p, -1] for p in ps], [-1] * q, [tg["first"][p] for p in ps])
    labels = sorted(tg["last_place"])
    mv = [c for c in moved if c in tg["last_place"]]
    cs = [mv[int(rng.integers(len(mv)))] if mv and rng.random() < 0.5 else labels[int(rng.integers(len(labels)))] for _ in range(q)]
    out["last_seen"] = pack([[c, -1] for c in cs], [tg["last_place"][c] for c in cs], np.zeros((q, C)))
    pairs = []
    for k in range(q):  # balanced answers: a majority-class guess scores 50 %
        a, b = sorted(rng.choice(P, size=2, replace=False), key=lambda x: tg["first_step"][x]) if len(P) > 1 else (P[0], P[0])
        pairs.append(np.array([a, b] if k % 2 == 0 else [b, a]))
    out["order"] = pack(pairs, [int(tg["first_step"][a] < tg["first_step"][b]) for a, b in pairs], np.zeros((q, C)))
    return out


def distinctive_places(ever: dict[int, np.ndarray], dist: np.ndarray) -> list[int]:
    """Sorted places that showed at least one category of ``dist: [C] bool``."""
    return sorted(p for p, v in ever.items() if (np.asarray(v, bool) & dist).any())


# ----------------------------------------------------------------------------- cache
def _episode_tensors(ep: Episode) -> dict[str, np.ndarray]:
    d = {"views": ep.views, "view_index": ep.view_index, "positions": ep.positions, "headings": ep.headings,
         "places": ep.places, "seen": ep.seen.astype(np.uint8), "rooms": ep.rooms, "visit": ep.visit}
    for task, q in ep.queries.items():
        for k, v in q.items():
            d[f"q.{task}.{k}"] = v
    return {k: np.ascontiguousarray(v) for k, v in d.items()}


def save_episode(ep: Episode, directory: Path) -> None:
    """Write ``<name>.safetensors`` + ``<name>.json`` (atomic rename of each file)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{ep.name}.tmp.safetensors"
    save_file(_episode_tensors(ep), str(tmp))
    os.replace(tmp, directory / f"{ep.name}.safetensors")
    meta = {"format": EPISODE_FORMAT, "name": ep.name, "moves": ep.moves}
    (directory / f".{ep.name}.tmp.json").write_text(json.dumps(meta))
    os.replace(directory / f".{ep.name}.tmp.json", directory / f"{ep.name}.json")


def load_episode(directory: Path, name: str) -> Episode:
    meta = json.loads((directory / f"{name}.json").read_text())
    t = load_file(str(directory / f"{name}.safetensors"))
    queries: dict[str, dict[str, np.ndarray]] = {}
    for k, v in t.items():
        if k.startswith("q."):
            _, task, field_ = k.split(".")
            queries.setdefault(task, {})[field_] = v
    return Episode(name, t["views"], t["view_index"], t["positions"], t["headings"], t["places"], t["seen"].astype(bool),
                   t["rooms"], t["visit"], queries, meta.get("moves", []))


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMEM_EPISODIC_CACHE", Path.home() / ".cache" / "embodied_memory" / "episodic"))


@dataclass
class SplitConfig:
    """Disjoint scene seeds per split; ``walks`` episodes per scene."""

    train_scenes: tuple[int, int] = (0, 16)  # [start, stop) seeds
    val_scenes: tuple[int, int] = (100, 104)
    test_scenes: tuple[int, int] = (200, 206)
    walks: int = 4

    def seeds(self, name: str) -> range:
        """Scene seeds of split ``train``/``val``/``test``."""
        r = {"train": self.train_scenes, "val": self.val_scenes, "test": self.test_scenes}.get(name)
        if r is None:
            raise ConfigError(f"unknown split {name!r}; choose train, val or test")
        return range(*r)


RecordFn = Callable[[int, int], object]  # (scene seed, walk seed) -> a walk record (see episode_from_record)


def load_split(name: str, cfg: EpisodeConfig, split: SplitConfig, vocab: list[str], generate: RecordFn,
               cache_dir: Path | None = None, progress: bool = True) -> list[Episode]:
    """Episodes of one split, generated once with ``generate`` and then read from the cache."""
    from tqdm import tqdm

    seeds = split.seeds(name)
    key = hashlib.sha1((cfg.key() + json.dumps(vocab)).encode()).hexdigest()[:12]
    directory = (cache_dir or default_cache_dir()) / key
    out = []
    jobs = [(s, w) for s in seeds for w in range(split.walks)]
    for s, w in tqdm(jobs, desc=f"episodes {name}", disable=not progress or len(jobs) < 4, leave=False):
        nm = f"{s}_{w}"
        if (directory / f"{nm}.json").is_file() and (directory / f"{nm}.safetensors").is_file():
            out.append(load_episode(directory, nm))
            continue
        ep = episode_from_record(generate(s, w), cfg)
        save_episode(ep, directory)
        out.append(ep)
    return out


# ----------------------------------------------------------------------------- scoring
def score_predictions(task: str, pred: np.ndarray, q: dict[str, np.ndarray]) -> np.ndarray:
    """Per-query score in [0, 1].

    Multi-label tasks: F1 of the predicted set (``pred: [Q, C] bool``) against the answer (1 when
    both are empty), both restricted to ``q["mask"]`` (``[Q, C]``) when the queries carry one
    (what_was_there: the episode's distinctive categories). Classification tasks: exact match of
    ``pred: [Q] int``.
    """
    if task in MULTI_LABEL_TASKS:
        keep = q["mask"] > 0.5 if "mask" in q else True
        t = (q["multi"] > 0.5) & keep
        p = np.asarray(pred, bool) & keep
        tp = (p & t).sum(1)
        denom = p.sum(1) + t.sum(1)
        return np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))
    return (np.asarray(pred) == q["cls"]).astype(np.float64)
