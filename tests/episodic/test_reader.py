"""SAT reader: shapes of every variant, tiny training beats chance, place embedding beats T-FIFO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatial_memory.episodic.reader import TASK_INDEX, ReaderConfig, SATReader
from spatial_memory.episodic.store import simulate_kept
from spatial_memory.episodic.tasks import TASKS
from spatial_memory.episodic.training import TrainConfig, episode_scores, memory_tensors, train_reader
from spatial_memory.errors import ConfigError


@pytest.mark.parametrize("time_emb", ["sinusoidal", "learned"])
@pytest.mark.parametrize("place_emb,read", [("sinusoidal", "flat"), ("learned", "flat"), ("sinusoidal", "hierarchical"),
                                            ("learned", "hierarchical"), ("none", "flat")])
def test_reader_output_shapes(time_emb: str, place_emb: str, read: str, syn_episodes) -> None:
    cfg = ReaderConfig(n_labels=6, emb_dim=8, width=16, layers=1, heads=2, max_places=8, max_steps=64,
                       time_embedding=time_emb, place_embedding=place_emb, read=read)
    model = SATReader(cfg)
    eps = syn_episodes[:3]
    kept = [simulate_kept(ep.places, 16, "fifo") for ep in eps]
    kept[1] = kept[1][:5]  # ragged memories are padded and masked
    emb, step, place, mask = memory_tensors(eps, kept)
    assert emb.shape == (3, 16, 8) and mask[1].sum() == 5
    for task in TASKS:
        args = torch.from_numpy(np.stack([ep.queries[task]["args"][0] for ep in eps]))
        out = model(emb, step, place, mask, torch.full((3,), TASK_INDEX[task]), args)
        assert out["what_was_there"].shape == (3, 6) and out["first_visit"].shape == (3, 6)
        assert out["last_seen"].shape == (3, 8) and out["order"].shape == (3, 2)
        assert all(torch.isfinite(v).all() for v in out.values())


def test_reader_reads_empty_memory() -> None:
    model = SATReader(ReaderConfig(n_labels=4, emb_dim=8, width=16, layers=1, read="hierarchical"))
    z = torch.zeros(2, 1, 8)
    out = model(z, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool),
                torch.tensor([0, 3]), torch.tensor([[0, -1], [0, 1]]))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_reader_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        ReaderConfig(place_embedding="rooms").validate()
    with pytest.raises(ConfigError):
        ReaderConfig(place_embedding="none", read="hierarchical").validate()
    with pytest.raises(ConfigError):
        ReaderConfig(width=30, heads=4).validate()


def _mean_score(model, eps, task: str, L: int) -> float:
    return float(np.mean([episode_scores(model, ep, simulate_kept(ep.places, L, "fifo"), task).mean() for ep in eps]))


def test_training_beats_chance_and_place_embedding_beats_tfifo(syn_episodes) -> None:
    torch.set_num_threads(1)
    train, test = syn_episodes[:18], syn_episodes[18:]
    base = dict(n_labels=6, emb_dim=8, width=32, layers=1, heads=2, max_places=8, max_steps=64)
    tcfg = TrainConfig(steps=250, batch=32, lr=3e-3, strategies=("fifo",), budgets=(48,))
    sat, _ = train_reader(train, ReaderConfig(**base, place_embedding="learned"), tcfg, ("what_was_there",), progress=False)
    tfifo, _ = train_reader(train, ReaderConfig(**base, place_embedding="none"), tcfg, ("what_was_there",), progress=False)
    s_sat = _mean_score(sat, test, "what_was_there", 48)
    s_t = _mean_score(tfifo, test, "what_was_there", 48)
    # chance: predicting every label gives F1 = 2p/(1+p) with p ~ 0.4 label density -> ~0.57
    dens = np.mean([ep.queries["what_was_there"]["multi"].mean() for ep in test])
    chance = 2 * dens / (1 + dens)
    assert s_sat > chance + 0.15, (s_sat, chance)
    assert s_sat > s_t + 0.15, (s_sat, s_t)
