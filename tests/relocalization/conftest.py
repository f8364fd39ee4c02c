"""Small FaVoR maps on the real ICL-NUIM frames at 320x240, built once per test session."""

from __future__ import annotations

import contextlib

import pytest
import torch

from relocalization.favor import FavorConfig, FavorMap
from relocalization.icl import load_icl_frames

SIZE = (320, 240)
MAP_IDX = list(range(0, 90, 3))
QUERY_IDX = [31, 46, 61]  # unused by the map, inside its span


@contextlib.contextmanager
def torch_threads(n: int):
    """Few threads for small tensors: oversubscribed CPUs make torch's thread pool much slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def few_threads():
    with torch_threads(1):
        yield


def small_config() -> FavorConfig:
    cfg = FavorConfig()
    cfg.map.top_k = 512
    cfg.voxel.iterations = 60
    return cfg


@pytest.fixture(scope="session")
def icl_root(shared_data):
    root = shared_data / "icl_nuim_livingroom_micro"
    if not root.is_dir():
        pytest.skip("ICL-NUIM micro sequence missing")
    return root


@pytest.fixture(scope="session")
def icl_mapping(icl_root):
    return load_icl_frames(icl_root, MAP_IDX, SIZE)


@pytest.fixture(scope="session")
def icl_queries(icl_root):
    return load_icl_frames(icl_root, QUERY_IDX, SIZE)


@pytest.fixture(scope="session")
def favor_map(icl_mapping) -> FavorMap:
    with torch_threads(1):
        return FavorMap.build(icl_mapping, small_config(), progress=False)
