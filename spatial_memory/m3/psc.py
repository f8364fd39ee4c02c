"""Principal scene components (PSC): M3's memory bank of one foundation model.

M3 builds the bank by greedy similarity filtering: walk all raw feature vectors in order
(L2-normalised for the comparison); a vector is kept when no already-kept vector has cosine
``>= theta`` with it. Kept vectors are stored un-normalised. Written naively this is
O(M^2) over every pixel of every frame; here candidates are processed in blocks: a block is
compared with the bank in one matrix product, and only its still-uncovered vectors go
through the sequential in-block pass (a small numba kernel on the block's own similarity
matrix). :class:`StreamingPSC` applies the same step to each frame as it arrives, so the
bank never needs a rescan of old frames; on the same vector order it equals the batch result.
"""

from __future__ import annotations

import numba
import numpy as np

from ..errors import ConfigError

BLOCK = 2048


@numba.njit(cache=True)
def _sequential_keep(sim_ge: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """In-block greedy pass.

    Args:
        sim_ge: ``[B, B] bool``, ``sim_ge[i, j]`` = cos(b_i, b_j) >= theta.
        covered: ``[B] bool``, already covered by the bank (copied, not modified).

    Returns:
        ``[B] bool`` keep mask.
    """
    n = covered.shape[0]
    cov = covered.copy()
    keep = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if cov[i]:
            continue
        keep[i] = True
        for j in range(i + 1, n):
            if sim_ge[i, j]:
                cov[j] = True
    return keep


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _check(features: np.ndarray, theta: float) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ConfigError(f"PSC features must be [M, D], got shape {features.shape}")
    if not 0.0 < theta <= 1.0:
        raise ConfigError(f"PSC theta must be in (0, 1], got {theta}")
    return features


def _filter_block(bank_n: np.ndarray, cand: np.ndarray, cand_n: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy step for one block of candidates against a bank.

    Returns:
        ``(keep [B] bool, best_bank [B] int)``: index of the most similar bank vector for
        candidates covered by the bank (``-1`` otherwise).
    """
    # Exact duplicates must count as cos 1 even when float32 rounding gives 0.99999994.
    theta = theta - 1e-6 if theta >= 1.0 else theta
    B = cand.shape[0]
    best = np.full(B, -1, dtype=np.int64)
    covered = np.zeros(B, dtype=bool)
    if bank_n.shape[0]:
        sims = cand_n @ bank_n.T
        best_sim = sims.max(axis=1)
        covered = best_sim >= theta
        best[covered] = sims[covered].argmax(axis=1)
    open_idx = np.nonzero(~covered)[0]
    keep = np.zeros(B, dtype=bool)
    if open_idx.size:
        sub = cand_n[open_idx]
        sim_ge = (sub @ sub.T) >= theta
        keep[open_idx] = _sequential_keep(sim_ge, np.zeros(open_idx.size, dtype=np.bool_))
    return keep, best


def build_psc_greedy(features: np.ndarray, theta: float, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Batch greedy similarity filtering (M3's PSC construction).

    Args:
        features: ``[M, D]`` raw vectors in the order they are walked.
        theta: cosine threshold in ``(0, 1]``; 1.0 keeps every distinct direction.

    Returns:
        ``(bank [K, D] float32 un-normalised, kept_index [K] int64 into features)``.
    """
    features = _check(features, theta)
    normed = _normalise(features)
    kept: list[np.ndarray] = []
    bank_n = np.zeros((0, features.shape[1]), np.float32)
    for s in range(0, features.shape[0], block):
        keep, _ = _filter_block(bank_n, features[s : s + block], normed[s : s + block], theta)
        idx = np.nonzero(keep)[0] + s
        if idx.size:
            kept.append(idx)
            bank_n = np.concatenate([bank_n, normed[idx]])
    kept_index = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return features[kept_index].copy(), kept_index


class StreamingPSC:
    """A PSC bank that grows as frames arrive, without rescanning earlier frames.

    Each :meth:`update` compares the new vectors only with the bank (and among themselves,
    in order), exactly like one more stretch of the batch walk.

    Args:
        theta: cosine threshold in ``(0, 1]``.
        max_size: optional cap on the bank size; once full, new uncovered vectors are not
            added but assigned to their most similar entry and counted in ``n_overflow``.
        merge: ``"none"`` keeps the first vector of each group (M3, and equal to the batch
            result); ``"mean"`` replaces each entry by the running mean of the vectors it covers.
    """

    def __init__(self, theta: float, max_size: int | None = None, merge: str = "none") -> None:
        _check(np.zeros((0, 1), np.float32), theta)
        if merge not in ("none", "mean"):
            raise ConfigError(f"StreamingPSC merge must be 'none' or 'mean', got {merge!r}")
        if max_size is not None and max_size < 1:
            raise ConfigError(f"StreamingPSC max_size must be >= 1, got {max_size}")
        self.theta = float(theta)
        self.max_size = max_size
        self.merge = merge
        self._bank: np.ndarray | None = None
        self._bank_n: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self.counts = np.zeros(0, np.int64)
        self.n_seen = 0
        self.n_overflow = 0
        self.version = 0  # bumped whenever the bank changes

    @property
    def bank(self) -> np.ndarray:
        """``[K, D] float32`` un-normalised bank (``[0, 0]`` before the first update)."""
        return self._bank if self._bank is not None else np.zeros((0, 0), np.float32)

    @property
    def size(self) -> int:
        return 0 if self._bank is None else int(self._bank.shape[0])

    def set_bank(self, bank: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Restore a bank (e.g. from a saved map)."""
        bank = np.asarray(bank, np.float32)
        if bank.ndim != 2:
            raise ConfigError(f"PSC bank must be [K, D], got {bank.shape}")
        self._bank = bank.copy()
        self._bank_n = _normalise(bank)
        self.counts = np.ones(len(bank), np.int64) if counts is None else np.asarray(counts, np.int64).copy()
        self._sum = self._bank * self.counts[:, None]
        self.version += 1

    def update(self, features: np.ndarray, block: int = BLOCK) -> int:
        """Walk new vectors ``[M, D]`` in order; return how many entries were added."""
        features = _check(features, self.theta)
        if features.shape[0] == 0:
            return 0
        if self._bank is None:
            self.set_bank(np.zeros((0, features.shape[1]), np.float32))
        if features.shape[1] != self._bank.shape[1]:
            raise ConfigError(f"PSC update has dim {features.shape[1]}, bank has {self._bank.shape[1]}")
        self.n_seen += features.shape[0]
        normed = _normalise(features)
        added = 0
        for s in range(0, features.shape[0], block):
            cand, cand_n = features[s : s + block], normed[s : s + block]
            keep, best = _filter_block(self._bank_n, cand, cand_n, self.theta)
            new_idx = np.nonzero(keep)[0]
            if self.max_size is not None:
                room = max(0, self.max_size - self.size)
                self.n_overflow += int(max(0, new_idx.size - room))
                new_idx = new_idx[:room]
            if new_idx.size:
                self._bank = np.concatenate([self._bank, cand[new_idx]])
                self._bank_n = np.concatenate([self._bank_n, cand_n[new_idx]])
                self._sum = np.concatenate([self._sum, cand[new_idx]])
                self.counts = np.concatenate([self.counts, np.ones(new_idx.size, np.int64)])
                added += int(new_idx.size)
            # Vectors covered inside this block (or left out by max_size) count towards the
            # entry they are most similar to, now that the block's new entries are in the bank.
            is_new = np.zeros(len(cand), bool)
            is_new[new_idx] = True
            late = (best < 0) & ~is_new
            if late.any():
                best[late] = (cand_n[late] @ self._bank_n.T).argmax(axis=1)
            merged = best >= 0
            if merged.any():
                np.add.at(self.counts, best[merged], 1)
                if self.merge == "mean":
                    np.add.at(self._sum, best[merged], cand[merged])
                    touched = np.unique(best[merged])
                    self._bank[touched] = self._sum[touched] / self.counts[touched, None]
                    self._bank_n[touched] = _normalise(self._bank[touched])
        if added or self.merge == "mean":
            self.version += 1
        return added

    def stats(self) -> dict[str, int | float]:
        return {"size": self.size, "seen": self.n_seen, "overflow": self.n_overflow, "theta": self.theta}
