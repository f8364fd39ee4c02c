"""``emem map build|query|render`` on a tiny simulated run (the CLI wiring, end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emem.cli import main


def test_map_build_query_render(tmp_path: Path, capsys) -> None:
    out = tmp_path / "room"
    rc = main(["map", "build", "--source", "sim:drake_living_room", "--frames", "3", "--width", "96",
               "--height", "72", "--iters", "2", "--out", str(out)])
    assert rc == 0 and (out / "meta.json").is_file()
    stats = json.loads(capsys.readouterr().out)
    assert stats["keyframes"] >= 1 and stats["gaussians"] > 0

    # Query the label that covered most of the first frame.
    from sim.simulator import make_sim_source

    f = next(iter(make_sim_source(scene="drake_living_room", frames=3, width=96, height=72, progress=False)))
    ids, n = np.unique(f.instance_ids, return_counts=True)
    n[ids == 0] = 0  # 0 = no instance
    label = f.id_to_label[int(ids[np.argmax(n)])]
    assert main(["map", "query", str(out), label, "--top-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == label and 1 <= len(res["hits"]) <= 2
    assert len(res["hits"][0]["position"]) == 3

    png = tmp_path / "view.png"
    assert main(["map", "render", str(out), "--pose", "0 0 1.2 -0.5 0.5 -0.5 0.5", "--width", "64", "--height", "48",
                 "--text", "floor", "--out", str(png)]) == 0
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape == (48, 128, 3)  # colour | heat map side by side


def test_bad_inputs_give_typed_errors(tmp_path: Path, capsys) -> None:
    assert main(["map", "query", str(tmp_path / "missing"), "sofa"]) == 2
    assert "not a map directory" in capsys.readouterr().err
    assert main(["map", "build", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    from emem.commands.map import parse_pose
    from spatial_memory.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_pose("1 2 3")
    T = parse_pose("1 2 3 0 0 0 1")
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
