"""Oracle reader: exact with a full memory, and it tells write strategies apart as designed."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.episodic.oracle import oracle_predict, oracle_scores
from spatial_memory.episodic.store import simulate_kept
from spatial_memory.episodic.tasks import TASKS, make_queries
from spatial_memory.errors import ConfigError


def test_full_memory_answers_everything(syn_episodes) -> None:
    for ep in syn_episodes[:4]:
        everything = np.arange(ep.n_steps)
        for task in TASKS:
            assert oracle_scores(ep, everything, task).mean() == pytest.approx(1.0), task


def test_empty_memory_knows_nothing(syn_episodes) -> None:
    ep = syn_episodes[0]
    pred = oracle_predict("last_seen", ep.places, ep.seen, ep.visit, np.zeros(0, np.int64), ep.queries["last_seen"]["args"])
    assert (pred == -1).all()
    assert oracle_scores(ep, np.zeros(0, np.int64), "what_was_there").mean() < 0.5
    with pytest.raises(ConfigError):
        oracle_predict("dance", ep.places, ep.seen, ep.visit, np.arange(3), np.zeros((1, 2)))


def _stream(seed: int):
    """Place 0 visited every other run, places 1..6 discovered one by one, the late ones revisited last."""
    rng = np.random.default_rng(seed)
    places, visit, seen = [], [], []
    order = [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 6, 0, 5, 0]
    for v, p in enumerate(order):
        for _ in range(6):
            places.append(p)
            visit.append(v)
            seen.append(rng.random(12) < 0.25)
    places, visit, seen = np.array(places), np.array(visit), np.array(seen)
    return places, visit, seen, make_queries(places, seen, visit, rng, 24, moved=[])


def test_strategies_differ_where_the_tasks_need_different_parts_of_the_stream() -> None:
    def score(task: str, strategy: str) -> float:
        out = []
        for s in range(10):
            places, visit, seen, q = _stream(s)
            kept = simulate_kept(places, 24, strategy)
            out.append(np.mean(np.equal(oracle_predict(task, places, seen, visit, kept, q[task]["args"]), q[task]["cls"])))
        return float(np.mean(out))

    # last sightings are recent: FIFO keeps them, LIFO (the first L-1 steps) does not
    assert score("last_seen", "fifo") > score("last_seen", "lifo") + 0.3
    # first visits are early: LIFO keeps the discovery order, FIFO only the last few places
    assert score("order", "lifo") > score("order", "fifo") + 0.2
