"""Principal scene components: batch greedy filtering vs streaming, bank sizes vs theta."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.errors import ConfigError
from spatial_memory.m3.psc import StreamingPSC, build_psc_greedy


def _naive_greedy(x: np.ndarray, theta: float) -> list[int]:
    """The O(M^2) walk exactly as M3 describes it."""
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept: list[int] = []
    for i in range(len(x)):
        if not any(float(n[i] @ n[k]) >= theta for k in kept):
            kept.append(i)
    return kept


def _clustered(m: int = 1500, d: int = 16, centres: int = 12, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = c[rng.integers(0, centres, m)] + noise * rng.normal(size=(m, d))
    return (x * rng.uniform(0.5, 3.0, (m, 1))).astype(np.float32)  # scale must not matter


def test_greedy_matches_naive_walk_and_keeps_unnormalised_vectors() -> None:
    x = _clustered(600)
    bank, idx = build_psc_greedy(x, 0.8, block=97)  # block boundaries inside the data
    assert idx.tolist() == _naive_greedy(x, 0.8)
    np.testing.assert_array_equal(bank, x[idx])


def test_streaming_equals_greedy_on_same_order() -> None:
    x = _clustered(3000)
    bank, _ = build_psc_greedy(x, 0.85)
    s = StreamingPSC(0.85)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 9, replace=False))
    added = sum(s.update(chunk) for chunk in np.split(x, cuts))
    assert added == s.size == len(bank)
    np.testing.assert_array_equal(s.bank, bank)
    assert s.counts.sum() == len(x)  # every vector is counted by exactly one entry
    assert s.stats()["seen"] == len(x)


def test_bank_size_shrinks_with_lower_theta() -> None:
    x = _clustered(2000)
    sizes = [len(build_psc_greedy(x, t)[0]) for t in (0.95, 0.85, 0.7, 0.5)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    # theta = 1 keeps only distinct directions: duplicates collapse.
    dup = np.concatenate([x[:50], x[:50] * 2.0])
    assert len(build_psc_greedy(dup, 1.0)[0]) == 50
    s = StreamingPSC(1.0)  # duplicates arriving in a later frame are covered by the bank too
    s.update(x[:50])
    assert s.update(x[:50] * 3.0) == 0 and s.size == 50


def test_max_size_caps_bank_and_mean_merge_moves_entries() -> None:
    x = _clustered(1000)
    s = StreamingPSC(0.95, max_size=10)
    s.update(x)
    assert s.size == 10 and s.n_overflow > 0
    m = StreamingPSC(0.8, merge="mean")
    m.update(x)
    first, _ = build_psc_greedy(x, 0.8)
    assert m.size == len(first) and not np.allclose(m.bank, first)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        StreamingPSC(0.0)
    with pytest.raises(ConfigError):
        build_psc_greedy(np.zeros(5, np.float32), 0.8)
    s = StreamingPSC(0.8)
    s.update(np.ones((3, 4), np.float32))
    with pytest.raises(ConfigError, match="dim"):
        s.update(np.ones((3, 5), np.float32))
