"""Decision-threshold calibration of the reader's multi-label (F1-scored) answers.

The multi-label heads (``tasks.MULTI_LABEL_TASKS``) decode a category as present when its logit
is positive. That threshold is what the training loss makes *probable*, not what maximises F1,
and the best threshold moves with the number of entries kept per place (budget L): with two or
three entries per place the pooled read suppresses every category those entries do not show.
The standard remedy for F1-scored multi-label outputs is to shift the decision threshold, fitted
on held-out data: here one logit offset per (task, budget) is chosen on the **validation** split
to maximise the mean F1 over the memories of *all* fixed write strategies (so the calibration
favours none of them), and applied wherever those answers are decoded (evaluation, allocator
rewards, the online API).

Offsets live in the weights' ``meta.json`` under :data:`META_KEY`:
``{"version": 1, "grid": [...], "reader": {task: {str(L): offset}}, "tfifo": {...}, "val_f1": {...}}``.
Weights without it decode with offset 0 (the behaviour before calibration existed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .reader import SATReader
from .tasks import MULTI_LABEL_TASKS, Episode, score_predictions

if TYPE_CHECKING:  # training imports this module (decode), so no run-time import back
    from .training import KeptCache

log = logging.getLogger(__name__)

META_KEY = "decision_offsets"
OFFSETS_VERSION = 1
# logit offsets tried; 0 is in the grid, so calibration can only keep or raise the validation F1
DEFAULT_GRID: tuple[float, ...] = tuple(float(x) for x in np.round(np.arange(-2.0, 2.0001, 0.25), 2))

Offsets = dict[str, dict[str, float]]  # {task: {str(budget): logit offset}}


def offset_for(offsets: Offsets | None, task: str, budget: int) -> float:
    """The logit offset to decode ``task`` at budget ``budget``.

    Uses the offset of the nearest calibrated budget (ties: the smaller budget), so an online
    memory with an uncalibrated L gets its closest neighbour's threshold. 0 for tasks that are not
    multi-label, tasks without offsets, or ``offsets`` None (weights from before calibration).
    """
    if task not in MULTI_LABEL_TASKS or not offsets or not offsets.get(task):
        return 0.0
    per = offsets[task]
    nearest = min(per, key=lambda L: (abs(int(L) - int(budget)), int(L)))
    return float(per[nearest])


def reader_offsets(meta: dict, which: str = "reader") -> Offsets | None:
    """The ``which`` (``"reader"`` or ``"tfifo"``) offsets stored in a weights ``meta`` dict, or None."""
    block = meta.get(META_KEY)
    if not isinstance(block, dict):
        return None
    return block.get(which)


def f1_by_offset(logits: list[np.ndarray], queries: list[dict[str, np.ndarray]], task: str,
                 grid: tuple[float, ...] = DEFAULT_GRID) -> np.ndarray:
    """Mean F1 per grid offset: ``[len(grid)]``.

    Args:
        logits: one ``[Q, C]`` array per memory (an episode read after one strategy's writes).
        queries: the matching query dicts (``multi [Q, C]``, optional ``mask [Q, C]``).

    Each memory's mean query F1 counts once (as in ``training.score_matrix``), so every
    (episode, strategy) pair weighs the same.
    """
    out = np.zeros(len(grid))
    if not logits:
        return out
    for g, off in enumerate(grid):
        out[g] = float(np.mean([score_predictions(task, z + off > 0, q).mean() for z, q in zip(logits, queries)]))
    return out


def best_offset(f1: np.ndarray, grid: tuple[float, ...] = DEFAULT_GRID) -> float:
    """The grid offset with the highest F1 ``f1 [len(grid)]``; ties go to the offset closest to 0
    (the smallest change from the trained threshold)."""
    g = np.asarray(grid, float)
    order = np.lexsort((np.abs(g), -np.round(np.asarray(f1, float), 12)))  # by F1 desc, then |offset|
    return float(g[order[0]])


def calibrate_offsets(model: SATReader, episodes: list[Episode], strategies: tuple[str, ...],
                      budgets: tuple[int, ...], tasks: tuple[str, ...] = MULTI_LABEL_TASKS,
                      cache: KeptCache | None = None,
                      grid: tuple[float, ...] = DEFAULT_GRID, progress: bool = True) -> tuple[Offsets, dict]:
    """Fit one logit offset per (multi-label task, budget) on ``episodes`` (the validation split).

    Returns:
        ``(offsets {task: {str(L): offset}}, val_f1 {task: {str(L): {"before", "after"}}})``,
        F1 in percent over the memories of every strategy in ``strategies``.
    """
    from tqdm import tqdm

    from .training import KeptCache, memory_logits

    model.eval()
    cache = cache or KeptCache()
    tasks = tuple(t for t in tasks if t in MULTI_LABEL_TASKS)
    offsets: Offsets = {t: {} for t in tasks}
    report: dict = {t: {} for t in tasks}
    zero = int(np.argmin(np.abs(np.asarray(grid, float))))
    for L in tqdm(budgets, desc="calibrate", disable=not progress, leave=False):
        for task in tasks:
            logits, queries = [], []
            for ep in episodes:
                for strat in strategies:
                    logits.append(memory_logits(model, ep, cache.get(ep, strat, L), task).numpy())
                    queries.append(ep.queries[task])
            f1 = f1_by_offset(logits, queries, task, grid)
            off = best_offset(f1, grid)
            offsets[task][str(L)] = off
            report[task][str(L)] = {"before": round(100 * float(f1[zero]), 2),
                                    "after": round(100 * float(f1[list(grid).index(off)]), 2)}
            log.info("calibration %s L=%d: offset %+.2f, val F1 %.2f -> %.2f", task, L, off,
                     report[task][str(L)]["before"], report[task][str(L)]["after"])
    return offsets, report
