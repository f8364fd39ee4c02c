"""Synthetic episodes for fast reader/allocator tests (no rendering)."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.episodic.tasks import Episode, make_queries


def synthetic_episode(seed: int, n_steps: int = 48, n_places: int = 4, n_labels: int = 6, dim: int = 8, q: int = 8) -> Episode:
    """Places visited in runs; each place shows a fixed label set; embeddings = noisy label code.

    What was seen depends only on the place, so a reader that knows places can answer
    ``what_was_there`` while a time-only reader cannot.
    """
    rng = np.random.default_rng(seed)
    place_labels = rng.random((n_places, n_labels)) < 0.4
    places, visit = [], []
    p, v = 0, 0
    while len(places) < n_steps:
        run = int(rng.integers(3, 7))
        places += [p] * run
        visit += [v] * run
        p = (p + int(rng.integers(1, n_places))) % n_places
        v += 1
    places_a = np.array(places[:n_steps], np.int64)
    seen = place_labels[places_a]
    code = np.random.default_rng(12345).normal(size=(n_labels, dim)).astype(np.float32)  # shared by all episodes
    emb = seen.astype(np.float32) @ code + 0.05 * rng.normal(size=(n_steps, dim)).astype(np.float32)
    queries = make_queries(places_a, seen, np.array(visit[:n_steps]), rng, q, moved=[])
    ep = Episode(f"syn_{seed}", np.zeros((1, 4, 4, 3), np.uint8), np.zeros(n_steps, np.int64), np.zeros((n_steps, 3)),
                 np.zeros(n_steps), places_a, seen, places_a.copy(), np.array(visit[:n_steps]), queries)
    ep.embeddings = emb
    return ep


@pytest.fixture(scope="module")
def syn_episodes() -> list[Episode]:
    return [synthetic_episode(s) for s in range(24)]
