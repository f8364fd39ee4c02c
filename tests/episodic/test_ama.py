"""Allocators: the bandit finds the best arm per context; AllocationEnv is a valid gymnasium env."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from spatial_memory.episodic.ama import (OBS_DIM, AllocationEnv, StrategyBandit, bandit_context, behaviour_clone,
                                         best_fixed_actions, collect_demos, make_policy, run_policy, train_strategy_bandit)
from spatial_memory.episodic.reader import ReaderConfig, SATReader
from spatial_memory.episodic.store import ACTIONS
from spatial_memory.episodic.tasks import TASKS
from spatial_memory.errors import ConfigError


def test_bandit_converges_on_synthetic_reward_table() -> None:
    rng = np.random.default_rng(0)
    means = np.array([[0.2, 0.8, 0.5], [0.7, 0.3, 0.4], [0.1, 0.2, 0.6], [0.5, 0.45, 0.1]])  # [contexts, arms]
    bandit = StrategyBandit(4, 3, lr=0.05, epsilon=0.3, seed=1)
    ctx = {"c": 0}

    def sample() -> int:
        ctx["c"] = int(rng.integers(4))
        return ctx["c"]

    bandit.train(lambda c, a: float(rng.normal(means[c, a], 0.2)), sample, 3000)
    assert bandit.policy().tolist() == means.argmax(1).tolist()
    np.testing.assert_allclose(bandit.q[np.arange(4), means.argmax(1)], means.max(1), atol=0.1)
    assert StrategyBandit.from_state(bandit.state()).policy().tolist() == bandit.policy().tolist()


def test_bandit_sample_average_is_the_mean_of_its_pulls() -> None:
    bandit = StrategyBandit(1, 2, lr=None, epsilon=0.0, seed=0)
    rewards = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    for r in rewards:
        bandit.update(0, 1, r)
    assert bandit.q[0, 1] == pytest.approx(np.mean(rewards))
    tracking = StrategyBandit(1, 2, lr=0.5, epsilon=0.0, seed=0)
    for r in rewards:
        tracking.update(0, 1, r)
    assert tracking.q[0, 1] != pytest.approx(np.mean(rewards))  # a constant step weighs recent pulls more
    restored = StrategyBandit.from_state(bandit.state())
    assert restored.lr is None and restored.q[0, 1] == bandit.q[0, 1]
    with pytest.raises(ConfigError):
        StrategyBandit(1, 2, lr=0.0)


def test_bandit_from_score_matrix_picks_best_strategy() -> None:
    rng = np.random.default_rng(3)
    N, nT, nS, nB = 20, 4, 5, 2
    scores = rng.uniform(0.0, 0.3, (N, nT, nS, nB))
    best = rng.integers(0, nS, (nT, nB))
    for t in range(nT):
        for b in range(nB):
            scores[:, t, best[t, b], b] += 0.4
    bandit = train_strategy_bandit(scores, (16, 32), iters=3000, seed=0)
    for t, task in enumerate(TASKS):
        for b, L in enumerate((16, 32)):
            assert bandit.act(bandit_context(task, L, (16, 32)), explore=False) == best[t, b]
    with pytest.raises(ConfigError):
        bandit_context("order", 64, (16, 32))


@pytest.fixture(scope="module")
def env(syn_episodes) -> AllocationEnv:
    reader = SATReader(ReaderConfig(n_labels=6, emb_dim=8, width=16, layers=1, max_places=8, max_steps=64))
    return AllocationEnv(syn_episodes[:4], reader, TASKS, (16, 32), decision_every=8, seed=0)


def test_allocation_env_passes_gymnasium_check(env: AllocationEnv) -> None:
    check_env(env, skip_render_check=True)


def test_allocation_env_episode_ends_with_reader_score(env: AllocationEnv) -> None:
    env.set_episode(0, "what_was_there", 16)
    obs, info = env.reset()
    assert obs.shape == (OBS_DIM,) and info["budget"] == 16 and env.store.full
    total, done, n = 0.0, False, 0
    while not done:
        obs, r, done, trunc, info = env.step(ACTIONS.index("evict_oldest"))
        total += r
        n += 1
    assert 0.0 <= total <= 1.0 and info["score"] == total
    assert n == int(np.ceil((48 - 16) / 8)) and len(env.store) == 16
    # an untrained policy still rolls out deterministically
    pol = make_policy((8,))
    s1, a1 = run_policy(pol, env, 1, "order", 32)
    s2, a2 = run_policy(pol, env, 1, "order", 32)
    assert s1 == s2 and a1 == a2


def test_allocation_env_rejects_bad_input(syn_episodes) -> None:
    reader = SATReader(ReaderConfig(n_labels=6, emb_dim=8, width=16, layers=1))
    with pytest.raises(ConfigError):
        AllocationEnv([], reader)
    with pytest.raises(ConfigError):
        AllocationEnv(syn_episodes[:1], reader, decision_every=0)


def test_bandit_reward_averages_episodes() -> None:
    rng = np.random.default_rng(5)
    N, nT, nS, nB = 16, 4, 5, 1
    # per-episode scores are noisy (sd 0.3) but arm 2 is better by 0.1 in expectation everywhere
    scores = np.clip(rng.normal(0.5, 0.3, (N, nT, nS, nB)), 0, 1)
    scores[:, :, 2] = np.clip(scores[:, :, 2] + 0.1, 0, 1)
    scores[:, :, 2] += 0.5 - scores[:, :, 2].mean(0)  # exact expectations: arm 2 = 0.5 + 0.1 margin over the rest
    for s in range(nS):
        if s != 2:
            scores[:, :, s] += 0.4 - scores[:, :, s].mean(0)
    bandit = train_strategy_bandit(scores, (32,), iters=3000, seed=0, episodes_per_pull=N)
    assert (bandit.policy() == 2).all()
    with pytest.raises(ConfigError):
        train_strategy_bandit(scores, (32,), iters=10, episodes_per_pull=0)


def test_behaviour_cloning_reproduces_the_teacher(env: AllocationEnv) -> None:
    teacher = {(t, L): (i + j) % len(ACTIONS) for i, t in enumerate(TASKS) for j, L in enumerate((16, 32))}
    obs, acts = collect_demos(env, teacher)
    assert obs.shape == (len(acts), OBS_DIM) and set(acts.tolist()) <= set(teacher.values())
    pol = make_policy((32,))
    assert behaviour_clone(pol, obs, acts, epochs=600) == 1.0
    for (task, L), a in teacher.items():
        _, taken = run_policy(pol, env, 2, task, L)
        assert set(taken) == {a}
    scores = np.random.default_rng(0).random((3, len(TASKS), 5, 2))
    best = best_fixed_actions(scores, TASKS, (16, 32), ("fifo", "lifo", "mvfo", "lvfo", "sat_pm"))
    assert best[("order", 32)] == scores.mean(0)[3, :, 1].argmax()  # strategy i <-> action i


def test_policy_training_writes_no_logger_folders(env: AllocationEnv, tmp_path, monkeypatch) -> None:
    import tempfile

    from spatial_memory.episodic.ama import PolicyConfig, train_policy

    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where sb3's default logger would create SB3-<date>
    model = train_policy(env, PolicyConfig(total_timesteps=64, n_steps=32, batch_size=16, bc_epochs=0), progress=False)
    assert model.num_timesteps >= 64
    assert list(tmp_path.iterdir()) == []
