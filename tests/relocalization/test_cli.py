"""``emem reloc locate`` and ``emem reloc build`` on real frames; prior parsing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from emem.cli import main
from emem.commands.reloc import parse_prior
from spatial_memory.errors import InvalidPoseError
from spatial_memory.geometry import pose_error, tq_from_pose


def test_parse_prior():
    T = parse_prior("1 2 3 0 0 0 1")
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3], np.eye(3))
    for bad in ("1 2 3", "a b c d e f g", "0 0 0 0 0 0 0", "nan 0 0 0 0 0 1"):
        with pytest.raises(InvalidPoseError):
            parse_prior(bad)


def test_locate_cli_json(favor_map, icl_queries, tmp_path, capsys, few_threads):
    rmap = favor_map.save(tmp_path / "rmap")
    q = icl_queries[0]
    img = tmp_path / "q.png"
    cv2.imwrite(str(img), q.rgb[:, :, ::-1])
    t, quat = tq_from_pose(q.T_world_camera)
    prior = " ".join(f"{v:.6f}" for v in [*(t + [0.05, 0, 0]), *quat])
    intr = q.intrinsics
    rc = main(["reloc", "locate", str(rmap), "--image", str(img), "--prior", prior,
               "--intrinsics", f"{intr.fx},{intr.fy},{intr.cx},{intr.cy}", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["success"]
    dt, dr = pose_error(np.array(out["T_world_camera"]), q.T_world_camera)
    assert dt < 0.1 and dr < 5
    assert len(out["quaternion_xyzw"]) == 4
    # A wrong camera is a typed error (exit code 2), not a wrong pose.
    rc = main(["reloc", "locate", str(rmap), "--image", str(img), "--intrinsics", "100,100,160,120", "--json"])
    assert rc == 2
    # An unreadable image too.
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["reloc", "locate", str(rmap), "--image", str(tmp_path / "bad.png")]) == 2


@pytest.mark.slow
def test_build_cli_from_icl(tmp_path, capsys, shared_data, few_threads):
    rc = main(["reloc", "build", "--source", "icl", "--frames", "12", "--every", "4", "--out", str(tmp_path / "m"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["landmarks"] > 20 and (tmp_path / "m" / "meta.json").is_file()


@pytest.mark.slow
def test_eval_and_bench_accept_a_bag_source(icl_mapping, tmp_path, capsys, few_threads):
    """``--source BAG``: a rosbag2 of real frames is split into mapping and query frames; both
    commands print their JSON with FaVoR and the baseline side by side."""
    from sim.bags import write_bag

    bag = tmp_path / "icl_bag"
    write_bag(icl_mapping[:16], bag)
    rc = main(["eval", "reloc", "--source", str(bag), "--frames", "4", "--queries", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["query_set"] == "real" and out["favor"]["queries"] == 2
    for m in ("favor", "baseline"):
        assert {"median_cm", "median_deg", "recall_5cm_5deg", "failure_rate", "query_ms"} <= set(out[m])
        assert out[m]["recall_5cm_5deg"] >= 0.5, out[m]
    rc = main(["bench", "reloc", "--source", str(bag), "--map-frames", "5", "--queries", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["source"] == str(bag) and out["queries"] == 2 and out["landmarks_per_s"] > 0
    assert out["query_ms"] > 0 and out["map_bytes"] > 0


def test_eval_pools_simulator_seeds(monkeypatch, capsys, few_threads):
    """``--seeds 0 1`` on the simulator: one map per seed, the headline pools every query of both
    and carries a bootstrap interval of the median ratio; per-seed results are kept (small images
    keep it fast: the protocol is the same at 640x480)."""
    import emem.reloc_eval as reloc_eval

    full = reloc_eval.sim_dataset
    monkeypatch.setattr(reloc_eval, "sim_dataset", lambda *a, **k: full(*a, **{**k, "width": 320, "height": 240}))
    rc = main(["eval", "reloc", "--source", "sim:drake_living_room", "--frames", "6", "--queries", "2",
               "--seeds", "0", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["seeds"] == [0, 1] and len(out["mapping_frames"]) == 2
    for qset in (out, out["changed_light"]):
        assert qset["favor"]["queries"] == qset["baseline"]["queries"] == 4
        assert set(qset["per_seed"]) == {"0", "1"} and qset["per_seed"]["1"]["favor"]["queries"] == 2
        lo, hi = qset["median_cm_ratio_ci90"]
        assert lo <= hi
        lo_s, hi_s = qset["median_cm_ratio_ci90_by_seed"]
        assert lo_s <= hi_s
    assert out["targets"]["median_cm_ratio_ci90"] == out["median_cm_ratio_ci90"] and set(out["build"]) == {"0", "1"}
