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


def _pool_reader() -> SATReader:
    return SATReader(ReaderConfig(n_labels=3, emb_dim=3, width=16, layers=1, heads=2, max_places=8, max_steps=64))


@torch.no_grad()
def test_place_pool_is_a_union_and_first_visit_stops_at_a_later_visit() -> None:
    m = _pool_reader()
    # place 2 shows label 0 then label 1 (one visit), place 3 shows label 2, then place 2 again shows label 2
    e = torch.tensor([[[5.0, -5, -5], [-5, 5, -5], [-5, -5, 5], [-5, -5, 5]]])
    step, slot = torch.tensor([[0, 1, 5, 6]]), torch.tensor([[2, 2, 3, 2]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    pooled, has, _ = m.place_pool(e, step, slot, mask, torch.tensor([2]), torch.tensor([False]))
    assert has.item() and (pooled[0] > 0).tolist() == [True, True, True]  # what-was-there: the union
    pooled, _, n = m.place_pool(e, step, slot, mask, torch.tensor([2]), torch.tensor([True]))
    assert (pooled[0] > 0).tolist() == [True, True, False]  # step 6 comes after a visit to place 3
    assert n.item() == 2  # the two entries of the first run
    assert m.earliest(step, slot, mask, torch.tensor([2])).item() == 0.0
    assert m.earliest(step, slot, mask, torch.tensor([3])).item() == 5 / 64
    assert m.earliest(step, slot, mask, torch.tensor([5])).item() == 1.0  # no entry: after every kept one
    pooled, has, _ = m.place_pool(e, step, slot, mask, torch.tensor([5]), torch.tensor([False]))
    assert not has.item() and float(pooled.abs().sum()) == 0.0  # the place has no entry: no evidence
    # without a proof of a later visit, a long step gap to the place's earliest entry is penalised
    far = torch.tensor([[0, 1, 5, 60]])
    near_fv, _, _ = m.place_pool(e, step, slot, mask & torch.tensor([[True, True, False, True]]), torch.tensor([2]),
                              torch.tensor([True]))
    far_fv, _, _ = m.place_pool(e, far, slot, mask & torch.tensor([[True, True, False, True]]), torch.tensor([2]),
                             torch.tensor([True]))
    assert far_fv[0, 2] < near_fv[0, 2] - 1.0


@torch.no_grad()
def test_last_seen_pool_points_at_the_latest_entry_showing_the_label() -> None:
    m = _pool_reader()
    # label 1 visible at steps 10 (slot 1) and 20 (slot 4), not at step 30 (slot 6)
    e = torch.tensor([[[0.0, 6, 0], [0, 6, 0], [0, -6, 0]]])
    slot, age = torch.tensor([[1, 4, 6]]), torch.tensor([[10, 20, 30]]) / 64.0
    logp = m.last_seen_pool(e, slot, torch.ones(1, 3, dtype=torch.bool), age, torch.tensor([1]))
    assert logp.shape == (1, 8) and int(logp.argmax()) == 4
    assert float(logp[0, 0]) == -30.0  # slots without entries
    assert torch.allclose(logp.clamp(min=-29).exp().sum(), torch.tensor(1.0), atol=1e-4)


@torch.no_grad()
def test_order_gate_input_does_not_depend_on_stream_length() -> None:
    m = _pool_reader()
    mask = torch.ones(2, 4, dtype=torch.bool)
    # FIFO after a 200- and an 800-step stream (the last quarter kept), LIFO (the start kept)
    fifo = torch.tensor([[150, 160, 180, 199], [600, 650, 700, 799]])
    lifo = torch.tensor([[0, 10, 20, 199], [0, 40, 80, 799]])
    m.cfg.max_steps = 1024
    x_fifo, x_lifo = m.evicted_start(fifo, mask), m.evicted_start(lifo, mask)
    assert torch.allclose(x_fifo, torch.tensor([0.75, 0.75]), atol=0.01) and torch.all(x_lifo == 0)
    assert float(m.evicted_start(fifo, torch.zeros(2, 4, dtype=torch.bool))[0]) == 1.0  # empty memory: closed
    m.cfg.order_gate_relative = False  # weights from before: a fraction of max_steps
    assert torch.allclose(m.evicted_start(fifo, mask), fifo[:, 0] / 1024.0)


def test_weights_without_a_pooled_read_still_load() -> None:
    from spatial_memory.episodic.encoder import ObservationEncoder
    from spatial_memory.episodic.memory import Models

    cfg = ReaderConfig(n_labels=3, emb_dim=4, width=16, layers=1, place_pool=False)
    meta_reader = {k: v for k, v in cfg.to_dict().items() if k not in ("place_pool", "order_gate_relative")}  # as written before
    meta = {"vocab": ["a", "b", "c"], "reader": meta_reader, "encoder": {"dim": 4}}
    m = Models.from_state(meta, ObservationEncoder(3, 4).state_dict(), SATReader(cfg).state_dict())
    assert not m.reader.pooled and not m.reader.cfg.order_gate_relative  # older weights keep their gate input
    assert SATReader(ReaderConfig(n_labels=3, emb_dim=4, width=16, layers=1, place_embedding="none")).pooled is False


def test_multi_label_loss_weighs_positive_terms() -> None:
    from spatial_memory.episodic.training import task_loss

    logits = torch.zeros(1, 4)
    q = {"multi": np.array([[1, 1, 0, 0]], np.float32)}
    base = task_loss("what_was_there", logits, q, np.array([0]))
    heavy = task_loss("what_was_there", logits, q, np.array([0]), pos_weight=2.0)
    # at logit 0 every term is log 2: (2 positives x 2 + 2 negatives) / 4 = 1.5 log 2
    assert torch.allclose(base, torch.tensor([np.log(2.0)], dtype=torch.float32))
    assert torch.allclose(heavy, 1.5 * base)


def test_multi_label_loss_ignores_masked_categories() -> None:
    from spatial_memory.episodic.training import QuerySampler, task_loss

    logits = torch.tensor([[5.0, 0.0, 0.0, -9.0]])
    q = {"multi": np.array([[0, 1, 0, 0]], np.float32), "mask": np.array([[0, 1, 1, 0]], np.float32)}
    masked = task_loss("what_was_there", logits, q, np.array([0]))
    # only categories 1 and 2 count: both at logit 0 -> log 2 each; the wrong, confident category 0 does not
    assert torch.allclose(masked, torch.tensor([np.log(2.0)], dtype=torch.float32))
    assert float(task_loss("what_was_there", logits, {"multi": q["multi"]}, np.array([0]))) > float(masked) + 0.5
    # the training sampler draws what_was_there masks like the cached queries: categories seen from
    # more than half of the places are never scored
    from spatial_memory.episodic.tasks import Episode

    places = np.repeat(np.arange(4), 6)
    seen = np.zeros((24, 4), bool)
    seen[:, 0] = True
    seen[places == 1, 2] = True
    ep = Episode("m", np.zeros((1, 2, 2, 3), np.uint8), np.zeros(24, np.int64), np.zeros((24, 3)), np.zeros(24), places,
                 seen, places, places, {})
    rng = np.random.default_rng(0)
    sampler = QuerySampler(8)
    for _ in range(10):
        perm, args, _, multi, mask = sampler.sample(ep, "what_was_there", rng)
        assert mask.tolist() == [0, 1, 1, 1] and args[0] == perm[1]  # place 1 is the only one with a distinctive view
        assert sampler.sample(ep, "first_visit", rng)[4].tolist() == [1, 1, 1, 1]
