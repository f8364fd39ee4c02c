import json

import numpy as np
import pytest
import torch

from spatial_memory.errors import MapFormatError
from spatial_memory.persistence import load_map_dir, require_tensor, save_map_dir


def test_roundtrip_and_validation(tmp_path):
    p = tmp_path / "map"
    save_map_dir(p, "m3", 2, {"config": {"a": 1}}, {"gauss": {"means": np.ones((5, 3), np.float32)}})
    meta, t = load_map_dir(p, "m3", 2)
    assert meta["config"] == {"a": 1}
    assert torch.equal(t["gauss"]["means"], torch.ones(5, 3))
    assert require_tensor(t["gauss"], "means", (None, 3), "x").shape == (5, 3)
    with pytest.raises(MapFormatError, match="format version 2"):
        load_map_dir(p, "m3", 3)
    with pytest.raises(MapFormatError, match="'m3' map, expected 'favor'"):
        load_map_dir(p, "favor", 2)
    with pytest.raises(MapFormatError, match="missing tensor 'scales'"):
        require_tensor(t["gauss"], "scales", (None, 3), "x")


def test_shape_mismatch_and_missing_file(tmp_path):
    p = tmp_path / "map"
    save_map_dir(p, "m3", 1, {}, {"gauss": {"means": np.ones((5, 3), np.float32)}})
    meta = json.loads((p / "meta.json").read_text())
    meta["tensors"]["gauss"]["means"] = [6, 3]
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MapFormatError, match="shape"):
        load_map_dir(p, "m3", 1)
    (p / "gauss.safetensors").unlink()
    with pytest.raises(MapFormatError, match="missing tensor file"):
        load_map_dir(p, "m3", 1)


def test_interrupted_save_keeps_old_map(tmp_path):
    p = tmp_path / "map"
    save_map_dir(p, "m3", 1, {"v": "old"}, {"g": {"x": np.zeros(3, np.float32)}})

    class Boom:
        shape = (1,)

    with pytest.raises(Exception):
        save_map_dir(p, "m3", 1, {"v": "new"}, {"g": {"x": Boom()}})
    meta, _ = load_map_dir(p, "m3", 1)
    assert meta["v"] == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["map"]  # no temp dirs left behind
