"""Walk records (sim.episodes) -> task episodes (spatial_memory.episodic.tasks): walk shape,
moved objects, places, query answers, cache, and the layering rule between the two."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sim.episodes import WalkConfig, generate_record, scene_vocab, visit_plan
from spatial_memory.episodic.tasks import (TASKS, EpisodeConfig, SplitConfig, distinctive_categories, episode_from_record,
                                           load_episode, load_split, make_queries, place_runs, save_episode,
                                           score_predictions, task_targets)
from spatial_memory.errors import ConfigError

CFG = EpisodeConfig(scene_generator="toy", n_rooms=3, n_steps=64, frames_per_visit=(4, 6), spots_per_room=1, first_tour=2,
                    n_moves=(2, 2), queries_per_task=6, place_radius=1.5)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vocab() -> list[str]:
    return scene_vocab("toy", range(0, 3), 3)


@pytest.fixture(scope="module")
def record(vocab):
    return generate_record(1, 0, WalkConfig(**CFG.walk_kwargs()), vocab)


@pytest.fixture(scope="module")
def episode(record):
    return episode_from_record(record, CFG)


def test_visit_plan_discovers_places_gradually() -> None:
    cfg = WalkConfig(n_rooms=8, n_steps=512, frames_per_visit=(6, 12), first_tour=6, spots_per_room=2)
    plan = visit_plan(16, 512, cfg, np.random.default_rng(0))
    rooms = [r for r, _ in plan]
    assert sum(n for _, n in plan) == 512
    assert len(set(rooms[:6])) == 6  # the first tour visits distinct spots
    first = {r: rooms.index(r) for r in set(rooms)}
    assert len(first) == 16 and max(first.values()) > len(plan) // 3  # some spots are discovered late
    assert all(a != b for a, b in zip(rooms, rooms[1:]))  # never the same spot twice in a row
    counts = np.bincount(rooms, minlength=16)
    assert counts.max() >= 4 * np.median(counts)  # skewed revisits


def test_record_shapes_and_views(record, vocab) -> None:
    T = CFG.n_steps
    assert record.views.dtype == np.uint8 and record.views.shape[1:] == (48, 64, 3)
    assert record.view_index.shape == (T,) and record.view_index.max() < len(record.views) < T  # views are shared
    assert record.seen.shape == (T, len(vocab)) and record.seen.any(1).mean() > 0.5
    assert 1 <= len(record.moves) <= 2 and all(m["from_room"] != m["to_room"] for m in record.moves)  # a move needs free floor
    assert all(vocab[m["label_index"]] == m["label"] for m in record.moves)
    # a visit turns on one spot: one position per visit
    for v in np.unique(record.visit):
        assert len(np.unique(record.positions[record.visit == v], axis=0)) == 1


def test_episode_places_and_answers(episode) -> None:
    first = [episode.rooms[episode.visit == v][0] for v in range(2)]
    assert len(set(first)) == 2
    for v in np.unique(episode.visit):  # places come from positions: one place per visit
        assert len(np.unique(episode.places[episode.visit == v])) == 1
    assert episode.rgb.shape == (CFG.n_steps, 48, 64, 3)
    tg = task_targets(episode.places, episode.seen)
    q = episode.queries
    for (p, _), multi in zip(q["what_was_there"]["args"], q["what_was_there"]["multi"]):
        assert np.array_equal(multi > 0.5, episode.seen[episode.places == p].any(0))
    for (p, _), multi in zip(q["first_visit"]["args"], q["first_visit"]["multi"]):
        run = next(r for r in place_runs(episode.places) if r[0] == p)
        assert np.array_equal(multi > 0.5, episode.seen[run[1]:run[2]].any(0))
        assert not np.any((multi > 0.5) & ~tg["ever"][p])
    for (c, _), place in zip(q["last_seen"]["args"], q["last_seen"]["cls"]):
        assert episode.places[np.flatnonzero(episode.seen[:, c])[-1]] == place
    for (a, b), first_ in zip(q["order"]["args"], q["order"]["cls"]):
        assert a != b and first_ == int(np.flatnonzero(episode.places == a)[0] < np.flatnonzero(episode.places == b)[0])
    assert q["order"]["cls"].mean() == 0.5  # balanced answers


def test_episode_cache_round_trip(episode, vocab, tmp_path) -> None:
    save_episode(episode, tmp_path)
    back = load_episode(tmp_path, episode.name)
    np.testing.assert_array_equal(back.rgb, episode.rgb)
    np.testing.assert_array_equal(back.places, episode.places)
    for task in TASKS:
        assert set(back.queries[task]) == set(episode.queries[task])
        for k in episode.queries[task]:
            np.testing.assert_array_equal(back.queries[task][k], episode.queries[task][k])
    assert "mask" in back.queries["what_was_there"]
    assert back.moves == episode.moves
    split = SplitConfig(train_scenes=(1, 2), walks=1)
    calls = []

    def gen(s: int, w: int):
        calls.append((s, w))
        return generate_record(s, w, WalkConfig(**CFG.walk_kwargs()), vocab)

    eps = load_split("train", CFG, split, vocab, gen, tmp_path, progress=False)  # generated, then read back
    again = load_split("train", CFG, split, vocab, gen, tmp_path, progress=False)
    assert calls == [(1, 0)]
    np.testing.assert_array_equal(eps[0].rgb, again[0].rgb)
    np.testing.assert_array_equal(eps[0].rgb, episode.rgb)  # same seeds -> same episode
    with pytest.raises(ConfigError):
        load_split("holdout", CFG, split, vocab, gen, tmp_path)


def test_scoring() -> None:
    q = {"multi": np.array([[1, 1, 0], [0, 0, 0]], np.float32), "cls": np.array([2, 0])}
    s = score_predictions("what_was_there", np.array([[1, 0, 0], [0, 0, 0]], bool), q)
    np.testing.assert_allclose(s, [2 / 3, 1.0])
    np.testing.assert_allclose(score_predictions("last_seen", np.array([2, 1]), q), [1.0, 0.0])


def test_scoring_with_a_category_mask() -> None:
    # category 0 (common) is predicted and true but not scored; categories 1, 2 are
    q = {"multi": np.array([[1, 1, 0], [1, 0, 0]], np.float32), "mask": np.array([[0, 1, 1], [0, 1, 1]], np.float32)}
    s = score_predictions("what_was_there", np.array([[1, 1, 1], [1, 0, 0]], bool), q)
    np.testing.assert_allclose(s, [2 / 3, 1.0])  # 1 tp, 1 fp among {1, 2}; nothing distinctive, nothing predicted
    unmasked = score_predictions("what_was_there", np.array([[1, 1, 1], [1, 0, 0]], bool), {"multi": q["multi"]})
    np.testing.assert_allclose(unmasked, [0.8, 1.0])


def test_distinctive_categories_exclude_what_most_places_show() -> None:
    # 4 places; category 0 seen from all, 1 from 3, 2 from 2 (= half), 3 from 1, 4 from none
    ever = {p: np.array(r, bool) for p, r in enumerate([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])}
    assert distinctive_categories(ever).tolist() == [False, False, True, True, True]
    assert distinctive_categories({0: np.array([1, 1, 0], bool)}).tolist() == [True, True, True]  # one place: no contrast
    with pytest.raises(ConfigError):
        distinctive_categories({})


def test_what_was_there_queries_carry_the_episode_mask() -> None:
    rng = np.random.default_rng(0)
    places = np.repeat(np.arange(6), 8)  # 6 places visited once each
    seen = np.zeros((48, 5), bool)
    seen[:, 0] = True  # seen from every place: a prior answers it
    seen[places < 4, 1] = True  # 4 of 6 places: not distinctive
    seen[places == 2, 2] = True
    seen[places == 5, 3] = True
    q = make_queries(places, seen, places.copy(), rng, 20, moved=[])["what_was_there"]
    np.testing.assert_array_equal(q["mask"], np.tile([0, 0, 1, 1, 1], (20, 1)))
    assert set(q["args"][:, 0].tolist()) <= {2, 5}  # only places that showed something distinctive are asked
    # the label prior "every place shows 0 and 1" scores 0 under the mask, the place's own categories 1
    prior = np.tile([True, True, False, False, False], (20, 1))
    assert score_predictions("what_was_there", prior, q).max() == 0.0
    assert score_predictions("what_was_there", q["multi"] > 0.5, q).min() == 1.0


def test_bad_configs(vocab) -> None:
    with pytest.raises(ConfigError):
        generate_record(0, 0, WalkConfig(scene_generator="mars"), vocab)
    with pytest.raises(ConfigError):
        generate_record(0, 0, WalkConfig(scene_generator="toy", n_rooms=3, spots_per_room=3), vocab)
    with pytest.raises(ConfigError):
        generate_record(0, 0, WalkConfig(scene_generator="toy", n_rooms=3, frames_per_visit=(5, 2)), vocab)


def test_memory_layer_does_not_import_the_simulator() -> None:
    for path in (REPO / "spatial_memory" / "episodic").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not any(n == "sim" or n.startswith(("sim.", "emem")) for n in names), f"{path} imports {names}"
