"""End-to-end episodic experiment: simulated walks -> encoder -> readers -> allocators -> results.

Lives in ``emem`` because it joins two layers: the simulator (``sim.episodes`` walks and
renders apartments into plain records) and the memory (``spatial_memory.episodic``: tasks,
reader, allocators). ``run_training`` produces a weights directory (what ships in
``spatial_memory/episodic/weights``) and ``run_eval`` recomputes the evaluation table from a
weights directory. Both read one YAML config (``config/episodic/default.yaml``; ``tiny.yaml``
for tests).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from spatial_memory.errors import ConfigError

from spatial_memory.episodic.ama import (AllocationEnv, PolicyConfig, StrategyBandit, bandit_context, best_fixed_actions,
                                         make_policy, run_policy, train_policy, train_strategy_bandit)
from spatial_memory.episodic.calibration import META_KEY, OFFSETS_VERSION, DEFAULT_GRID, Offsets, calibrate_offsets
from spatial_memory.episodic.encoder import encode, train_encoder
from spatial_memory.episodic.memory import DEFAULT_WEIGHTS, Models
from spatial_memory.episodic.oracle import oracle_scores
from spatial_memory.episodic.reader import ReaderConfig, SATReader
from spatial_memory.episodic.store import ACTIONS, STRATEGIES
from spatial_memory.episodic.tasks import TASKS, Episode, EpisodeConfig, SplitConfig, load_split
from spatial_memory.episodic.training import KeptCache, TrainConfig, score_matrix, train_reader

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config" / "episodic"


@dataclass
class ExperimentConfig:
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encoder_dim: int = 32
    encoder_epochs: int = 3
    encoder_max_views: int = 3000
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budgets: tuple[int, ...] = (32, 64, 128)
    bandit_iters: int = 4000
    bandit_episodes_per_pull: int = 8
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    threads: int = 1  # 1 is fastest on a shared 2-core machine (no spin-waiting between threads)


def _build(cls, d: dict | None):
    d = dict(d or {})
    names = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    out = {}
    for k, v in d.items():
        default = getattr(cls(), k) if k not in ("episode", "split", "reader", "train", "policy") else None
        out[k] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return cls(**out)


def load_config(name_or_path: str | Path = "default") -> ExperimentConfig:
    """Read ``config/episodic/<name>.yaml`` or a YAML path into an :class:`ExperimentConfig`."""
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise ConfigError(f"episodic config {p} not found")
    raw = yaml.safe_load(p.read_text()) or {}
    sub = {"episode": EpisodeConfig, "split": SplitConfig, "reader": ReaderConfig, "train": TrainConfig, "policy": PolicyConfig}
    kw = {k: _build(c, raw.pop(k, None)) for k, c in sub.items()}
    top = _build(ExperimentConfig, {k: v for k, v in raw.items()})
    for k, v in kw.items():
        setattr(top, k, v)
    return top


def _config_dict(cfg: ExperimentConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def build_vocab(cfg: ExperimentConfig) -> list[str]:
    """Object categories over the training scenes (the reader's label space)."""
    from sim.episodes import scene_vocab

    return scene_vocab(cfg.episode.scene_generator, cfg.split.seeds("train"), cfg.episode.n_rooms)


def load_episodes(name: str, cfg: ExperimentConfig, vocab: list[str], cache_dir: Path | None = None,
                  progress: bool = True) -> list[Episode]:
    """One split's episodes: simulator walks (``sim.episodes``) turned into task episodes, cached."""
    import numba

    from sim.episodes import WalkConfig, generate_record

    walk = WalkConfig(**cfg.episode.walk_kwargs())
    # The renderer's parallel numba kernels spin-wait on a shared, loaded machine: tiny 64x48
    # views render several times faster on one thread.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return load_split(name, cfg.episode, cfg.split, vocab, lambda s, w: generate_record(s, w, walk, vocab),
                          cache_dir, progress)
    finally:
        numba.set_num_threads(threads)


def prepare_data(cfg: ExperimentConfig, cache_dir: Path | None = None, progress: bool = True):
    """Vocabulary and the three splits (generated once, then cached)."""
    vocab = build_vocab(cfg)
    splits = {s: load_episodes(s, cfg, vocab, cache_dir, progress) for s in ("train", "val", "test")}
    return vocab, splits


def embed(encoder, ep: Episode) -> None:
    """Encode each distinct view once; steps share their view's embedding."""
    ep.embeddings = encode(encoder, ep.views)[ep.view_index]


def embed_all(encoder, splits: dict[str, list[Episode]]) -> None:
    for eps in splits.values():
        for ep in eps:
            embed(encoder, ep)


def run_training(cfg: ExperimentConfig, out: Path, task: str = "mixed", cache_dir: Path | None = None,
                 with_ama: bool = True, progress: bool = True) -> dict:
    """Train encoder + SAT reader (+ T-FIFO baseline, bandit, policy) and write ``out``.

    Returns:
        Timings and training statistics (also stored in ``out/meta.json``).
    """
    if task != "mixed" and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose mixed or one of {list(TASKS)}")
    torch.set_num_threads(cfg.threads)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    vocab, splits = prepare_data(cfg, cache_dir, progress)
    times["episodes_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.train.seed)
    firsts = [np.unique(ep.view_index, return_index=True)[1] for ep in splits["train"]]  # a step showing each view
    rgb = np.concatenate([ep.views for ep in splits["train"]])
    seen = np.concatenate([ep.seen[f] for ep, f in zip(splits["train"], firsts)])
    pick = rng.permutation(len(rgb))[: cfg.encoder_max_views]
    encoder, enc_stats = train_encoder(rgb[pick], seen[pick], cfg.encoder_dim, cfg.encoder_epochs, progress=progress)
    embed_all(encoder, splits)
    times["encoder_s"] = time.perf_counter() - t0

    tasks = TASKS if task == "mixed" else (task,)
    rcfg = ReaderConfig(**{**asdict(cfg.reader), "n_labels": len(vocab), "emb_dim": cfg.encoder_dim,
                           "max_steps": max(cfg.reader.max_steps, cfg.episode.n_steps)})
    tcfg = TrainConfig(**{**asdict(cfg.train), "budgets": tuple(cfg.budgets)})
    cache = KeptCache()
    reader, rd_stats = train_reader(splits["train"], rcfg, tcfg, tasks, cache, progress)
    times["reader_s"] = rd_stats["seconds"]
    models = Models(encoder, reader, vocab, {})
    if task == "mixed":
        # the T-FIFO baseline: no place embedding, FIFO writes only (the only memories it is evaluated
        # on); otherwise the SAT reader's training: same episodes, steps, batch, schedule and seed
        rcfg_t = rcfg.time_only()
        tcfg_t = TrainConfig(**{**asdict(tcfg), "strategies": ("fifo",)})
        tfifo, tf_stats = train_reader(splits["train"], rcfg_t, tcfg_t, tasks, cache, progress)
        times["tfifo_s"] = tf_stats["seconds"]
        models.tfifo_state = tfifo.state_dict()
    meta: dict[str, Any] = {"task": task, "config": _config_dict(cfg), "encoder_stats": enc_stats, "reader_stats": rd_stats}
    # decision thresholds of the F1-scored answers, fitted on validation before anything is scored there
    t0 = time.perf_counter()
    meta[META_KEY] = calibrate(cfg, models, splits["val"], tasks, cache, progress)
    times["calibrate_s"] = time.perf_counter() - t0
    offsets = meta[META_KEY]["reader"]
    if with_ama and task == "mixed":
        t0 = time.perf_counter()
        val_scores = score_matrix(reader, splits["val"], TASKS, STRATEGIES, tuple(cfg.budgets), cache, progress, offsets)
        times["val_scores_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta["bandit"] = fit_bandit(cfg, val_scores).state()
        times["bandit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        state, meta["policy"] = fit_policy(cfg, splits["val"], reader, val_scores, progress, offsets)
        times["policy_s"] = time.perf_counter() - t0
        models.policy_state = state
    times["total_s"] = sum(times.values())
    meta["times"] = times
    models.meta = meta
    models.save(out)
    log.info("episodic training done in %.1f s -> %s", times["total_s"], out)
    return meta


def calibrate(cfg: ExperimentConfig, models: Models, val: list[Episode], tasks: tuple[str, ...] = TASKS,
              cache: KeptCache | None = None, progress: bool = True) -> dict:
    """Fit the decision offsets of the SAT reader (on the memories of every fixed strategy) and of
    the T-FIFO baseline (on its own FIFO memories, so the baseline gets the same treatment) on the
    validation split ``val`` (with embeddings).

    Returns:
        The ``meta.json`` block stored under ``calibration.META_KEY``.
    """
    budgets = tuple(cfg.budgets)
    cache = cache or KeptCache()
    offsets, val_f1 = calibrate_offsets(models.reader, val, STRATEGIES, budgets, tasks, cache, DEFAULT_GRID, progress)
    block: dict[str, Any] = {"version": OFFSETS_VERSION, "grid": list(DEFAULT_GRID), "split": "val",
                             "reader": offsets, "val_f1": val_f1}
    tfifo = models.tfifo_reader()
    if tfifo is not None:
        block["tfifo"], block["tfifo_val_f1"] = calibrate_offsets(tfifo, val, ("fifo",), budgets, tasks, cache,
                                                                  DEFAULT_GRID, progress)
    return block


def fit_bandit(cfg: ExperimentConfig, val_scores: np.ndarray) -> StrategyBandit:
    """AMA (a) on validation reader scores ``[N, tasks, strategies, budgets]``."""
    return train_strategy_bandit(val_scores, tuple(cfg.budgets), cfg.bandit_iters, cfg.train.seed,
                                 cfg.bandit_episodes_per_pull)


def fit_policy(cfg: ExperimentConfig, val: list[Episode], reader: SATReader, val_scores: np.ndarray,
               progress: bool = True, offsets: Offsets | None = None) -> tuple[dict, dict]:
    """AMA (b): behaviour-clone the best fixed strategy per (task, budget) on validation, then
    fine-tune with PPO; keep whichever of the two scores higher on the validation mixed set.

    Returns:
        ``(policy state dict, meta)`` with the validation scores of both candidates.
    """
    import copy

    from spatial_memory.episodic.ama import policy_scores

    budgets = tuple(cfg.budgets)
    env = AllocationEnv(val, reader, TASKS, budgets, cfg.policy.decision_every, cfg.policy.seed, offsets)
    teacher = best_fixed_actions(val_scores, TASKS, budgets, STRATEGIES)
    bc_cfg = PolicyConfig(**{**asdict(cfg.policy), "total_timesteps": 0})
    model = train_policy(env, bc_cfg, progress, teacher)
    bc_state = copy.deepcopy(model.policy.state_dict())
    model.policy.set_training_mode(False)
    val_bc = float(policy_scores(model.policy, env).mean())
    val_ppo = None
    chosen, state = "bc", bc_state
    if cfg.policy.total_timesteps > 0:
        model.learn(total_timesteps=cfg.policy.total_timesteps)
        model.policy.set_training_mode(False)
        val_ppo = float(policy_scores(model.policy, env).mean())
        if val_ppo > val_bc:
            chosen, state = "ppo", model.policy.state_dict()
    meta = {"net_arch": list(cfg.policy.net_arch), "decision_every": cfg.policy.decision_every,
            "teacher": {f"{t}/{L}": ACTIONS[a] for (t, L), a in teacher.items()},
            "val_mixed_bc": round(100 * val_bc, 2), "val_mixed_ppo": None if val_ppo is None else round(100 * val_ppo, 2),
            "val_mixed_best_fixed": round(100 * float(val_scores.mean((0, 1, 3)).max()), 2), "selected": chosen}
    log.info("allocator policy: val mixed bc %.2f, ppo %s -> %s", 100 * val_bc,
             "-" if val_ppo is None else f"{100 * val_ppo:.2f}", chosen)
    return state, meta


def load_bandit(meta: dict) -> StrategyBandit:
    if "bandit" not in meta:
        raise ConfigError("these episodic weights have no bandit allocator (train with --task mixed)")
    return StrategyBandit.from_state(meta["bandit"])


def load_policy(models: Models):
    """The allocator policy stored with ``models`` (an sb3 ActorCriticPolicy in eval mode)."""
    if "policy" not in models.meta or models.policy_state is None:
        raise ConfigError("these episodic weights have no allocator policy (run `emem episodic train-ama --kind policy`)")
    pol = make_policy(tuple(models.meta["policy"]["net_arch"]))
    pol.load_state_dict(models.policy_state)
    pol.set_training_mode(False)
    return pol


def run_eval(cfg: ExperimentConfig, weights: Path | None = None, cache_dir: Path | None = None, progress: bool = True) -> dict:
    """The evaluation table on the test split (see docs/episodic.md for every key)."""
    torch.set_num_threads(cfg.threads)
    weights = Path(weights) if weights else DEFAULT_WEIGHTS
    models = Models.load(weights)
    vocab = build_vocab(cfg)
    if vocab != models.vocab:
        raise ConfigError(f"weights vocabulary {models.vocab} differs from the config's {vocab}; use matching --config")
    test = load_episodes("test", cfg, vocab, cache_dir, progress)
    for ep in test:
        embed(models.encoder, ep)
    budgets = tuple(cfg.budgets)
    cache = KeptCache()
    t0 = time.perf_counter()
    offsets = models.decision_offsets  # calibrated on validation (None for weights from before calibration)
    S = score_matrix(models.reader, test, TASKS, STRATEGIES, budgets, cache, progress, offsets)  # [N, T, S, B]
    # T-FIFO baseline: same data, the shipped reader without place embeddings, FIFO writes
    tfifo = models.tfifo_reader()
    if tfifo is None:
        raise ConfigError(f"{weights}: no T-FIFO baseline reader (train with --task mixed)")
    St = score_matrix(tfifo, test, TASKS, ("fifo",), budgets, cache, progress,
                      models.tfifo_decision_offsets)[:, :, 0]  # [N, T, B]
    table: dict[str, Any] = {}
    mean = S.mean(0)  # [T, S, B]
    for ti, task in enumerate(TASKS):
        table[task] = {}
        for bi, L in enumerate(budgets):
            row = {s: round(100 * float(mean[ti, si, bi]), 2) for si, s in enumerate(STRATEGIES)}
            row["t_fifo"] = round(100 * float(St[:, ti, bi].mean()), 2)
            row["best_strategy"] = STRATEGIES[int(mean[ti, :, bi].argmax())]
            table[task][str(L)] = row
    # ablation: the SAT reader with T-FIFO's own FIFO writes against T-FIFO (place embedding only)
    margins_fifo = {task: round(float(100 * (S[:, ti, STRATEGIES.index("fifo")].mean(0) - St[:, ti].mean(0)).min()), 2)
                    for ti, task in enumerate(TASKS)}
    # the SAT reader with the best write strategy of each (task, budget) on *test* against T-FIFO (an upper bound)
    margins_best = {task: round(float(100 * (mean[ti].max(0) - St[:, ti].mean(0)).min()), 2) for ti, task in enumerate(TASKS)}
    # order after FIFO writes is near chance for any reader (the oracle: ~52 %), so 8 fixed queries
    # per episode cannot rank SAT against T-FIFO there; every ordered place pair of each episode can
    pairs = order_all_pairs(test, {"sat": models.reader, "t_fifo": tfifo}, budgets, cache)
    # strategy margins: best minus second-best per (task, budget), learned reader and oracle
    O = oracle_matrix(test, budgets, cache)  # [N, T, S, B]
    omean = O.mean(0)

    def gap(m: np.ndarray) -> float:
        top = np.sort(m)
        return round(float(100 * (top[-1] - top[-2])), 2)
    result: dict[str, Any] = {
        "n_test_episodes": len(test),
        "budgets": list(budgets),
        "strategies": list(STRATEGIES),
        # {task: {L: logit offset}} fitted on validation; {} = uncalibrated weights (decoded at logit 0)
        "decision_offsets": {"reader": offsets or {}, "tfifo": models.tfifo_decision_offsets or {}},
        "accuracy": table,
        "sat_fifo_minus_tfifo": margins_fifo,
        "sat_fifo_minus_tfifo_min": min(margins_fifo.values()),
        "sat_best_minus_tfifo": margins_best,
        "sat_best_minus_tfifo_min": min(margins_best.values()),
        "order_all_pairs_fifo": pairs,
        "sat_minus_tfifo_order_all_pairs_min": round(min(pairs["sat"][str(L)] - pairs["t_fifo"][str(L)] for L in budgets), 2),
        "strategy_margin": {task: {str(L): gap(mean[ti, :, bi]) for bi, L in enumerate(budgets)} for ti, task in enumerate(TASKS)},
        "oracle": {task: {str(L): {**{s_: round(100 * float(omean[ti, si, bi]), 2) for si, s_ in enumerate(STRATEGIES)},
                                   "best_strategy": STRATEGIES[int(omean[ti, :, bi].argmax())],
                                   "margin": gap(omean[ti, :, bi])}
                          for bi, L in enumerate(budgets)} for ti, task in enumerate(TASKS)},
        "best_strategy_per_task": {task: {str(L): table[task][str(L)]["best_strategy"] for L in budgets} for task in TASKS},
        "reader_eval_s": time.perf_counter() - t0,
    }
    meta = models.meta
    if "bandit" in meta:
        bandit = load_bandit(meta)
        hits, choice, bscore, within_noise = 0, {}, [], []
        arms = np.zeros((len(TASKS), len(budgets)), np.int64)  # the chosen strategy index per (task, budget)
        for ti, task in enumerate(TASKS):
            choice[task] = {}
            for bi, L in enumerate(budgets):
                arm = int(bandit.act(bandit_context(task, L, budgets), explore=False))
                arms[ti, bi] = arm
                choice[task][str(L)] = STRATEGIES[arm]
                best = int(mean[ti, :, bi].argmax())
                hits += len(test) * int(arm == best)
                bscore.append(S[:, ti, arm, bi])
                within_noise.append(choice_within_noise(S[:, ti, :, bi], arm, seed=ti * 7 + bi))
        result["ama_bandit_choices"] = choice
        result["ama_bandit_best_choice_rate"] = hits / (len(test) * len(TASKS) * len(budgets))
        # how much the choices cost against the test-set best arm (near-ties count as misses above)
        result["ama_bandit_regret_points"] = round(100 * float(np.mean(
            mean.max(1) - np.take_along_axis(mean, arms[:, None, :], 1)[:, 0])), 2)
        result["ama_bandit_mixed"] = round(100 * float(np.mean(bscore)), 2)
        # secondary, tie-aware: a choice whose test deficit to the best strategy is not significant
        # (paired bootstrap over episodes) counts; the headline rate above stays strict
        result["ama_bandit_choice_within_noise_rate"] = round(float(np.mean(within_noise)), 4)
        # how stable the strict rate is: resample test apartments (walks of one apartment are correlated)
        lo, hi = best_choice_rate_interval(S, arms, [ep.scene for ep in test])
        result["ama_bandit_best_choice_rate_ci90"] = [round(lo, 4), round(hi, 4)]
        # headline: SAT = the place-centric memory, i.e. the SAT reader on the memory written by the
        # strategy the bandit chose for (task, budget) on validation, against T-FIFO at the same budget
        result.update(sat_minus_tfifo_table(S, St, choice, budgets))
    fixed_mixed = {s: round(100 * float(S[:, :, si].mean()), 2) for si, s in enumerate(STRATEGIES)}
    result["fixed_mixed"] = fixed_mixed
    if models.policy_state is not None and "policy" in meta:
        pol = load_policy(models)
        env = AllocationEnv(test, models.reader, TASKS, budgets, int(meta["policy"]["decision_every"]), offsets=offsets)
        P = np.zeros((len(test), len(TASKS), len(budgets)))
        act_hist = np.zeros((len(TASKS), len(ACTIONS)))
        for n in range(len(test)):
            for ti, task in enumerate(TASKS):
                for bi, L in enumerate(budgets):
                    P[n, ti, bi], acts = run_policy(pol, env, n, task, L)
                    np.add.at(act_hist[ti], acts, 1)
        per_task = {task: round(100 * float(P[:, ti].mean()), 2) for ti, task in enumerate(TASKS)}
        best_fixed_task = {task: round(100 * float(mean[ti].mean(-1).max()), 2) for ti, task in enumerate(TASKS)}
        result["ama_policy_per_task"] = per_task
        result["ama_policy_minus_best_fixed_per_task"] = {t: round(per_task[t] - best_fixed_task[t], 2) for t in TASKS}
        result["ama_policy_mixed"] = round(100 * float(P.mean()), 2)
        result["ama_policy_minus_best_fixed_mixed"] = round(result["ama_policy_mixed"] - max(fixed_mixed.values()), 2)
        result["ama_policy_action_share"] = {
            task: {a: round(float(x), 3) for a, x in zip(ACTIONS, act_hist[ti] / max(act_hist[ti].sum(), 1))}
            for ti, task in enumerate(TASKS)}
    result["eval_s"] = time.perf_counter() - t0
    return result


def choice_within_noise(scores: np.ndarray, chosen: int, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> bool:
    """Whether strategy ``chosen`` is statistically indistinguishable from the best one.

    ``scores: [N episodes, S strategies]`` of one (task, budget). The best strategy is the one
    with the highest mean; the episodes are resampled with replacement (paired: the same episodes
    for both strategies) and the choice passes when the lower end of the two-sided ``level``
    interval of (best - chosen) is <= 0, i.e. the data do not show it is worse.
    """
    best = int(scores.mean(0).argmax())
    if best == chosen:
        return True
    d = scores[:, best] - scores[:, chosen]
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return bool(np.quantile(boots, (1.0 - level) / 2.0) <= 0.0)


def best_choice_rate_interval(scores: np.ndarray, chosen: np.ndarray, groups: list[str], level: float = 0.9,
                              n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the share of (task, budget) cells whose ``chosen`` strategy is the test-best one.

    Args:
        scores: ``[N episodes, T tasks, S strategies, B budgets]``; chosen: ``[T, B]`` strategy indices.
        groups: ``N`` group labels (the episode's apartment): whole groups are resampled, because
            the walks of one apartment share its layout and are not independent draws.

    Returns:
        The two-sided ``level`` interval ``(low, high)`` of the strict best-choice rate.
    """
    _, gi = np.unique(np.asarray(groups), return_inverse=True)
    G = int(gi.max()) + 1
    # per-apartment sums, so a resample is a weighted sum over apartments: [G, T, S, B]
    sums = np.zeros((G,) + scores.shape[1:])
    np.add.at(sums, gi, scores)
    counts = np.bincount(gi, minlength=G).astype(float)
    rng = np.random.default_rng(seed)
    rates = np.empty(n_boot)
    for i in range(n_boot):
        w = np.bincount(rng.integers(0, G, G), minlength=G).astype(float)
        mean = np.tensordot(w, sums, 1) / float(w @ counts)  # [T, S, B]
        rates[i] = float((mean.argmax(1) == chosen).mean())
    a = (1.0 - level) / 2.0
    return float(np.quantile(rates, a)), float(np.quantile(rates, 1.0 - a))


def sat_minus_tfifo_table(S: np.ndarray, St: np.ndarray, choice: dict[str, dict[str, str]],
                          budgets: tuple[int, ...]) -> dict[str, Any]:
    """The headline SAT-vs-T-FIFO margins (accuracy / F1 points).

    Args:
        S: ``[N, tasks, strategies, budgets]`` SAT reader scores; St: ``[N, tasks, budgets]`` T-FIFO
            scores (FIFO writes); choice: ``{task: {str(budget): strategy}}`` chosen without the
            test split (the AMA bandit, trained on validation).

    Returns:
        ``sat_minus_tfifo``: per task the smallest margin over budgets; ``sat_minus_tfifo_min``:
        the smallest over tasks; ``sat_minus_tfifo_per_budget``: ``{task: {budget: margin}}``.
    """
    per: dict[str, dict[str, float]] = {}
    for ti, task in enumerate(TASKS):
        per[task] = {}
        for bi, L in enumerate(budgets):
            si = STRATEGIES.index(choice[task][str(L)])
            per[task][str(L)] = round(float(100 * (S[:, ti, si, bi].mean() - St[:, ti, bi].mean())), 2)
    margins = {task: min(v.values()) for task, v in per.items()}
    return {"sat_minus_tfifo": margins, "sat_minus_tfifo_min": min(margins.values()), "sat_minus_tfifo_per_budget": per}


@torch.no_grad()
def order_all_pairs(episodes: list[Episode], readers: dict[str, SATReader], budgets: tuple[int, ...],
                    cache: KeptCache | None = None) -> dict[str, dict[str, float]]:
    """Order accuracy (%) of each reader after FIFO writes over *every* ordered pair of distinct
    places of each episode (not only its sampled queries): ``{reader: {budget: accuracy}}``."""
    from spatial_memory.episodic.reader import TASK_INDEX
    from spatial_memory.episodic.tasks import task_targets
    from spatial_memory.episodic.training import memory_tensors

    cache = cache or KeptCache()
    acc: dict[str, dict[str, list[float]]] = {r: {str(L): [] for L in budgets} for r in readers}
    for ep in episodes:
        first = task_targets(ep.places, ep.seen)["first_step"]
        args = np.array([[a, b] for a in first for b in first if a != b], np.int64).reshape(-1, 2)
        if not len(args):
            continue
        cls = np.array([int(first[a] < first[b]) for a, b in args])
        for L in budgets:
            mem = memory_tensors([ep] * len(args), [cache.get(ep, "fifo", L)] * len(args))
            for name, reader in readers.items():
                out = reader(*mem, torch.full((len(args),), TASK_INDEX["order"]), torch.from_numpy(args))["order"]
                acc[name][str(L)].append(float((out.argmax(-1).numpy() == cls).mean()))
    return {r: {L: round(100 * float(np.mean(v)), 2) if v else 0.0 for L, v in d.items()} for r, d in acc.items()}


def oracle_matrix(episodes: list[Episode], budgets: tuple[int, ...], cache: KeptCache | None = None) -> np.ndarray:
    """Oracle-reader scores ``[N, tasks, strategies, budgets]`` (see ``spatial_memory.episodic.oracle``)."""
    cache = cache or KeptCache()
    out = np.zeros((len(episodes), len(TASKS), len(STRATEGIES), len(budgets)))
    for n, ep in enumerate(episodes):
        for bi, L in enumerate(budgets):
            for si, strat in enumerate(STRATEGIES):
                kept = cache.get(ep, strat, L)
                for ti, task in enumerate(TASKS):
                    out[n, ti, si, bi] = oracle_scores(ep, kept, task).mean()
    return out


AMA_KINDS = ("calibrate", "bandit", "policy", "all")


def run_train_ama(cfg: ExperimentConfig, weights: Path | None, kind: str, cache_dir: Path | None = None,
                  progress: bool = True) -> float:
    """Refit parts of a weights directory in place, on the validation split, without retraining the
    reader; returns seconds.

    ``kind``: ``calibrate`` (the decision offsets of the SAT and T-FIFO readers), ``bandit`` or
    ``policy`` (one allocator, trained on validation scores decoded with the stored offsets), or
    ``all`` (calibrate, then both allocators on the calibrated scores).
    """
    if kind not in AMA_KINDS:
        raise ConfigError(f"train-ama kind must be one of {list(AMA_KINDS)}, got {kind!r}")
    torch.set_num_threads(cfg.threads)
    weights = Path(weights) if weights else DEFAULT_WEIGHTS
    models = Models.load(weights)
    vocab = build_vocab(cfg)
    if vocab != models.vocab:
        raise ConfigError(f"weights vocabulary {models.vocab} differs from the config's {vocab}; use matching --config")
    val = load_episodes("val", cfg, vocab, cache_dir, progress)  # the refit reads validation only
    for ep in val:
        embed(models.encoder, ep)
    t_start = time.perf_counter()
    meta = dict(models.meta)
    times = meta.setdefault("times", {})
    budgets = tuple(cfg.budgets)
    cache = KeptCache()
    if kind in ("calibrate", "all"):
        t0 = time.perf_counter()
        meta[META_KEY] = calibrate(cfg, models, val, TASKS, cache, progress)
        models.meta = meta
        times["calibrate_s"] = time.perf_counter() - t0
    if kind != "calibrate":
        offsets = models.decision_offsets
        scores = score_matrix(models.reader, val, TASKS, STRATEGIES, budgets, cache, progress, offsets)
        if kind in ("bandit", "all"):
            t0 = time.perf_counter()
            meta["bandit"] = fit_bandit(cfg, scores).state()
            times["bandit_s"] = time.perf_counter() - t0
        if kind in ("policy", "all"):
            t0 = time.perf_counter()
            models.policy_state, meta["policy"] = fit_policy(cfg, val, models.reader, scores, progress, offsets)
            times["policy_s"] = time.perf_counter() - t0
    # the config the refit used (its validation split may differ from the one in meta["config"])
    meta["refit"] = {"kind": kind, "config": _config_dict(cfg)}
    models.meta = meta
    models.save(weights)
    return time.perf_counter() - t_start
