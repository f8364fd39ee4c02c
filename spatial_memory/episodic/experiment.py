"""End-to-end episodic experiment: episodes -> encoder -> readers -> allocators -> results.

``run_training`` produces a weights directory (what ships in ``spatial_memory/episodic/weights``)
and ``run_eval`` recomputes the evaluation table from a weights directory. Both read one YAML
config (``config/episodic/default.yaml``; ``tiny.yaml`` for tests).
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

from .ama import (AllocationEnv, PolicyConfig, bandit_context, make_policy, run_policy, train_policy,
                  train_strategy_bandit, StrategyBandit)
from .encoder import encode, train_encoder
from .memory import DEFAULT_WEIGHTS, Models
from .reader import ReaderConfig, SATReader
from .store import ACTIONS, STRATEGIES
from .tasks import TASKS, EpisodeConfig, Episode, SplitConfig, build_vocab, load_split
from .training import KeptCache, TrainConfig, score_matrix, train_reader

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
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
    tfifo_steps: int = 600
    budgets: tuple[int, ...] = (32, 64, 128)
    bandit_iters: int = 4000
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


def prepare_data(cfg: ExperimentConfig, cache_dir: Path | None = None, progress: bool = True):
    """Vocabulary and the three splits (generated once, then cached)."""
    vocab = build_vocab(cfg.episode, cfg.split)
    splits = {s: load_split(s, cfg.episode, cfg.split, vocab, cache_dir, progress) for s in ("train", "val", "test")}
    return vocab, splits


def embed_all(models_encoder, splits: dict[str, list[Episode]]) -> None:
    for eps in splits.values():
        for ep in eps:
            ep.embeddings = encode(models_encoder, ep.rgb)


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
    rgb = np.concatenate([ep.rgb for ep in splits["train"]])
    seen = np.concatenate([ep.seen for ep in splits["train"]])
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
    if task == "mixed":  # the T-FIFO baseline: no place embedding, FIFO writes only
        rcfg_t = ReaderConfig(**{**asdict(rcfg), "place_embedding": "none", "read": "flat"})
        tcfg_t = TrainConfig(**{**asdict(tcfg), "steps": cfg.tfifo_steps, "strategies": ("fifo",)})
        tfifo, tf_stats = train_reader(splits["train"], rcfg_t, tcfg_t, tasks, cache, progress)
        times["tfifo_s"] = tf_stats["seconds"]
        models.tfifo_state = tfifo.state_dict()
    meta: dict[str, Any] = {"task": task, "config": _config_dict(cfg), "encoder_stats": enc_stats, "reader_stats": rd_stats}
    if with_ama and task == "mixed":
        t0 = time.perf_counter()
        val_scores = score_matrix(reader, splits["val"], TASKS, STRATEGIES, tuple(cfg.budgets), cache, progress)
        bandit = train_strategy_bandit(val_scores, tuple(cfg.budgets), cfg.bandit_iters, cfg.train.seed)
        times["bandit_s"] = time.perf_counter() - t0
        meta["bandit"] = bandit.state()
        t0 = time.perf_counter()
        env = AllocationEnv(splits["val"], reader, TASKS, tuple(cfg.budgets), cfg.policy.decision_every, cfg.policy.seed)
        ppo = train_policy(env, cfg.policy, progress)
        times["policy_s"] = time.perf_counter() - t0
        meta["policy"] = {"net_arch": list(cfg.policy.net_arch), "decision_every": cfg.policy.decision_every}
        models.policy_state = ppo.policy.state_dict()
    times["total_s"] = sum(times.values())
    meta["times"] = times
    models.meta = meta
    models.save(out)
    log.info("episodic training done in %.1f s -> %s", times["total_s"], out)
    return meta


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
    vocab = build_vocab(cfg.episode, cfg.split)
    if vocab != models.vocab:
        raise ConfigError(f"weights vocabulary {models.vocab} differs from the config's {vocab}; use matching --config")
    test = load_split("test", cfg.episode, cfg.split, vocab, cache_dir, progress)
    for ep in test:
        ep.embeddings = encode(models.encoder, ep.rgb)
    budgets = tuple(cfg.budgets)
    cache = KeptCache()
    t0 = time.perf_counter()
    S = score_matrix(models.reader, test, TASKS, STRATEGIES, budgets, cache, progress)  # [N, T, S, B]
    # T-FIFO baseline: same data, the shipped reader without place embeddings, FIFO writes
    if models.tfifo_state is None:
        raise ConfigError(f"{weights}: no T-FIFO baseline reader (train with --task mixed)")
    tfifo = SATReader(ReaderConfig(**{**models.reader.cfg.to_dict(), "place_embedding": "none", "read": "flat"}))
    tfifo.load_state_dict(models.tfifo_state)
    St = score_matrix(tfifo, test, TASKS, ("fifo",), budgets, cache, progress)[:, :, 0]  # [N, T, B]
    table: dict[str, Any] = {}
    mean = S.mean(0)  # [T, S, B]
    for ti, task in enumerate(TASKS):
        table[task] = {}
        for bi, L in enumerate(budgets):
            row = {s: round(100 * float(mean[ti, si, bi]), 2) for si, s in enumerate(STRATEGIES)}
            row["t_fifo"] = round(100 * float(St[:, ti, bi].mean()), 2)
            row["best_strategy"] = STRATEGIES[int(mean[ti, :, bi].argmax())]
            table[task][str(L)] = row
    margins = {task: float(100 * (S[:, ti, STRATEGIES.index("fifo")].mean(0) - St[:, ti].mean(0)).min())
               for ti, task in enumerate(TASKS)}
    result: dict[str, Any] = {
        "n_test_episodes": len(test),
        "budgets": list(budgets),
        "strategies": list(STRATEGIES),
        "accuracy": table,
        "sat_minus_tfifo": margins,
        "sat_minus_tfifo_min": min(margins.values()),
        "best_strategy_per_task": {task: {str(L): table[task][str(L)]["best_strategy"] for L in budgets} for task in TASKS},
        "reader_eval_s": time.perf_counter() - t0,
    }
    meta = models.meta
    if "bandit" in meta:
        bandit = load_bandit(meta)
        hits, choice, bscore = 0, {}, []
        for ti, task in enumerate(TASKS):
            choice[task] = {}
            for bi, L in enumerate(budgets):
                arm = int(bandit.act(bandit_context(task, L, budgets), explore=False))
                choice[task][str(L)] = STRATEGIES[arm]
                best = int(mean[ti, :, bi].argmax())
                hits += len(test) * int(arm == best)
                bscore.append(S[:, ti, arm, bi])
        result["ama_bandit_choices"] = choice
        result["ama_bandit_best_choice_rate"] = hits / (len(test) * len(TASKS) * len(budgets))
        result["ama_bandit_mixed"] = round(100 * float(np.mean(bscore)), 2)
    fixed_mixed = {s: round(100 * float(S[:, :, si].mean()), 2) for si, s in enumerate(STRATEGIES)}
    result["fixed_mixed"] = fixed_mixed
    if models.policy_state is not None and "policy" in meta:
        pol = load_policy(models)
        env = AllocationEnv(test, models.reader, TASKS, budgets, int(meta["policy"]["decision_every"]))
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


def run_train_ama(cfg: ExperimentConfig, weights: Path | None, kind: str, cache_dir: Path | None = None,
                  progress: bool = True) -> float:
    """(Re)train the ``bandit`` or ``policy`` allocator of a weights directory in place; returns seconds."""
    if kind not in ("bandit", "policy"):
        raise ConfigError(f"allocator kind must be 'bandit' or 'policy', got {kind!r}")
    torch.set_num_threads(cfg.threads)
    weights = Path(weights) if weights else DEFAULT_WEIGHTS
    models = Models.load(weights)
    vocab, splits = prepare_data(cfg, cache_dir, progress)
    if vocab != models.vocab:
        raise ConfigError(f"weights vocabulary {models.vocab} differs from the config's {vocab}; use matching --config")
    val = splits["val"]
    for ep in val:
        ep.embeddings = encode(models.encoder, ep.rgb)
    t0 = time.perf_counter()
    meta = dict(models.meta)
    budgets = tuple(cfg.budgets)
    if kind == "bandit":
        scores = score_matrix(models.reader, val, TASKS, STRATEGIES, budgets, KeptCache(), progress)
        meta["bandit"] = train_strategy_bandit(scores, budgets, cfg.bandit_iters, cfg.train.seed).state()
        seconds = time.perf_counter() - t0
        meta.setdefault("times", {})["bandit_s"] = seconds
        models.meta = meta
        models.save(weights)
        return seconds
    env = AllocationEnv(val, models.reader, TASKS, budgets, cfg.policy.decision_every, cfg.policy.seed)
    ppo = train_policy(env, cfg.policy, progress)
    seconds = time.perf_counter() - t0
    meta["policy"] = {"net_arch": list(cfg.policy.net_arch), "decision_every": cfg.policy.decision_every}
    meta.setdefault("times", {})["policy_s"] = seconds
    models.meta = meta
    models.policy_state = ppo.policy.state_dict()
    models.save(weights)
    return seconds
