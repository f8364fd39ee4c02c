"""Budgeted episodic store: entries, places without ground truth, and write/eviction strategies.

The store keeps at most ``budget`` (L) entries. When a new entry arrives and the store is full,
an *eviction action* decides which entry makes room (or that the new entry is dropped):

=================  ======================  ==================================================
strategy           action                  evicts, when full
=================  ======================  ==================================================
``fifo``           ``evict_oldest``        the oldest entry (smallest step)
``lifo``           ``evict_newest``        the newest entry (the new one replaces it)
``mvfo``           ``evict_most_visited``  the oldest entry of the most-visited place in memory
``lvfo``           ``evict_least_visited`` the oldest entry of the least-visited place in memory
``sat_pm``         ``evict_largest_place`` the oldest entry of the place holding most entries
                                           (counting the incoming entry)
(policy only)      ``skip``                nothing: the new entry is not written
=================  ======================  ==================================================

"Visits" of a place count every observation attributed to it (written or not), so they
measure how much time the agent spent there, not how much of it is remembered. ``sat_pm`` is
the SAT paper's place memory: the budget is split evenly into per-place FIFO queues; since the
number of places is not known in advance the split is dynamic (evicting the oldest entry of the
largest queue keeps every place's share within one entry of L / n_places).

Places come from positions only (:class:`PlaceClusterer`): simulator room ids are never read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spatial_memory.errors import ConfigError, QueryError

STRATEGIES: tuple[str, ...] = ("fifo", "lifo", "mvfo", "lvfo", "sat_pm")
ACTIONS: tuple[str, ...] = (
    "evict_oldest",
    "evict_newest",
    "evict_most_visited",
    "evict_least_visited",
    "evict_largest_place",
    "skip",
)
STRATEGY_ACTION: dict[str, str] = {
    "fifo": "evict_oldest",
    "lifo": "evict_newest",
    "mvfo": "evict_most_visited",
    "lvfo": "evict_least_visited",
    "sat_pm": "evict_largest_place",
}


@dataclass
class EpisodicEntry:
    """One remembered observation.

    Attributes:
        embedding: ``[D] float32`` observation encoding.
        place_id: place from :class:`PlaceClusterer` (>= 0).
        position: ``[3] float64`` camera position in the world (metres).
        heading: camera yaw about world +z (radians).
        stamp_ns: acquisition time.
        labels: semantic labels visible in the observation (empty when unknown).
        step: index of the observation in the stream (0, 1, ...), the memory's clock.
        T_world_camera: ``[4, 4]`` pose when known (kept for ``last_seen`` answers).
    """

    embedding: np.ndarray
    place_id: int
    position: np.ndarray
    heading: float
    stamp_ns: int
    labels: list[str] = field(default_factory=list)
    step: int = 0
    T_world_camera: np.ndarray | None = None


class PlaceClusterer:
    """Online leader clustering of floor positions into places (no ground truth).

    A position joins the nearest existing place centre within ``radius`` (x/y distance,
    metres); otherwise it founds a new place centred on itself. Centres are never moved, so a
    place id means the same region for the whole episode (a running mean would drift and
    silently re-label old memories). Place ids are 0, 1, 2, ... in order of discovery.
    Leader clustering was chosen over a fixed grid because it needs no map extent and gives
    few, evenly sized places along the path the robot actually travelled.
    """

    def __init__(self, radius: float = 1.5) -> None:
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ConfigError(f"place radius must be a positive finite number of metres, got {radius!r}")
        self.radius = float(radius)
        self._centres: list[np.ndarray] = []

    @property
    def centres(self) -> np.ndarray:
        """``[P, 2]`` place centres (x, y)."""
        return np.array(self._centres, dtype=np.float64).reshape(-1, 2)

    @property
    def n_places(self) -> int:
        return len(self._centres)

    def nearest(self, position: np.ndarray) -> tuple[int, float]:
        """Nearest place id and its x/y distance; ``(-1, inf)`` when no place exists yet."""
        if not self._centres:
            return -1, math.inf
        d = np.linalg.norm(self.centres - np.asarray(position, dtype=np.float64)[:2], axis=1)
        i = int(np.argmin(d))
        return i, float(d[i])

    def assign(self, position: np.ndarray) -> int:
        """Place id of ``position: [3] or [2]``, creating a place if none is within ``radius``.

        Raises:
            QueryError: non-finite position.
        """
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        if p.size < 2 or not np.all(np.isfinite(p[:2])):
            raise QueryError(f"place assignment needs a finite x/y position, got {p.tolist()}")
        i, d = self.nearest(p)
        if i >= 0 and d <= self.radius:
            return i
        self._centres.append(p[:2].copy())
        return len(self._centres) - 1

    def assign_many(self, positions: np.ndarray) -> np.ndarray:
        """Place ids ``[N] int64`` of ``positions: [N, 3]`` assigned in order."""
        return np.array([self.assign(p) for p in np.asarray(positions)], dtype=np.int64)

    def state(self) -> dict:
        return {"radius": self.radius, "centres": self.centres.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "PlaceClusterer":
        c = cls(float(state["radius"]))
        c._centres = [np.asarray(x, dtype=np.float64) for x in state.get("centres", [])]
        return c


class EpisodicStore:
    """Hard-budget store of :class:`EpisodicEntry` with a write strategy.

    Bookkeeping lives in small numpy arrays indexed by slot (``step``, ``place``), so choosing a
    victim is one masked arg-min over at most L slots: writes stay well under a millisecond.
    """

    def __init__(self, budget: int, strategy: str = "fifo") -> None:
        if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
            raise ConfigError(f"episodic budget must be a positive integer, got {budget!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown write strategy {strategy!r}; choose one of {list(STRATEGIES)}")
        self.budget = int(budget)
        self.strategy = strategy
        self._entries: list[EpisodicEntry | None] = [None] * self.budget
        self._step = np.full(self.budget, -1, dtype=np.int64)  # -1 = free slot
        self._place = np.full(self.budget, -1, dtype=np.int64)
        self._visits = np.zeros(16, dtype=np.int64)  # observations per place id, grown on demand
        self.n_writes = 0
        self.n_evictions = 0
        self.n_skipped = 0

    # ----------------------------------------------------------------- state
    def __len__(self) -> int:
        return int((self._step >= 0).sum())

    @property
    def full(self) -> bool:
        return len(self) >= self.budget

    def entries(self) -> list[EpisodicEntry]:
        """Stored entries in chronological order (by step)."""
        slots = np.flatnonzero(self._step >= 0)
        slots = slots[np.argsort(self._step[slots], kind="stable")]
        return [self._entries[i] for i in slots]  # type: ignore[misc]

    def steps(self) -> np.ndarray:
        """``[n] int64`` steps of the stored entries, sorted."""
        return np.sort(self._step[self._step >= 0])

    def occupancy(self) -> dict[int, int]:
        """Entries per place currently held."""
        places, counts = np.unique(self._place[self._step >= 0], return_counts=True)
        return {int(p): int(c) for p, c in zip(places, counts)}

    # ----------------------------------------------------------------- writing
    @property
    def visits(self) -> dict[int, int]:
        """Observations counted per place id (places never observed are absent)."""
        return {int(p): int(v) for p, v in enumerate(self._visits) if v > 0}

    @visits.setter
    def visits(self, counts: dict[int, int]) -> None:
        self._visits = np.zeros(max(16, max(counts, default=0) + 1), dtype=np.int64)
        for p, v in counts.items():
            self._visits[int(p)] = int(v)

    def visit_count(self, place_id: int) -> int:
        p = int(place_id)
        return int(self._visits[p]) if 0 <= p < len(self._visits) else 0

    @property
    def total_visits(self) -> int:
        return int(self._visits.sum())

    def observe(self, place_id: int) -> None:
        """Count one visit (observation) of ``place_id`` without writing."""
        p = int(place_id)
        if p < 0:
            raise ConfigError(f"place ids are >= 0, got {p}")
        if p >= len(self._visits):
            self._visits = np.concatenate([self._visits, np.zeros(max(p + 1, 2 * len(self._visits)) - len(self._visits), np.int64)])
        self._visits[p] += 1

    def write(self, entry: EpisodicEntry, action: str | None = None) -> bool:
        """Count the visit and store ``entry``, evicting per ``action`` (default: the strategy's).

        Returns:
            True if the entry was stored, False if it was skipped (``action="skip"`` when full).
        """
        self.observe(entry.place_id)
        slot = self._victim(action or STRATEGY_ACTION[self.strategy], entry.place_id)
        if slot < 0:
            self.n_skipped += 1
            return False
        if self._step[slot] >= 0:
            self.n_evictions += 1
        self._entries[slot] = entry
        self._step[slot] = int(entry.step)
        self._place[slot] = int(entry.place_id)
        self.n_writes += 1
        return True

    def _victim(self, action: str, new_place: int) -> int:
        """Slot to overwrite (a free one when not full), or -1 to skip."""
        free = np.flatnonzero(self._step < 0)
        if free.size:
            return int(free[0])
        if action == "skip":
            return -1
        if action == "evict_oldest":
            return int(np.argmin(self._step))
        if action == "evict_newest":
            return int(np.argmax(self._step))
        if action in ("evict_most_visited", "evict_least_visited", "evict_largest_place"):
            if action == "evict_largest_place":
                # queue lengths as they would be after this write: a place at its share evicts its own oldest
                count = np.bincount(self._place, minlength=max(new_place + 1, 1))
                count[new_place] += 1
                score = count[self._place]
                target = score.max()
            else:
                score = self._visits[self._place]
                target = score.max() if action == "evict_most_visited" else score.min()
            # among the slots of the extreme place(s), the oldest: that place's oldest entry, and ties
            # between places go to the one whose oldest entry is oldest
            return int(np.argmin(np.where(score == target, self._step, np.iinfo(np.int64).max)))
        raise ConfigError(f"unknown eviction action {action!r}; choose one of {list(ACTIONS)}")

    # ----------------------------------------------------------------- reading
    def recall(
        self,
        place_id: int | None = None,
        position: np.ndarray | None = None,
        radius: float | None = None,
        t_min_ns: int | None = None,
        t_max_ns: int | None = None,
    ) -> list[EpisodicEntry]:
        """Entries matching every given filter, chronological.

        Raises:
            QueryError: ``radius`` without ``position`` (or vice versa), non-finite values,
                ``t_min_ns > t_max_ns``.
        """
        if (position is None) != (radius is None):
            raise QueryError("recall by position needs both position and radius")
        if position is not None:
            position = np.asarray(position, dtype=np.float64).reshape(-1)
            if position.size != 3 or not np.all(np.isfinite(position)):
                raise QueryError(f"recall position must be 3 finite numbers, got {position.tolist()}")
            if not (math.isfinite(float(radius)) and float(radius) >= 0):  # type: ignore[arg-type]
                raise QueryError(f"recall radius must be finite and >= 0, got {radius}")
        if t_min_ns is not None and t_max_ns is not None and t_min_ns > t_max_ns:
            raise QueryError(f"t_min_ns {t_min_ns} is after t_max_ns {t_max_ns}")
        out = []
        for e in self.entries():
            if place_id is not None and e.place_id != place_id:
                continue
            if position is not None and np.linalg.norm(e.position - position) > float(radius):  # type: ignore[arg-type]
                continue
            if t_min_ns is not None and e.stamp_ns < t_min_ns:
                continue
            if t_max_ns is not None and e.stamp_ns > t_max_ns:
                continue
            out.append(e)
        return out


def simulate_kept(places: np.ndarray, budget: int, strategy: str | None = None, actions: list[str] | None = None) -> np.ndarray:
    """Steps kept after streaming an episode through a store.

    Args:
        places: ``[T] int`` place id of each step.
        budget: L.
        strategy: fixed strategy, or None when ``actions`` gives one action per step.
        actions: ``[T]`` eviction action per step (used by the allocator's evaluation).

    Returns:
        ``[n <= L] int64`` kept step indices, sorted.
    """
    store = EpisodicStore(budget, strategy or "fifo")
    dummy = np.zeros(0, dtype=np.float32)
    for t, p in enumerate(np.asarray(places).tolist()):
        e = EpisodicEntry(dummy, int(p), dummy, 0.0, 0, step=t)
        store.write(e, actions[t] if actions is not None else None)
    return store.steps()
