"""Adaptive Memory Allocators: which entry to evict when the episodic store is full.

(a) :class:`StrategyBandit`: the SAT paper's allocator. A contextual bandit (one-step
    Q-learning, epsilon-greedy) whose context is the task descriptor (here task x budget) and
    whose arms are the fixed write strategies; the reward of an episode is the reader's task
    score of the memory that strategy produced. It never sees the memory itself.

(b) :class:`AllocationEnv` + PPO (stable-baselines3): a per-write policy that also observes
    memory statistics (occupancy and visit shares, entry ages, current place, task id,
    budget) and picks an eviction action (``store.ACTIONS``: evict oldest / newest / from the
    most- or least-visited place / from the largest place queue / skip the write). An action
    holds for the next ``decision_every`` writes (fewer, more consequential decisions make the
    end-of-episode reward learnable in a few thousand episodes). Reward: the reader's task
    score at the end of the episode; no shaping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from spatial_memory.errors import ConfigError

from .calibration import Offsets, offset_for
from .reader import SATReader
from .store import ACTIONS, EpisodicEntry, EpisodicStore
from .tasks import TASKS, Episode
from .training import episode_scores

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- (a) bandit
class StrategyBandit:
    """Q-table ``[n_contexts, n_arms]`` learned by one-step Q-learning with epsilon-greedy arms.

    ``lr``: constant step size (tracks rewards that drift, e.g. a reader still training) or
    ``None`` for sample averages, the unbiased estimate when rewards are stationary (a fixed
    reader's scores): with a constant step of 0.1 a Q value weighs mostly its last ~20 noisy pulls.
    """

    def __init__(self, n_contexts: int, n_arms: int, lr: float | None = 0.1, epsilon: float = 0.3, seed: int = 0) -> None:
        if n_contexts <= 0 or n_arms <= 0:
            raise ConfigError(f"bandit needs positive contexts/arms, got {n_contexts}, {n_arms}")
        if (lr is not None and not 0.0 < lr <= 1.0) or not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"bandit lr must be in (0, 1] and epsilon in [0, 1], got {lr}, {epsilon}")
        self.q = np.zeros((n_contexts, n_arms))
        self.n = np.zeros((n_contexts, n_arms), dtype=np.int64)
        self.lr, self.epsilon = lr, epsilon
        self.rng = np.random.default_rng(seed)

    def act(self, context: int, explore: bool = True) -> int:
        if explore and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.q.shape[1]))
        return int(np.argmax(self.q[context]))

    def update(self, context: int, arm: int, reward: float) -> None:
        """One-step Q-learning target = reward (the episode ends after the choice)."""
        self.n[context, arm] += 1
        # the first pulls (all of them when lr is None) use a running mean, then a constant step
        step = 1.0 / self.n[context, arm] if self.lr is None else max(self.lr, 1.0 / self.n[context, arm])
        self.q[context, arm] += step * (reward - self.q[context, arm])

    def train(self, reward_fn, n_contexts_sampler, iters: int) -> "StrategyBandit":
        """``reward_fn(context, arm) -> float`` sampled ``iters`` times at contexts from ``n_contexts_sampler()``;
        epsilon decays linearly to a tenth of its start."""
        eps0 = self.epsilon
        for i in range(iters):
            self.epsilon = eps0 * (1.0 - 0.9 * i / max(iters - 1, 1))
            c = int(n_contexts_sampler())
            a = self.act(c)
            self.update(c, a, float(reward_fn(c, a)))
        self.epsilon = eps0
        return self

    def policy(self) -> np.ndarray:
        """Greedy arm per context ``[n_contexts]``."""
        return self.q.argmax(1)

    def state(self) -> dict:
        return {"q": self.q.tolist(), "n": self.n.tolist(), "lr": self.lr, "epsilon": self.epsilon}

    @classmethod
    def from_state(cls, st: dict) -> "StrategyBandit":
        q = np.asarray(st["q"], dtype=np.float64)
        b = cls(q.shape[0], q.shape[1], None if st["lr"] is None else float(st["lr"]), float(st["epsilon"]))
        b.q, b.n = q, np.asarray(st["n"], dtype=np.int64)
        return b


def bandit_context(task: str, budget: int, budgets: tuple[int, ...]) -> int:
    """Context index of (task, budget): ``task_index * len(budgets) + budget_index``."""
    if budget not in budgets:
        raise ConfigError(f"budget {budget} is not one of the allocator's budgets {list(budgets)}")
    return TASKS.index(task) * len(budgets) + budgets.index(budget)


def train_strategy_bandit(scores: np.ndarray, budgets: tuple[int, ...], iters: int = 4000, seed: int = 0,
                          episodes_per_pull: int = 8) -> StrategyBandit:
    """Bandit over (task, budget) contexts from reader scores ``[N episodes, tasks, strategies, budgets]``.

    Each pull samples a context and ``episodes_per_pull`` episodes; the reward is the reader's
    mean score of the memories the chosen strategy built for them. One episode has only
    ``queries_per_task`` queries, so a single-episode reward is too noisy to separate
    strategies a few points apart; averaging a handful of episodes per pull estimates the
    expected task score the bandit should rank arms by.
    """
    if episodes_per_pull <= 0:
        raise ConfigError(f"episodes_per_pull must be positive, got {episodes_per_pull}")
    rng = np.random.default_rng(seed)
    N, nT, nS, nB = scores.shape
    bandit = StrategyBandit(nT * nB, nS, lr=None, seed=seed)  # fixed reader: stationary rewards
    ep: dict[str, np.ndarray] = {"i": np.zeros(1, np.int64)}

    def sampler() -> int:
        ep["i"] = rng.integers(0, N, episodes_per_pull)
        return int(rng.integers(nT * nB))

    def reward(c: int, a: int) -> float:
        return float(scores[ep["i"], c // nB, a, c % nB].mean())

    return bandit.train(reward, sampler, iters)


# ----------------------------------------------------------------------------- (b) policy
OBS_DIM = 18
OBS_HIGH = 10.0  # features are shares/ratios; the cap only bounds the Box space


def memory_features(store: EpisodicStore, place: int, t: int, T: int, task: str, n_places_seen: int) -> np.ndarray:
    """Observation ``[18] float32`` of the allocator policy at step ``t`` (see AllocationEnv)."""
    o = np.zeros(OBS_DIM, np.float32)
    o[TASKS.index(task)] = 1.0
    L = store.budget
    o[4] = L / 128.0
    o[5] = t / max(T, 1)
    occ = store.occupancy()
    steps = store.steps()
    total_visits = max(store.total_visits, 1)
    o[6] = len(occ) / 16.0
    o[7] = occ.get(place, 0) / L
    o[8] = store.visit_count(place) / total_visits
    o[9] = float(place not in occ)
    if occ:
        shares = np.array([store.visit_count(p) for p in occ]) / total_visits
        o[10], o[11] = shares.max(), shares.min()
        o[15] = sum(c for p, c in occ.items() if store.visit_count(p) / total_visits < 0.1) / L
        o[17] = max(occ.values()) / L
    if steps.size:
        o[12] = (t - steps[0]) / max(T, 1)
        o[13] = (t - steps[-1]) / max(T, 1)
        o[14] = (t - steps.mean()) / max(T, 1)
    o[16] = n_places_seen / 16.0
    return np.clip(o, 0.0, OBS_HIGH)


class AllocationEnv(gym.Env):
    """Per-write memory allocation as an MDP (one gym episode = one memory episode + one task).

    Observation: :func:`memory_features` (``Box(0, 10, [18])``). Action: ``Discrete(6)`` index
    into ``store.ACTIONS``, applied to the next ``decision_every`` writes. Writes while the
    store has free slots need no decision and are streamed through. Reward: 0 until the
    episode's last step, then the reader's mean score on the task's queries (multi-label answers
    decoded with the calibrated ``offsets``, as in evaluation).
    """

    metadata = {"render_modes": []}

    def __init__(self, episodes: list[Episode], reader: SATReader, tasks: tuple[str, ...] = TASKS,
                 budgets: tuple[int, ...] = (32, 64, 128), decision_every: int = 16, seed: int = 0,
                 offsets: Offsets | None = None) -> None:
        super().__init__()
        if not episodes:
            raise ConfigError("AllocationEnv needs at least one episode")
        if any(ep.embeddings is None for ep in episodes):
            raise ConfigError("AllocationEnv episodes must carry embeddings (run the encoder first)")
        if decision_every <= 0:
            raise ConfigError(f"decision_every must be positive, got {decision_every}")
        self.episodes, self.reader, self.tasks, self.budgets = episodes, reader, tuple(tasks), tuple(budgets)
        self.decision_every = decision_every
        self.offsets = offsets  # calibrated decision offsets of the multi-label answers (None = logit 0)
        self.observation_space = gym.spaces.Box(0.0, OBS_HIGH, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self._rng = np.random.default_rng(seed)
        self._fixed: tuple[int, str, int] | None = None
        self.ep: Episode = episodes[0]
        self.task, self.budget = self.tasks[0], self.budgets[0]

    def set_episode(self, index: int, task: str, budget: int) -> None:
        """Make the next ``reset`` use this (episode, task, budget) instead of a random one."""
        self._fixed = (index, task, budget)

    def _write(self, action: str | None) -> None:
        t = self.t
        e = EpisodicEntry(self._dummy, int(self.ep.places[t]), self._dummy, 0.0, t, step=t)
        self.store.write(e, action)
        self._seen_places.add(int(self.ep.places[t]))
        self.t += 1

    def _obs(self) -> np.ndarray:
        T = self.ep.n_steps
        place = int(self.ep.places[min(self.t, T - 1)])
        return memory_features(self.store, place, self.t, T, self.task, len(self._seen_places))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self._fixed is not None:
            i, self.task, self.budget = self._fixed
            self._fixed = None
        else:
            i = int(self._rng.integers(len(self.episodes)))
            self.task = self.tasks[int(self._rng.integers(len(self.tasks)))]
            self.budget = self.budgets[int(self._rng.integers(len(self.budgets)))]
        self.ep = self.episodes[i]
        self.store = EpisodicStore(self.budget, "fifo")
        self._dummy = np.zeros(0, np.float32)
        self._seen_places: set[int] = set()
        self.t = 0
        while self.t < self.ep.n_steps - 1 and not self.store.full:
            self._write(None)
        return self._obs(), {"task": self.task, "budget": self.budget, "episode": self.ep.name}

    def step(self, action):
        act = ACTIONS[int(action)]
        for _ in range(self.decision_every):
            if self.t >= self.ep.n_steps:
                break
            self._write(act)
        done = self.t >= self.ep.n_steps
        reward = 0.0
        info: dict = {}
        if done:
            off = offset_for(self.offsets, self.task, self.budget)
            reward = float(episode_scores(self.reader, self.ep, self.store.steps(), self.task, off).mean())
            info["score"] = reward
        return self._obs(), reward, done, False, info


@dataclass
class PolicyConfig:
    total_timesteps: int = 20000
    decision_every: int = 16
    n_steps: int = 512
    batch_size: int = 128
    learning_rate: float = 3e-4
    ent_coef: float = 0.0
    clip_range: float = 0.1
    net_arch: tuple[int, ...] = (64, 64)
    bc_epochs: int = 600  # behaviour-cloning warm start from the best fixed strategy per (task, budget)
    seed: int = 0


def best_fixed_actions(scores: np.ndarray, tasks: tuple[str, ...], budgets: tuple[int, ...],
                       strategies: tuple[str, ...]) -> dict[tuple[str, int], int]:
    """Action index of the best fixed strategy per (task, budget) from scores ``[N, tasks, strategies, budgets]``."""
    from .store import STRATEGY_ACTION

    mean = scores.mean(0)
    return {(t, L): ACTIONS.index(STRATEGY_ACTION[strategies[int(mean[ti, :, bi].argmax())]])
            for ti, t in enumerate(tasks) for bi, L in enumerate(budgets)}


def collect_demos(env: "AllocationEnv", teacher: dict[tuple[str, int], int]) -> tuple[np.ndarray, np.ndarray]:
    """Observations ``[n, OBS_DIM]`` and teacher actions ``[n]`` from rolling out ``teacher`` on every
    (episode, task, budget) of ``env``."""
    obs_l, act_l = [], []
    for i in range(len(env.episodes)):
        for task in env.tasks:
            for L in env.budgets:
                env.set_episode(i, task, L)
                obs, _ = env.reset()
                a = teacher[(task, L)]
                done = False
                while not done:
                    obs_l.append(obs)
                    act_l.append(a)
                    obs, _, done, _, _ = env.step(a)
    return np.asarray(obs_l, np.float32), np.asarray(act_l, np.int64)


def behaviour_clone(policy, obs: np.ndarray, actions: np.ndarray, epochs: int, lr: float = 3e-3, seed: int = 0) -> float:
    """Fit the policy's action distribution to ``actions`` (cross-entropy, full batch); returns the final accuracy."""
    torch.manual_seed(seed)
    x = torch.from_numpy(obs)
    y = torch.from_numpy(actions)
    params = [p for n, p in policy.named_parameters() if "value" not in n]
    opt = torch.optim.Adam(params, lr=lr)
    policy.set_training_mode(True)
    for _ in range(epochs):
        loss = torch.nn.functional.cross_entropy(policy.get_distribution(x).distribution.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        return float((policy.get_distribution(x).distribution.logits.argmax(-1) == y).float().mean())


def train_policy(env: AllocationEnv, pcfg: PolicyConfig, progress: bool = True,
                 teacher: dict[tuple[str, int], int] | None = None):
    """PPO on ``env``, optionally warm-started by behaviour cloning of ``teacher`` (an action per
    (task, budget), e.g. :func:`best_fixed_actions`); returns the sb3 model (save its
    ``policy.state_dict()`` as safetensors)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from tqdm import tqdm

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=pcfg.total_timesteps, desc="allocator policy", disable=not progress, leave=False)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    torch.manual_seed(pcfg.seed)
    model = PPO("MlpPolicy", env, n_steps=pcfg.n_steps, batch_size=pcfg.batch_size, learning_rate=pcfg.learning_rate,
                ent_coef=pcfg.ent_coef, clip_range=pcfg.clip_range, gamma=1.0, gae_lambda=0.95, n_epochs=8,
                seed=pcfg.seed, verbose=0, policy_kwargs={"net_arch": list(pcfg.net_arch)}, device="cpu")
    # sb3's default logger creates a /tmp/SB3-<date> folder on every learn(); an explicit logger with
    # no outputs writes nothing (set before learn(), it is kept as a custom logger)
    model.set_logger(Logger(folder=None, output_formats=[]))
    if teacher is not None and pcfg.bc_epochs > 0:
        obs, acts = collect_demos(env, teacher)
        acc = behaviour_clone(model.policy, obs, acts, pcfg.bc_epochs, seed=pcfg.seed)
        log.info("behaviour cloning: %d samples, accuracy %.3f", len(acts), acc)
    if pcfg.total_timesteps > 0:
        model.learn(total_timesteps=pcfg.total_timesteps, callback=_Progress())
    return model


def make_policy(net_arch: tuple[int, ...]):
    """An untrained sb3 ActorCriticPolicy with the allocator's spaces (to load saved weights into)."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    return ActorCriticPolicy(gym.spaces.Box(0.0, OBS_HIGH, (OBS_DIM,), np.float32), gym.spaces.Discrete(len(ACTIONS)),
                             lr_schedule=lambda _: 0.0, net_arch=list(net_arch))


def policy_scores(policy, env: "AllocationEnv") -> np.ndarray:
    """Deterministic scores ``[N episodes, tasks, budgets]`` of ``policy`` on every episode of ``env``."""
    out = np.zeros((len(env.episodes), len(env.tasks), len(env.budgets)))
    for n in range(len(env.episodes)):
        for ti, task in enumerate(env.tasks):
            for bi, L in enumerate(env.budgets):
                out[n, ti, bi] = run_policy(policy, env, n, task, L)[0]
    return out


@torch.no_grad()
def run_policy(policy, env: AllocationEnv, index: int, task: str, budget: int) -> tuple[float, list[int]]:
    """Deterministic rollout of ``policy`` on one (episode, task, budget): ``(score, actions)``."""
    env.set_episode(index, task, budget)
    obs, _ = env.reset()
    acts = []
    while True:
        a, _ = policy.predict(obs, deterministic=True)
        acts.append(int(a))
        obs, r, done, _, info = env.step(int(a))
        if done:
            return float(info["score"]), acts

