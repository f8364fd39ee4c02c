"""Embodied episodic-memory tasks generated from simulator episodes.

An *episode* is an agent walking room to room through a procedural apartment: a first tour
visits every room once, then rooms are revisited with skewed (Zipf-like) probabilities. Each
visit stands at one spot and scans an arc (``frames_per_visit`` views spread over
``look_arc_deg``), so two visits of one place need not see the same things.
Between visits, objects are sometimes moved to another room (the mesh instance is translated
and the view re-rendered), so old and new memories disagree.

Places come from :class:`~spatial_memory.episodic.store.PlaceClusterer` on camera positions
(never from room ids). Four query types, each with its own answer:

* ``what_was_there``  place p -> multi-hot of the categories ever seen from p.
* ``last_seen``       category c -> the place of the last frame in which c was visible.
* ``first_visit``     place p -> multi-hot of the categories seen during p's first visit
  (places whose view changed are preferred, so old memories matter).
* ``order``           places (p, q) -> 1 if p was first visited before q, else 0.

Episodes are cached as ``<cache>/<key>/<name>.safetensors`` + ``.json`` (no pickle); the key
hashes the generation config so a config change never reads stale episodes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from spatial_memory.errors import ConfigError
from spatial_memory.geometry import make_pose, yaw_pitch_to_rotation
from spatial_memory.types import CameraIntrinsics

from .store import PlaceClusterer

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("what_was_there", "last_seen", "first_visit", "order")
MULTI_LABEL_TASKS = ("what_was_there", "first_visit")
STRUCTURE = {"wall", "floor", "ceiling", "door_frame", "window", "door"}
EPISODE_FORMAT = 3  # bump whenever generation changes: it is part of the cache key


@dataclass
class EpisodeConfig:
    """How episodes are generated (all lengths in frames, distances in metres)."""

    scene_generator: str = "apartment"  # "apartment" (sim.apartment) or "toy" (toyscene)
    n_rooms: int = 4
    n_steps: int = 192
    frames_per_visit: tuple[int, int] = (6, 10)
    visit_skew: float = 1.5  # room weights ~ rank^-skew after the first tour
    n_moves: tuple[int, int] = (2, 4)  # objects moved per episode (inclusive range)
    width: int = 64
    height: int = 48
    hfov_deg: float = 80.0
    camera_height: float = 1.3
    pitch: float = -0.3
    look_arc_deg: float = 180.0  # each visit scans this arc (a partial look: visits see different things)
    min_pixels: int = 12  # an instance is "seen" when it covers at least this many pixels (0.4 % of 64x48)
    place_radius: float = 2.0
    place_slots: int = 32  # place ids are relabelled into random distinct slots in [0, place_slots)
    queries_per_task: int = 8

    def key(self) -> str:
        return hashlib.sha1(json.dumps({**asdict(self), "format": EPISODE_FORMAT}, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Episode:
    """One generated episode (T steps, C categories, Q queries per task).

    Attributes:
        name: ``"<scene seed>_<walk seed>"``.
        rgb: ``[T, H, W, 3] uint8`` rendered views.
        positions: ``[T, 3]`` camera positions; headings ``[T]`` yaw (rad).
        places: ``[T] int64`` place ids from the clusterer.
        seen: ``[T, C] bool`` categories visible per step (ground truth, used for targets).
        rooms: ``[T] int64`` simulator room id (evaluation only, never read by memories).
        visit: ``[T] int64`` walk visit index of each step.
        queries: ``{task: {"args": [Q, 2] int64, "cls": [Q] int64, "multi": [Q, C] float32}}``.
        moves: the object moves (step, label, from/to room) for reports.
        embeddings: ``[T, D] float32`` once an encoder has been applied.
    """

    name: str
    rgb: np.ndarray
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


# ----------------------------------------------------------------------------- scenes
def make_scene(generator: str, seed: int, n_rooms: int):
    """A scene from the simulator's apartment generator or the built-in toy scene."""
    if generator == "apartment":
        try:
            from sim.apartment import generate_apartment
        except ImportError as e:
            raise ConfigError(f"scene_generator 'apartment' needs sim.apartment ({e}); use 'toy'") from None
        return generate_apartment(seed, n_rooms=n_rooms)
    if generator == "toy":
        from .toyscene import make_toy_apartment

        return make_toy_apartment(seed, n_rooms=n_rooms)
    raise ConfigError(f"unknown scene_generator {generator!r}; choose 'apartment' or 'toy'")


def object_labels(scene) -> list[str]:
    """Non-structure categories of a scene, sorted."""
    return sorted({o.label for o in scene.objects if o.label not in STRUCTURE})


def _move_object(scene, instance_id: int, delta: np.ndarray) -> None:
    """Translate one instance in place (its triangles get private vertex copies first)."""
    tri_mask = scene.tri_instance == instance_id
    if not tri_mask.any():
        return
    tris = scene.triangles[tri_mask]
    used = np.unique(tris)
    new_idx = np.arange(len(scene.vertices), len(scene.vertices) + len(used), dtype=scene.triangles.dtype)
    remap = np.zeros(len(scene.vertices), dtype=scene.triangles.dtype)
    remap[used] = new_idx
    scene.vertices = np.concatenate([scene.vertices, scene.vertices[used] + delta.astype(scene.vertices.dtype)])
    scene.triangles = scene.triangles.copy()
    scene.triangles[tri_mask] = remap[tris]
    obj = scene.object(instance_id)
    obj.aabb_min = np.asarray(obj.aabb_min, float) + delta
    obj.aabb_max = np.asarray(obj.aabb_max, float) + delta


def _free_spot(scene, room, rng: np.random.Generator, half: np.ndarray, margin: float, avoid: int = -1) -> np.ndarray | None:
    """A floor point in ``room`` at least ``half + margin`` from walls and clear of object footprints."""
    lo = np.asarray(room.xy_min, float) + half + margin
    hi = np.asarray(room.xy_max, float) - half - margin
    if np.any(hi <= lo):
        return None
    boxes = [(np.asarray(o.aabb_min[:2]), np.asarray(o.aabb_max[:2])) for o in scene.objects
             if o.label not in STRUCTURE and o.instance_id != avoid]
    for _ in range(60):
        p = rng.uniform(lo, hi)
        if all(np.any(p + half + 0.15 < a) or np.any(p - half - 0.15 > b) for a, b in boxes):
            return p
    return None


# ----------------------------------------------------------------------------- episodes
def generate_episode(scene_seed: int, walk_seed: int, cfg: EpisodeConfig, vocab: list[str]) -> Episode:
    """Walk, move objects, render and derive the four query sets of one episode."""
    from sim.renderer import Renderer

    scene = copy.deepcopy(make_scene(cfg.scene_generator, scene_seed, cfg.n_rooms))
    rng = np.random.default_rng([scene_seed, walk_seed, 7])
    rooms = list(scene.rooms)
    if len(rooms) < 2:
        raise ConfigError(f"episodes need a scene with >= 2 rooms, {scene.name} has {len(rooms)}")
    label_index = {l: i for i, l in enumerate(vocab)}
    intr = CameraIntrinsics.from_fov(cfg.width, cfg.height, cfg.hfov_deg)

    # visit plan: a first tour, then skewed revisits (no immediate repeats)
    order = rng.permutation(len(rooms))
    weights = np.empty(len(rooms))
    weights[rng.permutation(len(rooms))] = (np.arange(len(rooms)) + 1.0) ** -cfg.visit_skew
    weights /= weights.sum()
    plan: list[int] = list(order)
    while len(plan) * cfg.frames_per_visit[0] < cfg.n_steps + cfg.frames_per_visit[1]:
        w = weights.copy()
        w[plan[-1]] = 0
        plan.append(int(rng.choice(len(rooms), p=w / w.sum())))
    n_moves = int(rng.integers(cfg.n_moves[0], cfg.n_moves[1] + 1))
    move_at = set(rng.choice(np.arange(len(rooms), len(plan) - 1), size=min(n_moves, len(plan) - len(rooms) - 1), replace=False).tolist())

    renderer = Renderer(scene)
    movable = [o for o in scene.objects if o.label not in STRUCTURE and o.label in label_index]
    T = cfg.n_steps
    rgb = np.zeros((T, cfg.height, cfg.width, 3), np.uint8)
    positions = np.zeros((T, 3))
    headings = np.zeros(T)
    seen = np.zeros((T, len(vocab)), bool)
    room_ids = np.zeros(T, np.int64)
    visit = np.zeros(T, np.int64)
    moves: list[dict] = []
    t = 0
    for v, r in enumerate(plan):
        if t >= T:
            break
        if v in move_at and movable:
            obj = movable[int(rng.integers(len(movable)))]
            src = scene.room_of(obj.center[:2])
            dests = [x for x in rooms if x.room_id != src]
            dest = dests[int(rng.integers(len(dests)))]
            half = 0.5 * (np.asarray(obj.aabb_max[:2]) - np.asarray(obj.aabb_min[:2]))
            spot = _free_spot(scene, dest, rng, half, 0.1, avoid=obj.instance_id)
            if spot is not None:
                delta = np.array([spot[0] - obj.center[0], spot[1] - obj.center[1], scene.floor_z - obj.aabb_min[2]])
                _move_object(scene, obj.instance_id, delta)
                obj.room_id = dest.room_id
                renderer = Renderer(scene)
                moves.append({"step": t, "label": obj.label, "name": obj.name, "from_room": int(src), "to_room": int(dest.room_id)})
        room = rooms[r]
        stand = _free_spot(scene, room, rng, np.zeros(2), 0.6)
        if stand is None:
            stand = 0.5 * (np.asarray(room.xy_min) + np.asarray(room.xy_max))
        n = int(rng.integers(cfg.frames_per_visit[0], cfg.frames_per_visit[1] + 1))
        yaw0 = rng.uniform(0, 2 * np.pi)
        arc = np.radians(cfg.look_arc_deg)
        for k in range(n):
            if t >= T:
                break
            yaw = yaw0 + arc * (k / max(n - 1, 1) - 0.5) + rng.normal(0, 0.1)
            pos = np.array([stand[0], stand[1], scene.floor_z + cfg.camera_height])  # turns on the spot
            res = renderer.render(intr, make_pose(yaw_pitch_to_rotation(yaw, cfg.pitch), pos))
            ids, counts = np.unique(res.instance_ids, return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                if i > 0 and c >= cfg.min_pixels:
                    lab = scene.object(i).label
                    if lab in label_index:
                        seen[t, label_index[lab]] = True
            rgb[t], positions[t], headings[t] = res.rgb, pos, yaw % (2 * np.pi)
            room_ids[t], visit[t] = room.room_id, v
            t += 1
    places = PlaceClusterer(cfg.place_radius).assign_many(positions)
    # The clusterer numbers places in discovery order, which would give the order task away:
    # relabel them into random distinct slots (ids are arbitrary names for the reader).
    n_places = int(places.max()) + 1
    if n_places > cfg.place_slots:
        raise ConfigError(f"episode {scene_seed}_{walk_seed} has {n_places} places > place_slots {cfg.place_slots}; "
                          "raise place_slots (and the reader's max_places) or place_radius")
    places = rng.permutation(cfg.place_slots)[:n_places][places]
    queries = make_queries(places, seen, visit, rng, cfg.queries_per_task, moved=[label_index[m["label"]] for m in moves])
    return Episode(f"{scene_seed}_{walk_seed}", rgb, positions, headings, places, seen, room_ids, visit, queries, moves)


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

    ps = rng.choice(P, size=q)
    out["what_was_there"] = pack([[p, -1] for p in ps], [-1] * q, [tg["ever"][p] for p in ps])
    changed = [p for p in P if not np.array_equal(tg["first"][p], tg["ever"][p])]
    ps = [changed[int(rng.integers(len(changed)))] if changed and rng.random() < 0.75 else P[int(rng.integers(len(P)))] for _ in range(q)]
    out["first_visit"] = pack([[p, -1] for p in ps], [-1] * q, [tg["first"][p] for p in ps])
    labels = sorted(tg["last_place"])
    mv = [c for c in moved if c in tg["last_place"]]
    cs = [mv[int(rng.integers(len(mv)))] if mv and rng.random() < 0.5 else labels[int(rng.integers(len(labels)))] for _ in range(q)]
    out["last_seen"] = pack([[c, -1] for c in cs], [tg["last_place"][c] for c in cs], np.zeros((q, C)))
    pairs = [rng.choice(P, size=2, replace=False) for _ in range(q)] if len(P) > 1 else [np.array([P[0], P[0]])] * q
    out["order"] = pack(pairs, [int(tg["first_step"][a] < tg["first_step"][b]) for a, b in pairs], np.zeros((q, C)))
    return out


# ----------------------------------------------------------------------------- cache
def _episode_tensors(ep: Episode) -> dict[str, np.ndarray]:
    d = {"rgb": ep.rgb, "positions": ep.positions, "headings": ep.headings, "places": ep.places,
         "seen": ep.seen.astype(np.uint8), "rooms": ep.rooms, "visit": ep.visit}
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
    return Episode(name, t["rgb"], t["positions"], t["headings"], t["places"], t["seen"].astype(bool), t["rooms"],
                   t["visit"], queries, meta.get("moves", []))


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMEM_EPISODIC_CACHE", Path.home() / ".cache" / "embodied_memory" / "episodic"))


@dataclass
class SplitConfig:
    """Disjoint scene seeds per split; ``walks`` episodes per scene."""

    train_scenes: tuple[int, int] = (0, 16)  # [start, stop) seeds
    val_scenes: tuple[int, int] = (100, 104)
    test_scenes: tuple[int, int] = (200, 206)
    walks: int = 4


def build_vocab(cfg: EpisodeConfig, split: SplitConfig) -> list[str]:
    """Object categories over all training scenes (the reader's label space)."""
    labels: set[str] = set()
    for s in range(*split.train_scenes):
        labels.update(object_labels(make_scene(cfg.scene_generator, s, cfg.n_rooms)))
    return sorted(labels)


def load_split(name: str, cfg: EpisodeConfig, split: SplitConfig, vocab: list[str], cache_dir: Path | None = None,
               progress: bool = True) -> list[Episode]:
    """Episodes of one split (``train``/``val``/``test``), generated once and then read from the cache."""
    import numba
    from tqdm import tqdm

    rng_ = {"train": split.train_scenes, "val": split.val_scenes, "test": split.test_scenes}.get(name)
    if rng_ is None:
        raise ConfigError(f"unknown split {name!r}")
    key = hashlib.sha1((cfg.key() + json.dumps(vocab)).encode()).hexdigest()[:12]
    directory = (cache_dir or default_cache_dir()) / key
    out = []
    jobs = [(s, w) for s in range(*rng_) for w in range(split.walks)]
    # The renderer's parallel numba kernels spin-wait on a shared, loaded machine: tiny 64x48
    # views render ~7x faster on one thread.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for s, w in tqdm(jobs, desc=f"episodes {name}", disable=not progress or len(jobs) < 4, leave=False):
            nm = f"{s}_{w}"
            if (directory / f"{nm}.json").is_file() and (directory / f"{nm}.safetensors").is_file():
                out.append(load_episode(directory, nm))
                continue
            ep = generate_episode(s, w, cfg, vocab)
            save_episode(ep, directory)
            out.append(ep)
    finally:
        numba.set_num_threads(threads)
    return out


# ----------------------------------------------------------------------------- scoring
def score_predictions(task: str, pred: np.ndarray, q: dict[str, np.ndarray]) -> np.ndarray:
    """Per-query score in [0, 1].

    Multi-label tasks: F1 of the predicted set (``pred: [Q, C] bool``) against the answer (1 when
    both are empty). Classification tasks: exact match of ``pred: [Q] int``.
    """
    if task in MULTI_LABEL_TASKS:
        t = q["multi"] > 0.5
        p = np.asarray(pred, bool)
        tp = (p & t).sum(1)
        denom = p.sum(1) + t.sum(1)
        return np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))
    return (np.asarray(pred) == q["cls"]).astype(np.float64)
