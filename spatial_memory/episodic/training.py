"""Training and evaluation of the SAT reader on cached episodes.

A training sample is (episode, memory, task, query): the memory is what a store with a given
strategy and budget L keeps after streaming the whole episode (:func:`store.simulate_kept`);
the query is asked at the end of the episode. The reader is trained on memories of every fixed
strategy plus random per-write eviction (so it also reads the allocator policy's memories) and
every budget, so one model serves the whole evaluation table.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import Offsets, offset_for
from .reader import TASK_INDEX, ReaderConfig, SATReader
from .store import ACTIONS, STRATEGIES, simulate_kept
from .tasks import (MULTI_LABEL_TASKS, TASKS, Episode, distinctive_categories, distinctive_places, score_predictions,
                    task_targets)

log = logging.getLogger(__name__)


class KeptCache:
    """Memoised kept steps ``[n] int64`` per (episode name, strategy, budget)."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str, int], np.ndarray] = {}

    def get(self, ep: Episode, strategy: str, budget: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if strategy == "random":  # fresh random eviction actions each call (training augmentation)
            r = rng or np.random.default_rng()
            acts = [ACTIONS[i] for i in r.integers(0, len(ACTIONS), ep.n_steps)]
            return simulate_kept(ep.places, budget, actions=acts)
        key = (ep.name, strategy, budget)
        if key not in self._d:
            self._d[key] = simulate_kept(ep.places, budget, strategy)
        return self._d[key]


def memory_tensors(eps: list[Episode], kept: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """Pad memories to one batch: ``emb [B, M, E]``, ``step [B, M]``, ``place [B, M]``, ``mask [B, M]``."""
    M = max(1, max(len(k) for k in kept))
    E = eps[0].embeddings.shape[1]  # type: ignore[union-attr]
    B = len(eps)
    emb = np.zeros((B, M, E), np.float32)
    step = np.zeros((B, M), np.int64)
    place = np.zeros((B, M), np.int64)
    mask = np.zeros((B, M), bool)
    for b, (ep, k) in enumerate(zip(eps, kept)):
        n = len(k)
        emb[b, :n] = ep.embeddings[k]  # type: ignore[index]
        step[b, :n] = k
        place[b, :n] = ep.places[k]
        mask[b, :n] = True
    return torch.from_numpy(emb), torch.from_numpy(step), torch.from_numpy(place), torch.from_numpy(mask)


def memory_seen(eps: list[Episode], kept: list[np.ndarray], M: int) -> torch.Tensor:
    """Ground-truth categories of each kept entry, padded like :func:`memory_tensors`: ``[B, M, C]``.

    Training target only (as for the encoder): the reader's evidence layer learns to decode
    categories from the entry embeddings; nothing at run time reads ground truth.
    """
    out = np.zeros((len(eps), M, eps[0].seen.shape[1]), np.float32)
    for b, (ep, k) in enumerate(zip(eps, kept)):
        out[b, : len(k)] = ep.seen[k]
    return torch.from_numpy(out)


def task_loss(task: str, logits: torch.Tensor, q: dict[str, np.ndarray], idx: np.ndarray,
              pos_weight: float = 1.0) -> torch.Tensor:
    """Per-sample loss ``[B]`` of one task's logits against the answers of queries ``idx``.

    ``pos_weight`` scales the positive terms of the multi-label BCE: decoding ``logit > 0`` then
    means ``p > 1 / (1 + pos_weight)``, which suits the F1 score (plain BCE's 0.5 threshold is too
    conservative for F1 when a few of many categories are positive). When ``q`` has a ``"mask"``
    (``[Q, C]``, what_was_there's distinctive categories) the BCE averages over the masked
    categories only, as the score does.
    """
    if task in MULTI_LABEL_TASKS:
        pw = torch.full((logits.shape[1],), float(pos_weight))
        bce = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(q["multi"][idx]), reduction="none", pos_weight=pw)
        if "mask" not in q:
            return bce.mean(1)
        m = torch.from_numpy(np.asarray(q["mask"][idx], np.float32))
        return (bce * m).sum(1) / m.sum(1).clamp(min=1.0)
    # divided by the chance-level loss log(K) so the 32-way last-seen loss does not drown the 2-way order loss
    ce = F.cross_entropy(logits, torch.from_numpy(q["cls"][idx]).clamp(0, logits.shape[1] - 1), reduction="none")
    return ce / math.log(logits.shape[1])


def decode(task: str, logits: torch.Tensor, offset: float = 0.0) -> np.ndarray:
    """Predictions from logits: ``[B, C] bool`` (multi-label: ``logit + offset > 0``, the offset
    being the calibrated decision threshold shift, see :mod:`.calibration`) or ``[B] int64``."""
    if task in MULTI_LABEL_TASKS:
        return (logits + float(offset) > 0).numpy()
    return logits.argmax(-1).numpy()


class QuerySampler:
    """Fresh random training queries from an episode's full answer tables, with place slots permuted.

    Two guards against memorising instead of reading: (1) queries are drawn anew every step
    from all places / categories / pairs of the episode rather than the episode's fixed query
    set, (2) every sample relabels the episode's place ids by a random permutation of the
    ``n_slots`` slots (memory, arguments and answers alike), so no slot id carries meaning.
    Without them the reader reached 99 % train / 47 % test accuracy on ``order``.
    """

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self._tables: dict[str, dict] = {}

    def tables(self, ep: Episode) -> dict:
        if ep.name not in self._tables:
            tg = task_targets(ep.places, ep.seen)
            tg["places"] = sorted(tg["ever"])
            tg["changed"] = [p for p in tg["places"] if not np.array_equal(tg["first"][p], tg["ever"][p])]
            tg["labels"] = sorted(tg["last_place"])
            tg["distinctive"] = distinctive_categories(tg["ever"])
            tg["wwt_places"] = distinctive_places(tg["ever"], tg["distinctive"]) or tg["places"]
            self._tables[ep.name] = tg
        return self._tables[ep.name]

    def sample(self, ep: Episode, task: str,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
        """Returns ``(perm [max place id + 1], args [2], cls, multi [C], mask [C])`` in permuted slot
        ids; ``mask`` = the categories the task is scored on (what_was_there: the distinctive ones,
        drawn like :func:`tasks.make_queries` draws them; all ones otherwise)."""
        tg = self.tables(ep)
        P = tg["places"]
        perm = rng.permutation(self.n_slots)[: int(ep.places.max()) + 1]
        C = ep.seen.shape[1]
        multi = np.zeros(C, np.float32)
        mask = np.ones(C, np.float32)
        cls = -1
        if task == "what_was_there":
            pool = tg["wwt_places"]
            p = pool[int(rng.integers(len(pool)))]
            args, multi = np.array([perm[p], -1]), tg["ever"][p].astype(np.float32)
            mask = tg["distinctive"].astype(np.float32)
        elif task == "first_visit":
            pool = tg["changed"] if tg["changed"] and rng.random() < 0.75 else P
            p = pool[int(rng.integers(len(pool)))]
            args, multi = np.array([perm[p], -1]), tg["first"][p].astype(np.float32)
        elif task == "last_seen":
            c = tg["labels"][int(rng.integers(len(tg["labels"])))]
            args, cls = np.array([c, -1]), int(perm[tg["last_place"][c]])
        else:
            a, b = (rng.choice(P, 2, replace=False) if len(P) > 1 else (P[0], P[0]))
            args, cls = np.array([perm[a], perm[b]]), int(tg["first_step"][a] < tg["first_step"][b])
        return perm, args, cls, multi, mask


@dataclass
class TrainConfig:
    steps: int = 1500
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    strategies: tuple[str, ...] = STRATEGIES + ("random",)
    budgets: tuple[int, ...] = (32, 64, 128)
    # loss weight per task (TASKS order); order's 2-way loss carries little gradient next to
    # the others and the mixed reader stayed at chance on it with equal weights
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 2.0)
    # auxiliary loss weight: the pooled read's per-entry evidence against the entry's categories
    # (ground truth as a training target only, like the encoder's); 0 = learn it from the task losses alone
    evidence_weight: float = 0.5
    # positive-term weight of the multi-label (F1-scored) tasks' BCE, see task_loss
    multi_pos_weight: float = 2.0


def train_reader(episodes: list[Episode], rcfg: ReaderConfig, tcfg: TrainConfig, tasks: tuple[str, ...] = TASKS,
                 cache: KeptCache | None = None, progress: bool = True) -> tuple[SATReader, dict]:
    """Fit a reader on ``episodes`` (with ``embeddings``) for ``tasks``.

    Every step's batch is split evenly over ``tasks`` (task-balanced: each task gets gradient
    every step rather than one task per step), each sample from a random episode, strategy and
    budget; the loss is the ``task_weights``-weighted sum of the per-task mean losses.
    """
    from tqdm import tqdm

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    cache = cache or KeptCache()
    sampler = QuerySampler(rcfg.max_places)
    model = SATReader(rcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=tcfg.steps, pct_start=0.1)
    weights = {t: float(tcfg.task_weights[TASKS.index(t)]) if len(tcfg.task_weights) == len(TASKS) else 1.0 for t in tasks}
    t0 = time.perf_counter()
    losses: list[float] = []
    per_task: dict[str, list[float]] = {t: [] for t in tasks}
    for _ in tqdm(range(tcfg.steps), desc="reader", disable=not progress, leave=False):
        task_of = [tasks[i % len(tasks)] for i in range(max(tcfg.batch, len(tasks)))]
        eps = [episodes[i] for i in rng.integers(0, len(episodes), len(task_of))]
        kept = [cache.get(ep, tcfg.strategies[rng.integers(len(tcfg.strategies))], int(rng.choice(tcfg.budgets)), rng)
                for ep in eps]
        samples = [sampler.sample(ep, task, rng) for ep, task in zip(eps, task_of)]
        emb, step, place, mask = memory_tensors(eps, kept)
        place = torch.stack([torch.from_numpy(s[0])[pl] for s, pl in zip(samples, place)])  # permuted slots
        args = torch.from_numpy(np.stack([s[1] for s in samples]))
        out = model(emb, step, place, mask, torch.tensor([TASK_INDEX[t] for t in task_of]), args)
        loss = torch.zeros(())
        for task in tasks:
            idx = np.array([i for i, t in enumerate(task_of) if t == task])
            q = {"cls": np.array([samples[i][2] for i in idx]), "multi": np.stack([samples[i][3] for i in idx]),
                 "mask": np.stack([samples[i][4] for i in idx])}
            lt = task_loss(task, out[task][torch.from_numpy(idx)], q, np.arange(len(idx)), tcfg.multi_pos_weight).mean()
            per_task[task].append(float(lt.detach()))
            loss = loss + weights[task] * lt
        if model.pooled and tcfg.evidence_weight > 0:
            ev = model.entry_evidence(emb)[mask]  # [n_entries, C]
            ev_loss = F.binary_cross_entropy_with_logits(ev, memory_seen(eps, kept, emb.shape[1])[mask])
            per_task.setdefault("evidence", []).append(float(ev_loss.detach()))
            loss = loss + tcfg.evidence_weight * ev_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, {"seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-50:])), "steps": tcfg.steps,
                   "final_task_loss": {t: float(np.mean(v[-50:])) for t, v in per_task.items()}}


@torch.no_grad()
def memory_logits(model: SATReader, ep: Episode, kept: np.ndarray, task: str) -> torch.Tensor:
    """The reader's raw ``task`` logits for all queries of ``ep`` on memory ``kept``: ``[Q, C]``
    (``[Q, places]`` / ``[Q, 2]`` for the classification tasks)."""
    q = ep.queries[task]
    Q = len(q["args"])
    emb, step, place, mask = memory_tensors([ep] * Q, [kept] * Q)
    return model(emb, step, place, mask, torch.full((Q,), TASK_INDEX[task]), torch.from_numpy(q["args"]))[task]


def episode_scores(model: SATReader, ep: Episode, kept: np.ndarray, task: str, offset: float = 0.0) -> np.ndarray:
    """Scores ``[Q]`` of all queries of ``task`` in ``ep`` read from memory ``kept`` (multi-label
    answers decoded with the logit ``offset``)."""
    return score_predictions(task, decode(task, memory_logits(model, ep, kept, task), offset), ep.queries[task])


@torch.no_grad()
def score_matrix(model: SATReader, episodes: list[Episode], tasks: tuple[str, ...], strategies: tuple[str, ...],
                 budgets: tuple[int, ...], cache: KeptCache | None = None, progress: bool = True,
                 offsets: Offsets | None = None) -> np.ndarray:
    """Mean query score per (episode, task, strategy, budget): ``[N, len(tasks), len(strategies), len(budgets)]``.

    ``offsets``: calibrated decision offsets ``{task: {str(L): offset}}`` of the multi-label tasks
    (:func:`calibration.offset_for`; None = decode at logit 0).
    """
    from tqdm import tqdm

    model.eval()
    cache = cache or KeptCache()
    out = np.zeros((len(episodes), len(tasks), len(strategies), len(budgets)))
    for n, ep in enumerate(tqdm(episodes, desc="score", disable=not progress, leave=False)):
        for b, L in enumerate(budgets):
            for s, strat in enumerate(strategies):
                kept = cache.get(ep, strat, L)
                for t, task in enumerate(tasks):
                    out[n, t, s, b] = episode_scores(model, ep, kept, task, offset_for(offsets, task, L)).mean()
    return out
