"""Simulated walks for the episodic-memory experiments: plain episode records, no memory logic.

An episode is an agent walking room to room through an apartment (``sim.apartment``) or a
built-in toy scene. Each room has one fixed *standing spot* near its centre for the whole
episode; a visit stands there and scans ``frames_per_visit`` consecutive headings out of
``yaw_bins`` evenly spaced ones, so one visit sees only part of the room and two visits of a
room see different parts. Rooms are *discovered gradually*: a first tour covers
``first_tour`` rooms, the others are first entered at random later points of the episode, and
revisits follow Zipf-like weights (``rank^-visit_skew``), so a few rooms take most of the
time and some are seen only once or twice. Between visits objects are moved to other rooms.

Why this shape: with episode lengths well above the memory budget, the information each
episodic task needs lives in different parts of the stream (first visits early, last
sightings late, rarely visited rooms anywhere), which is what makes write strategies differ.

The output :class:`EpisodeRecord` holds numpy arrays and lists only. Views are rendered once
per (scene state, room, heading bin) and shared by the steps that see them (``view_index``),
which keeps generation and the episode cache small. Place ids, queries and answers are built
by the memory layer (``spatial_memory.episodic.tasks``) from these records.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from spatial_memory.episodic.tasks import STRUCTURE
from spatial_memory.errors import ConfigError
from spatial_memory.geometry import make_pose, yaw_pitch_to_rotation
from spatial_memory.types import CameraIntrinsics

from .scene import Material, Room, Scene, SceneObject



@dataclass
class WalkConfig:
    """How a walk is generated (lengths in frames, distances in metres, angles in degrees/radians)."""

    scene_generator: str = "apartment"  # "apartment" (sim.apartment) or "toy"
    n_rooms: int = 6
    n_steps: int = 384
    frames_per_visit: tuple[int, int] = (4, 8)  # inclusive range
    yaw_bins: int = 12  # headings a standing spot can look at (30 degrees apart)
    spots_per_room: int = 1  # standing spots per room (1 or 2: two spots split the room's long axis)
    first_tour: int = 3  # spots visited first, in a row; the others are discovered later
    visit_skew: float = 1.5  # revisit weights ~ rank^-skew
    n_moves: tuple[int, int] = (4, 8)  # objects moved per episode (inclusive range)
    width: int = 64
    height: int = 48
    hfov_deg: float = 80.0
    camera_height: float = 1.3
    pitch: float = -0.3
    min_pixels: int = 12  # an instance is "seen" when it covers at least this many pixels

    def validate(self) -> "WalkConfig":
        if self.spots_per_room not in (1, 2):
            raise ConfigError(f"spots_per_room must be 1 or 2, got {self.spots_per_room}")
        if self.n_steps <= 0 or self.yaw_bins <= 0 or self.n_rooms < 2:
            raise ConfigError(f"walk needs n_steps > 0, yaw_bins > 0, n_rooms >= 2; got {self.n_steps}, "
                              f"{self.yaw_bins}, {self.n_rooms}")
        lo, hi = self.frames_per_visit
        if not 1 <= lo <= hi:
            raise ConfigError(f"frames_per_visit must be 1 <= lo <= hi, got {self.frames_per_visit}")
        if not 1 <= self.first_tour:
            raise ConfigError(f"first_tour must be >= 1, got {self.first_tour}")
        return self


@dataclass
class EpisodeRecord:
    """One simulated walk (T steps, V distinct views, C categories of ``vocab``).

    Attributes:
        name: ``"<scene seed>_<walk seed>"``.
        views: ``[V, H, W, 3] uint8`` distinct rendered views.
        view_index: ``[T] int64`` view shown at each step.
        positions: ``[T, 3]`` camera positions (m); headings: ``[T]`` yaw (rad).
        seen: ``[T, C] bool`` categories visible at each step (ground truth).
        rooms: ``[T] int64`` simulator room id; visit: ``[T] int64`` visit index of each step.
        moves: object moves ``{"step", "label", "name", "from_room", "to_room"}``.
    """

    name: str
    views: np.ndarray
    view_index: np.ndarray
    positions: np.ndarray
    headings: np.ndarray
    seen: np.ndarray
    rooms: np.ndarray
    visit: np.ndarray
    moves: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- scenes
def make_scene(generator: str, seed: int, n_rooms: int) -> Scene:
    """A scene from the apartment generator or the toy generator."""
    if generator == "apartment":
        from .apartment import generate_apartment

        return generate_apartment(seed, n_rooms=n_rooms)
    if generator == "toy":
        return make_toy_apartment(seed, n_rooms=n_rooms)
    raise ConfigError(f"unknown scene_generator {generator!r}; choose 'apartment' or 'toy'")


def object_labels(scene: Scene) -> list[str]:
    """Non-structure categories of a scene, sorted."""
    return sorted({o.label for o in scene.objects if o.label not in STRUCTURE})


def scene_vocab(generator: str, seeds: range, n_rooms: int) -> list[str]:
    """Sorted object categories over the scenes of ``seeds`` (a reader's label space)."""
    labels: set[str] = set()
    for s in seeds:
        labels.update(object_labels(make_scene(generator, s, n_rooms)))
    return sorted(labels)


def _move_object(scene: Scene, instance_id: int, delta: np.ndarray) -> None:
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


def _free_spot(scene: Scene, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, half: np.ndarray,
               avoid: int = -1) -> np.ndarray | None:
    """A floor point in the box ``[lo + half, hi - half]`` clear of object footprints (0.15 m gap)."""
    lo, hi = np.asarray(lo, float) + half, np.asarray(hi, float) - half
    if np.any(hi <= lo):
        return None
    boxes = [(np.asarray(o.aabb_min[:2]), np.asarray(o.aabb_max[:2])) for o in scene.objects
             if o.label not in STRUCTURE and o.instance_id != avoid]
    for _ in range(60):
        p = rng.uniform(lo, hi)
        if all(np.any(p + half + 0.15 < a) or np.any(p - half - 0.15 > b) for a, b in boxes):
            return p
    return None


def standing_spots(scene: Scene, room: Room, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` (1 or 2) free spots: near the room centre, or near the quarter points of its long
    axis, each within 0.4 m of its anchor (two spots of a room stay >= 0.9 m apart, spots of
    adjacent rooms >= 1 m)."""
    lo_r, hi_r = np.asarray(room.xy_min, float), np.asarray(room.xy_max, float)
    c = 0.5 * (lo_r + hi_r)
    if n == 1:
        anchors = [c]
    else:
        axis = int(np.argmax(hi_r - lo_r))
        anchors = []
        for f in (0.25, 0.75):
            a = c.copy()
            a[axis] = lo_r[axis] + f * (hi_r[axis] - lo_r[axis])
            anchors.append(a)
    out = []
    for a in anchors:
        spot = _free_spot(scene, np.maximum(a - 0.4, lo_r + 0.4), np.minimum(a + 0.4, hi_r - 0.4), rng, np.zeros(2))
        out.append(a if spot is None else spot)
    return out


def visit_plan(n_rooms: int, n_steps: int, cfg: WalkConfig, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Visits ``(room, n_frames)`` covering ``n_steps``.

    The first ``first_tour`` rooms (a random subset) are visited in a row; every other room is
    first entered at a uniformly random visit of the rest of the episode; revisits pick a
    discovered room with weights ``rank^-visit_skew`` (random ranks, never the current room).
    """
    order = rng.permutation(n_rooms)
    weights = np.empty(n_rooms)
    weights[rng.permutation(n_rooms)] = (np.arange(n_rooms) + 1.0) ** -cfg.visit_skew
    n_first = min(cfg.first_tour, n_rooms)
    mean_len = 0.5 * (cfg.frames_per_visit[0] + cfg.frames_per_visit[1])
    n_visits = int(np.ceil(n_steps / cfg.frames_per_visit[0])) + 1
    later = order[n_first:]
    # discovery visits spread over the episode (expected visit index), never during the first tour
    horizon = max(int(n_steps / mean_len) - 1, n_first + len(later))
    slots = np.sort(rng.choice(np.arange(n_first, horizon), size=len(later), replace=False)) if len(later) else []
    discover = dict(zip([int(s) for s in slots], [int(r) for r in later]))
    plan: list[int] = [int(r) for r in order[:n_first]]
    known = set(plan)
    while len(plan) < n_visits:
        v = len(plan)
        if v in discover:
            r = discover[v]
        else:
            cand = [r for r in known if r != plan[-1]] or list(known)
            w = weights[cand] / weights[cand].sum()
            r = int(cand[int(rng.choice(len(cand), p=w))])
        plan.append(r)
        known.add(r)
    out, t = [], 0
    for r in plan:
        if t >= n_steps:
            break
        n = int(rng.integers(cfg.frames_per_visit[0], cfg.frames_per_visit[1] + 1))
        out.append((r, min(n, n_steps - t)))
        t += n
    return out


def generate_record(scene_seed: int, walk_seed: int, cfg: WalkConfig, vocab: list[str]) -> EpisodeRecord:
    """Walk a scene, move objects, render the views and record what each step saw."""
    from .renderer import Renderer

    cfg.validate()
    scene = copy.deepcopy(make_scene(cfg.scene_generator, scene_seed, cfg.n_rooms))
    rng = np.random.default_rng([scene_seed, walk_seed, 11])
    rooms = list(scene.rooms)
    if len(rooms) < 2:
        raise ConfigError(f"episodes need a scene with >= 2 rooms, {scene.name} has {len(rooms)}")
    label_index = {lab: i for i, lab in enumerate(vocab)}
    intr = CameraIntrinsics.from_fov(cfg.width, cfg.height, cfg.hfov_deg)
    spot_room = [k for k in range(len(rooms)) for _ in range(cfg.spots_per_room)]  # spot -> room index
    spots = [p for r in rooms for p in standing_spots(scene, r, cfg.spots_per_room, rng)]
    yaw0 = rng.uniform(0, 2 * np.pi, len(spots))
    plan = visit_plan(len(spots), cfg.n_steps, cfg, rng)
    n_moves = int(rng.integers(cfg.n_moves[0], cfg.n_moves[1] + 1))
    first_tour = min(cfg.first_tour, len(rooms))
    candidates = np.arange(first_tour, len(plan))
    move_at = set(rng.choice(candidates, size=min(n_moves, len(candidates)), replace=False).tolist()) if len(candidates) else set()
    movable = [o for o in scene.objects if o.label not in STRUCTURE and o.label in label_index]

    renderer = Renderer(scene)
    version = 0
    cache: dict[tuple[int, int, int], int] = {}  # (scene version, room, yaw bin) -> view index
    views: list[np.ndarray] = []
    view_seen: list[np.ndarray] = []
    T = cfg.n_steps
    view_index = np.zeros(T, np.int64)
    positions = np.zeros((T, 3))
    headings = np.zeros(T)
    room_ids = np.zeros(T, np.int64)
    visit = np.zeros(T, np.int64)
    moves: list[dict] = []
    t = 0
    for v, (r, n) in enumerate(plan):  # r: spot index
        if v in move_at and movable:
            obj = movable[int(rng.integers(len(movable)))]
            src = scene.room_of(obj.center[:2])
            dests = [x for x in rooms if x.room_id != src]
            dest = dests[int(rng.integers(len(dests)))]
            half = 0.5 * (np.asarray(obj.aabb_max[:2]) - np.asarray(obj.aabb_min[:2]))
            spot = _free_spot(scene, np.asarray(dest.xy_min) + 0.1, np.asarray(dest.xy_max) - 0.1, rng, half,
                              avoid=obj.instance_id)
            clear = all(np.linalg.norm(spot - p) > np.linalg.norm(half) + 0.4 for p in spots) if spot is not None else False
            if clear:
                delta = np.array([spot[0] - obj.center[0], spot[1] - obj.center[1], scene.floor_z - obj.aabb_min[2]])
                _move_object(scene, obj.instance_id, delta)
                obj.room_id = dest.room_id
                renderer = Renderer(scene)
                version += 1
                moves.append({"step": t, "label": obj.label, "label_index": label_index[obj.label], "name": obj.name, "from_room": int(src),
                              "to_room": int(dest.room_id)})
        start = int(rng.integers(cfg.yaw_bins))
        direction = 1 if rng.random() < 0.5 else -1
        pos = np.array([spots[r][0], spots[r][1], scene.floor_z + cfg.camera_height])
        for k in range(n):
            b = (start + direction * k) % cfg.yaw_bins
            yaw = (yaw0[r] + 2 * np.pi * b / cfg.yaw_bins) % (2 * np.pi)
            key = (version, r, b)
            if key not in cache:
                res = renderer.render(intr, make_pose(yaw_pitch_to_rotation(yaw, cfg.pitch), pos))
                s = np.zeros(len(vocab), bool)
                ids, counts = np.unique(res.instance_ids, return_counts=True)
                for i, c in zip(ids.tolist(), counts.tolist()):
                    if i > 0 and c >= cfg.min_pixels:
                        lab = scene.object(i).label
                        if lab in label_index:
                            s[label_index[lab]] = True
                cache[key] = len(views)
                views.append(res.rgb)
                view_seen.append(s)
            view_index[t] = cache[key]
            positions[t], headings[t] = pos, yaw
            room_ids[t], visit[t] = rooms[spot_room[r]].room_id, v
            t += 1
    seen = np.stack(view_seen)[view_index]
    return EpisodeRecord(f"{scene_seed}_{walk_seed}", np.stack(views), view_index, positions, headings, seen, room_ids,
                         visit, moves)


# ----------------------------------------------------------------------------- toy scene
TOY_LABELS: tuple[str, ...] = ("bed", "chair", "table", "sofa", "plant", "lamp", "tv", "shelf", "fridge", "bin")
_COLOURS = np.array(
    [
        [0.85, 0.1, 0.1], [0.1, 0.7, 0.1], [0.1, 0.2, 0.9], [0.9, 0.8, 0.1], [0.1, 0.8, 0.8],
        [0.8, 0.1, 0.8], [0.15, 0.15, 0.15], [0.95, 0.55, 0.1], [0.95, 0.95, 0.95], [0.5, 0.3, 0.1],
    ]
)
_SIZES = np.array(
    [[1.6, 1.2, 0.5], [0.5, 0.5, 0.9], [1.0, 0.8, 0.75], [1.4, 0.7, 0.8], [0.4, 0.4, 1.1],
     [0.3, 0.3, 1.5], [0.9, 0.3, 1.0], [0.8, 0.35, 1.8], [0.7, 0.7, 1.8], [0.4, 0.4, 0.5]]
)


def box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box: ``vertices [8, 3]``, outward-facing ``triangles [12, 3]``."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]],
        dtype=np.float32,
    )
    f = np.array(
        [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
         [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]],
        dtype=np.int32,
    )
    return v, f


def make_toy_apartment(seed: int, n_rooms: int = 4, room_size: float = 4.0, objects_per_room: int = 3) -> Scene:
    """Rooms in a row along +x with walls, 1 m doorways and coloured labelled boxes.

    Used by tests (fast to render) and as a fallback scene. Box colours depend on the category,
    so a small CNN can tell categories apart.

    Returns:
        A :class:`Scene` whose instances are 1 floor, walls (label ``wall``) and objects.
    """
    rng = np.random.default_rng(seed)
    verts, tris, tri_inst, tri_mat = [], [], [], []
    materials = [Material("floor", np.array([0.55, 0.5, 0.45])), Material("wall", np.array([0.8, 0.8, 0.75]))]
    objects: list[SceneObject] = []
    rooms: list[Room] = []
    nv = 0

    def add_box(lo, hi, inst, mat):
        nonlocal nv
        v, f = box_mesh(np.asarray(lo, np.float32), np.asarray(hi, np.float32))
        verts.append(v)
        tris.append(f + nv)
        tri_inst.append(np.full(len(f), inst, np.int32))
        tri_mat.append(np.full(len(f), mat, np.int32))
        nv += len(v)

    W, H, t = room_size, 2.6, 0.1
    L = W * n_rooms
    add_box([0, 0, -t], [L, W, 0], 1, 0)
    objects.append(SceneObject(1, "floor_0", "floor", np.array([0, 0, -t]), np.array([L, W, 0])))
    wall_id = 2
    walls = [([0, -t, 0], [L, 0, H]), ([0, W, 0], [L, W + t, H]), ([-t, 0, 0], [0, W, H]), ([L, 0, 0], [L + t, W, H])]
    for k in range(1, n_rooms):  # inner walls with a 1 m doorway in the middle
        x = k * W
        walls += [([x - t / 2, 0, 0], [x + t / 2, W / 2 - 0.5, H]), ([x - t / 2, W / 2 + 0.5, 0], [x + t / 2, W, H])]
    for lo, hi in walls:
        add_box(lo, hi, wall_id, 1)
        objects.append(SceneObject(wall_id, f"wall_{wall_id}", "wall", np.array(lo, float), np.array(hi, float)))
        wall_id += 1
    inst = wall_id
    for r in range(n_rooms):
        rooms.append(Room(r, f"room_{r}", np.array([r * W, 0.0]), np.array([(r + 1) * W, W])))
        labels = rng.choice(len(TOY_LABELS), size=objects_per_room, replace=False)
        slots = [(0.2, 0.2), (0.2, W - 0.2), (W - 0.2, 0.2), (W - 0.2, W - 0.2)]  # against the walls
        for j, li in enumerate(labels):
            sx, sy, sz = _SIZES[li]
            cx, cy = slots[j % 4]
            x0 = r * W + (cx if cx < W / 2 else cx - sx)
            y0 = cy if cy < W / 2 else cy - sy
            lo, hi = np.array([x0, y0, 0.0]), np.array([x0 + sx, y0 + sy, sz])
            mat = len(materials)
            materials.append(Material(f"{TOY_LABELS[li]}_{inst}", np.clip(_COLOURS[li] + rng.normal(0, 0.03, 3), 0, 1)))
            add_box(lo, hi, inst, mat)
            objects.append(SceneObject(inst, f"{TOY_LABELS[li]}_{inst}", TOY_LABELS[li], lo, hi, room_id=r))
            inst += 1
    tri = np.concatenate(tris)
    return Scene(
        name=f"toy_apartment_{seed}",
        vertices=np.concatenate(verts).astype(np.float32),
        triangles=tri.astype(np.int32),
        tri_instance=np.concatenate(tri_inst),
        tri_material=np.concatenate(tri_mat),
        tri_uv=np.zeros((len(tri), 3, 2), np.float32),
        materials=materials,
        objects=objects,
        rooms=rooms,
        floor_z=0.0,
    )
