"""Keyframe retrieval with a small VLAD ("VLAD-lite") over the local descriptors.

Why VLAD: it reuses the local descriptors already computed for matching (no extra network),
is invariant to where in the image a structure appears (unlike a downsampled-image NCC, which
fails under the 10-40 deg rotations of the held-out queries) and costs one ``[W*C]`` vector per
keyframe. The codebook is fit on the mapping frames' own descriptors by a few k-means
iterations; residuals are intra-normalised per word, power-normalised and L2-normalised.
"""

from __future__ import annotations

import numpy as np

from spatial_memory.errors import EmptyMapError


def kmeans(x: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
    """Lloyd k-means on unit vectors (cosine assignment). ``x: [N, C]`` -> centres ``[k, C]``."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        assign = (x @ centres.T).argmax(1)
        for j in range(k):
            m = assign == j
            if m.any():
                c = x[m].mean(0)
                centres[j] = c / max(np.linalg.norm(c), 1e-9)
            else:  # re-seed an empty word on a random sample
                centres[j] = x[rng.integers(len(x))]
    return centres.astype(np.float32)


def vlad(desc: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """VLAD vector ``[W*C]`` of ``desc: [N, C]`` against ``codebook: [W, C]`` (zeros if N == 0)."""
    W, C = codebook.shape
    out = np.zeros((W, C), np.float32)
    if len(desc):
        assign = (desc @ codebook.T).argmax(1)
        np.add.at(out, assign, desc - codebook[assign])
    n = np.linalg.norm(out, axis=1, keepdims=True)
    out = out / np.maximum(n, 1e-9)
    out = np.sign(out) * np.sqrt(np.abs(out))
    v = out.reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-9)


class VladIndex:
    """Global descriptors of the mapping keyframes and top-k lookup.

    Attributes:
        codebook: ``[W, C] float32`` visual words.
        descriptors: ``[F, W*C] float32`` one VLAD vector per keyframe.
    """

    def __init__(self, codebook: np.ndarray, descriptors: np.ndarray) -> None:
        self.codebook = np.asarray(codebook, np.float32)
        self.descriptors = np.asarray(descriptors, np.float32)

    @classmethod
    def fit(cls, per_frame_desc: list[np.ndarray], words: int = 16, max_samples: int = 20000, seed: int = 0) -> "VladIndex":
        """Fit the codebook on (a sample of) all frames' descriptors and describe every frame."""
        allc = [d for d in per_frame_desc if len(d)]
        if not allc:
            raise EmptyMapError("no local descriptors in the mapping frames: cannot build a retrieval index")
        x = np.concatenate(allc)
        rng = np.random.default_rng(seed)
        if len(x) > max_samples:
            x = x[rng.choice(len(x), max_samples, replace=False)]
        cb = kmeans(x, words, seed=seed)
        return cls(cb, np.stack([vlad(d, cb) for d in per_frame_desc]))

    def describe(self, desc: np.ndarray) -> np.ndarray:
        return vlad(desc, self.codebook)

    def query(self, desc: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` keyframe indices ``[k]`` and their similarities ``[k]`` for local descriptors ``[N, C]``."""
        if len(self.descriptors) == 0:
            raise EmptyMapError("retrieval index has no keyframes")
        s = self.descriptors @ self.describe(desc)
        order = np.argsort(-s)[:k]
        return order, s[order]
