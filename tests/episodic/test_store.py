"""Write strategies evict exactly as specified; places come from positions only."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.episodic.store import (
    STRATEGIES,
    EpisodicEntry,
    EpisodicStore,
    PlaceClusterer,
    simulate_kept,
)
from spatial_memory.errors import ConfigError, QueryError


def entry(step: int, place: int) -> EpisodicEntry:
    return EpisodicEntry(np.zeros(4, np.float32), place, np.array([float(place), 0.0, 1.0]), 0.0, step * 100, step=step)


def fill(store: EpisodicStore, places: list[int]) -> None:
    for t, p in enumerate(places):
        store.write(entry(t, p))


def test_fifo_evicts_oldest() -> None:
    s = EpisodicStore(3, "fifo")
    fill(s, [0, 1, 2, 3, 4])
    assert s.steps().tolist() == [2, 3, 4]
    assert s.n_evictions == 2


def test_lifo_replaces_newest() -> None:
    s = EpisodicStore(3, "lifo")
    fill(s, [0, 1, 2, 3, 4])
    # step 3 replaced step 2, then step 4 replaced step 3: the first L-1 stay
    assert s.steps().tolist() == [0, 1, 4]


def test_mvfo_evicts_oldest_of_most_visited_place() -> None:
    s = EpisodicStore(4, "mvfo")
    # place 0 visited 3x, place 1 once, place 2 once (visits counted before eviction)
    fill(s, [0, 1, 0, 2])
    s.write(entry(4, 0))  # place 0 now has 4 visits -> its oldest (step 0) goes
    assert s.steps().tolist() == [1, 2, 3, 4]
    s.write(entry(5, 1))  # place 0 still most visited -> step 2 goes
    assert s.steps().tolist() == [1, 3, 4, 5]


def test_mvfo_counts_visits_not_occupancy() -> None:
    s = EpisodicStore(3, "mvfo")
    s.observe(2)
    for _ in range(10):
        s.observe(2)  # place 2 seen a lot but never written
    fill(s, [0, 1, 2])
    s.write(entry(3, 0))
    # place 2 has 12 visits: its only entry (step 2) is evicted although it holds 1 entry like the others
    assert s.steps().tolist() == [0, 1, 3]


def test_lvfo_evicts_from_least_visited_place() -> None:
    s = EpisodicStore(4, "lvfo")
    fill(s, [0, 0, 0, 1])
    s.write(entry(4, 0))  # place 1 (1 visit) is least visited -> step 3 goes
    assert s.steps().tolist() == [0, 1, 2, 4]


def test_sat_pm_keeps_per_place_fifo_queues() -> None:
    s = EpisodicStore(4, "sat_pm")
    fill(s, [0, 0, 0, 1, 1, 2])
    occ = s.occupancy()
    # budget split evenly: place 0 loses its oldest entries first, place 2 still got a slot
    assert max(occ.values()) - min(occ.values()) <= 1 and set(occ) == {0, 1, 2}
    assert 0 not in s.steps() and 5 in s.steps()


def test_skip_action_drops_new_entry_only_when_full() -> None:
    s = EpisodicStore(2, "fifo")
    assert s.write(entry(0, 0), "skip")  # not full: written anyway
    assert s.write(entry(1, 0), "skip")
    assert not s.write(entry(2, 0), "skip")
    assert s.steps().tolist() == [0, 1] and s.n_skipped == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_budget_is_hard(strategy: str) -> None:
    rng = np.random.default_rng(0)
    s = EpisodicStore(16, strategy)
    fill(s, rng.integers(0, 5, 200).tolist())
    assert len(s) == 16 and s.n_writes == 200
    assert len(simulate_kept(rng.integers(0, 5, 100), 7, strategy)) == 7


def test_bad_config_is_rejected() -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError):
            EpisodicStore(bad, "fifo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        EpisodicStore(4, "random")
    with pytest.raises(ConfigError):
        fill(s := EpisodicStore(1, "fifo"), [0])
        s.write(entry(1, 0), "evict_everything")


def test_recall_filters() -> None:
    s = EpisodicStore(8, "fifo")
    fill(s, [0, 1, 2, 1])
    assert [e.step for e in s.recall(place_id=1)] == [1, 3]
    assert [e.step for e in s.recall(position=np.array([2.0, 0, 1]), radius=0.5)] == [2]
    assert [e.step for e in s.recall(t_min_ns=100, t_max_ns=200)] == [1, 2]
    with pytest.raises(QueryError):
        s.recall(position=np.array([0.0, 0, 0]))
    with pytest.raises(QueryError):
        s.recall(position=np.array([np.nan, 0, 0]), radius=1.0)
    with pytest.raises(QueryError):
        s.recall(t_min_ns=5, t_max_ns=1)


def test_place_clusterer_leader() -> None:
    c = PlaceClusterer(radius=1.0)
    # two rooms 5 m apart, jittered positions; no room ids are involved
    rng = np.random.default_rng(1)
    a = np.c_[rng.normal(0, 0.2, (10, 2)), np.ones(10)]
    b = np.c_[rng.normal(5, 0.2, (10, 2)), np.ones(10)]
    ids = c.assign_many(np.concatenate([a, b, a[:3]]))
    assert set(ids[:10]) == {0} and set(ids[10:20]) == {1} and set(ids[20:]) == {0}
    assert c.n_places == 2
    assert PlaceClusterer.from_state(c.state()).assign(np.array([5.1, 5.0, 0.0])) == 1
    with pytest.raises(QueryError):
        c.assign(np.array([np.nan, 0.0, 0.0]))
    with pytest.raises(ConfigError):
        PlaceClusterer(0.0)
