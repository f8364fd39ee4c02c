"""Oracle reader: exact answers from the entries a memory kept (an upper bound for any reader).

Given the kept steps of an episode and each step's ground truth (place, categories seen,
visit index), the oracle answers every query as well as those entries allow:

* ``what_was_there(p)``: the union of categories of the kept entries of p.
* ``first_visit(p)``: the union over the kept entries of p's earliest *kept* visit.
* ``last_seen(c)``: the place of the latest kept entry showing c (-1 when none does).
* ``order(p, q)``: compares the earliest kept step of p and q (a place with no entry counts
  as first visited after every kept one).

Its scores per (task, strategy, budget) show which parts of the stream each task needs and
whether write strategies can differ at all, independently of how well a learned reader reads.
"""

from __future__ import annotations

import numpy as np

from spatial_memory.errors import ConfigError

from .tasks import TASKS, Episode, score_predictions


def oracle_predict(task: str, places: np.ndarray, seen: np.ndarray, visit: np.ndarray, kept: np.ndarray,
                   args: np.ndarray) -> np.ndarray:
    """Predictions for queries ``args: [Q, 2]`` from the kept steps ``kept: [n]``.

    Args:
        places: ``[T]`` place id per step; seen: ``[T, C] bool``; visit: ``[T]`` visit index.

    Returns:
        ``[Q, C] bool`` (what_was_there, first_visit) or ``[Q] int64`` (last_seen: a place,
        order: 1 when the first place came first).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    k = np.sort(np.asarray(kept, np.int64))
    kp, ks, kv = places[k], seen[k], visit[k]
    args = np.asarray(args, np.int64).reshape(-1, 2)
    if task in ("what_was_there", "first_visit"):
        out = np.zeros((len(args), seen.shape[1]), bool)
        for i, p in enumerate(args[:, 0]):
            m = kp == p
            if task == "first_visit" and m.any():
                m &= kv == kv[m].min()
            out[i] = ks[m].any(0)
        return out
    out = np.zeros(len(args), np.int64)
    for i, (a, b) in enumerate(args):
        if task == "last_seen":
            rows = np.flatnonzero(ks[:, a])
            out[i] = kp[rows[-1]] if rows.size else -1
        else:
            ta = k[kp == a].min() if (kp == a).any() else np.iinfo(np.int64).max
            tb = k[kp == b].min() if (kp == b).any() else np.iinfo(np.int64).max
            out[i] = int(ta < tb)
    return out


def oracle_scores(ep: Episode, kept: np.ndarray, task: str) -> np.ndarray:
    """Per-query scores ``[Q]`` of the oracle on ``ep``'s queries of ``task``."""
    q = ep.queries[task]
    return score_predictions(task, oracle_predict(task, ep.places, ep.seen, ep.visit, kept, q["args"]), q)
