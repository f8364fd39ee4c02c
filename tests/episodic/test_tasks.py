"""Episode generation on a toy apartment: walk, moved objects, places, query answers, cache."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.episodic.tasks import (TASKS, EpisodeConfig, SplitConfig, build_vocab, generate_episode, load_episode,
                                           load_split, place_runs, save_episode, score_predictions, task_targets)
from spatial_memory.errors import ConfigError

CFG = EpisodeConfig(scene_generator="toy", n_rooms=3, n_steps=64, frames_per_visit=(4, 6), n_moves=(2, 2), queries_per_task=6)


@pytest.fixture(scope="module")
def vocab() -> list[str]:
    return build_vocab(CFG, SplitConfig(train_scenes=(0, 3)))


@pytest.fixture(scope="module")
def episode(vocab):
    return generate_episode(1, 0, CFG, vocab)


def test_episode_shapes_and_walk(episode, vocab) -> None:
    T = CFG.n_steps
    assert episode.rgb.shape == (T, 48, 64, 3) and episode.rgb.dtype == np.uint8
    assert episode.seen.shape == (T, len(vocab)) and episode.seen.any(1).mean() > 0.5
    # the first tour visits every room once before any revisit
    first = [episode.rooms[episode.visit == v][0] for v in range(3)]
    assert sorted(first) == [0, 1, 2]
    assert len(episode.moves) == 2 and all(m["from_room"] != m["to_room"] for m in episode.moves)
    # places come from positions: one room's visit stands at one spot -> one place per visit
    for v in np.unique(episode.visit):
        assert len(np.unique(episode.places[episode.visit == v])) == 1


def test_query_answers_are_consistent(episode) -> None:
    tg = task_targets(episode.places, episode.seen)
    q = episode.queries
    for (p, _), multi in zip(q["what_was_there"]["args"], q["what_was_there"]["multi"]):
        assert np.array_equal(multi > 0.5, episode.seen[episode.places == p].any(0))
    for (p, _), multi in zip(q["first_visit"]["args"], q["first_visit"]["multi"]):
        run = next(r for r in place_runs(episode.places) if r[0] == p)
        assert np.array_equal(multi > 0.5, episode.seen[run[1]:run[2]].any(0))
        assert not np.any((multi > 0.5) & ~tg["ever"][p])  # the first visit is a subset of ever-seen
    for (c, _), place in zip(q["last_seen"]["args"], q["last_seen"]["cls"]):
        t_last = np.flatnonzero(episode.seen[:, c])[-1]
        assert episode.places[t_last] == place
    for (a, b), first in zip(q["order"]["args"], q["order"]["cls"]):
        assert a != b and first == int(np.flatnonzero(episode.places == a)[0] < np.flatnonzero(episode.places == b)[0])


def test_episode_cache_round_trip(episode, vocab, tmp_path) -> None:
    save_episode(episode, tmp_path)
    back = load_episode(tmp_path, episode.name)
    np.testing.assert_array_equal(back.rgb, episode.rgb)
    np.testing.assert_array_equal(back.places, episode.places)
    for task in TASKS:
        for k in ("args", "cls", "multi"):
            np.testing.assert_array_equal(back.queries[task][k], episode.queries[task][k])
    assert back.moves == episode.moves
    split = SplitConfig(train_scenes=(1, 2), walks=1)
    eps = load_split("train", CFG, split, vocab, tmp_path, progress=False)  # generated, then read back
    again = load_split("train", CFG, split, vocab, tmp_path, progress=False)
    np.testing.assert_array_equal(eps[0].rgb, again[0].rgb)
    np.testing.assert_array_equal(eps[0].rgb, episode.rgb)  # same seeds -> same episode
    with pytest.raises(ConfigError):
        load_split("holdout", CFG, split, vocab, tmp_path)


def test_scoring() -> None:
    q = {"multi": np.array([[1, 1, 0], [0, 0, 0]], np.float32), "cls": np.array([2, 0])}
    s = score_predictions("what_was_there", np.array([[1, 0, 0], [0, 0, 0]], bool), q)
    np.testing.assert_allclose(s, [2 / 3, 1.0])
    np.testing.assert_allclose(score_predictions("last_seen", np.array([2, 1]), q), [1.0, 0.0])


def test_bad_scene_generator(vocab) -> None:
    with pytest.raises(ConfigError):
        generate_episode(0, 0, EpisodeConfig(scene_generator="mars"), vocab)
