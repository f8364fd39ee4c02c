"""Decision-threshold calibration of the multi-label answers: fitting, decoding, storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatial_memory.episodic.ama import AllocationEnv
from spatial_memory.episodic.calibration import (META_KEY, best_offset, calibrate_offsets, f1_by_offset, offset_for,
                                                 reader_offsets)
from spatial_memory.episodic.encoder import ObservationEncoder
from spatial_memory.episodic.memory import EpisodicConfig, EpisodicEntry, EpisodicMemory, Models
from spatial_memory.episodic.reader import ReaderConfig, SATReader
from spatial_memory.episodic.tasks import score_predictions
from spatial_memory.episodic.training import KeptCache, decode, episode_scores, score_matrix

GRID = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def _queries() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """4 queries over 3 categories; positives sit at logit -0.6, negatives at -1.6: decoding at 0
    predicts nothing, any offset in (0.6, 1.6) is exact, >= 1.6 predicts everything."""
    multi = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], np.float32)
    logits = np.where(multi > 0, -0.6, -1.6).astype(np.float32)
    return logits, {"multi": multi}


def test_calibration_picks_the_f1_maximising_offset() -> None:
    logits, q = _queries()
    f1 = f1_by_offset([logits], [q], "what_was_there", GRID)
    assert f1[GRID.index(0.0)] == 0.0 and f1[GRID.index(1.0)] == 1.0 and f1[GRID.index(2.0)] < 1.0
    # 1.0 and 1.5 both reach F1 1: the tie goes to the smaller shift from the trained threshold
    assert best_offset(f1, GRID) == 1.0
    # memories count equally: a second memory that is exact at offset 0 (and over-predicts from 0.5 on)
    easy = np.where(q["multi"] > 0, 0.2, -0.4).astype(np.float32)
    f2 = f1_by_offset([logits, easy], [q, q], "what_was_there", GRID)
    # at 1.0: hard memory exact, easy one predicts all 3 categories (F1 0.5, 0.8, 0.8, 0.5) -> 0.825 > 0.5 at 0
    assert f2[GRID.index(0.0)] == pytest.approx(0.5) and f2[GRID.index(1.0)] == pytest.approx(0.825)
    assert best_offset(f2, GRID) == 1.0


def test_best_offset_prefers_zero_on_ties() -> None:
    assert best_offset(np.array([0.5, 0.7, 0.7, 0.7, 0.2]), (-1.0, -0.5, 0.0, 0.5, 1.0)) == 0.0
    assert best_offset(np.array([0.9, 0.7, 0.7, 0.7, 0.2]), (-1.0, -0.5, 0.0, 0.5, 1.0)) == -1.0


def test_offsets_are_applied_in_decoding() -> None:
    logits = torch.tensor([[-3.0, 0.5, -0.2]])
    assert decode("what_was_there", logits).tolist() == [[False, True, False]]
    assert decode("first_visit", logits, 100.0).all() and not decode("first_visit", logits, -100.0).any()
    assert decode("order", torch.tensor([[0.1, 0.3]]), 100.0).tolist() == [1]  # single-label answers ignore offsets


def test_offset_for_nearest_budget_and_absent_offsets() -> None:
    off = {"what_was_there": {"32": 1.0, "128": -0.5}}
    assert offset_for(off, "what_was_there", 32) == 1.0
    assert offset_for(off, "what_was_there", 40) == 1.0 and offset_for(off, "what_was_there", 100) == -0.5
    assert offset_for(off, "what_was_there", 80) == 1.0  # equidistant: the smaller budget
    assert offset_for(off, "first_visit", 32) == 0.0 and offset_for(off, "last_seen", 32) == 0.0
    assert offset_for(None, "what_was_there", 32) == 0.0 and offset_for({}, "first_visit", 64) == 0.0
    assert reader_offsets({}) is None and reader_offsets({META_KEY: {"reader": off}}) == off


def _reader(seed: int = 0) -> SATReader:
    torch.manual_seed(seed)
    return SATReader(ReaderConfig(n_labels=6, emb_dim=8, width=16, layers=1, max_places=8, max_steps=64)).eval()


def test_calibration_matches_evaluation_decoding(syn_episodes) -> None:
    """The fitted offset maximises the strategy-mean F1 that score_matrix reports with it."""
    reader, eps, strategies, budgets = _reader(), syn_episodes[:6], ("fifo", "sat_pm"), (16, 32)
    cache = KeptCache()
    offsets, report = calibrate_offsets(reader, eps, strategies, budgets, cache=cache, grid=GRID, progress=False)
    assert set(offsets) == {"what_was_there", "first_visit"} and set(offsets["first_visit"]) == {"16", "32"}
    brute = {}
    for off in GRID:
        per = {t: {str(L): off for L in budgets} for t in offsets}
        S = score_matrix(reader, eps, ("what_was_there", "first_visit"), strategies, budgets, cache, False, per)
        brute[off] = S.mean((0, 2))  # [tasks, budgets]
    for ti, task in enumerate(("what_was_there", "first_visit")):
        for bi, L in enumerate(budgets):
            col = np.array([brute[o][ti, bi] for o in GRID])
            chosen = offsets[task][str(L)]
            assert col[GRID.index(chosen)] == pytest.approx(col.max())
            assert report[task][str(L)]["after"] == pytest.approx(100 * col.max(), abs=0.01)
            assert report[task][str(L)]["before"] == pytest.approx(100 * col[GRID.index(0.0)], abs=0.01)
            assert report[task][str(L)]["after"] >= report[task][str(L)]["before"]


def test_large_offset_predicts_every_category_in_scores_and_rewards(syn_episodes) -> None:
    reader, ep = _reader(), syn_episodes[0]
    kept = KeptCache().get(ep, "fifo", 16)
    q = ep.queries["what_was_there"]
    all_on = score_predictions("what_was_there", np.ones_like(q["multi"], bool), q)
    np.testing.assert_allclose(episode_scores(reader, ep, kept, "what_was_there", 100.0), all_on)
    env = AllocationEnv([ep], reader, ("what_was_there",), (16,), decision_every=8, seed=0,
                        offsets={"what_was_there": {"16": 100.0}})
    env.set_episode(0, "what_was_there", 16)
    env.reset()
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(0)  # evict_oldest = the FIFO memory above
    assert info["score"] == pytest.approx(float(all_on.mean()))


def _models(meta: dict) -> Models:
    torch.manual_seed(0)
    vocab = ["bed", "chair", "lamp", "mug"]
    return Models(ObservationEncoder(len(vocab), 8), SATReader(ReaderConfig(n_labels=4, emb_dim=8, width=16, layers=1)),
                  vocab, meta)


def _filled(models: Models, budget: int = 8) -> EpisodicMemory:
    mem = EpisodicMemory(EpisodicConfig(budget=budget, strategy="fifo"), models)
    rng = np.random.default_rng(0)
    for i in range(6):
        pid = mem.places.assign(np.array([3.0 * (i % 2), 0.0, 0.0]))
        mem.store.write(EpisodicEntry(rng.normal(size=8).astype(np.float32), pid, np.zeros(3), 0.0, i, step=i))
    return mem


def test_online_answer_uses_the_nearest_budget_offset_and_old_weights_decode_at_zero(tmp_path) -> None:
    plain = _models({})
    assert plain.decision_offsets is None and plain.tfifo_decision_offsets is None
    base = _filled(plain).answer("what_was_there", {"place_id": 0})
    expect = [l for l, p in base.scores.items() if p > 0.5]  # no offsets: the plain 0.5 threshold
    assert base.prediction == expect
    on = _models({META_KEY: {"version": 1, "reader": {"what_was_there": {"32": 100.0, "128": -100.0}}}})
    assert _filled(on, budget=8).answer("what_was_there", {"place_id": 0}).prediction == on.vocab  # nearest: 32
    assert _filled(on, budget=200).answer("what_was_there", {"place_id": 0}).prediction == []  # nearest: 128
    assert _filled(on).answer("first_visit", {"place_id": 1}).prediction == \
        _filled(plain).answer("first_visit", {"place_id": 1}).prediction  # no first_visit offsets: unchanged
    # the offsets are saved with the weights and with a memory map
    on.save(tmp_path / "w")
    assert Models.load(tmp_path / "w").decision_offsets == on.decision_offsets
    mem = _filled(on)
    mem.save(tmp_path / "map")
    assert EpisodicMemory.load(tmp_path / "map").answer("what_was_there", {"place_id": 0}).prediction == on.vocab
