"""``emem experiment``: configuration handling, sweep aggregation, and one tiny run end to end.

The end-to-end test runs ``config/experiments/tiny.yaml`` as a user would (``python -m emem.cli
experiment run``), through the ROS 2 graph when the built interfaces import, else with
``--no-ros`` (the reason is printed), and checks what the run left behind.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emem.experiment import (
    Annotated,
    ExperimentConfig,
    GroundTruthSegmentation,
    aggregate,
    apply_overrides,
    load_config,
    ros_available,
    summary_markdown,
    sweep_jobs,
)
from spatial_memory.errors import ConfigError
from spatial_memory.types import CameraIntrinsics, Frame

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "config" / "experiments"


# ------------------------------------------------------------------------------ configuration

@pytest.mark.parametrize("name", ["demo", "apartment", "tiny"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.stream.frames >= 4 and cfg.m3.extractors


def test_overrides_nested_typed_and_checked():
    cfg = load_config(CONFIGS / "demo.yaml", ["stream.frames=60", "ros=false", "reloc.trans_range=[0.1, 0.4]",
                                              "episodic.budgets=[4, 8]"])
    assert cfg.stream.frames == 60 and cfg.ros is False
    assert cfg.reloc.trans_range == (0.1, 0.4)
    assert cfg.episodic.budgets == [4, 8]
    assert cfg.stream.width == 320  # untouched keys keep the file's values
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(None, ["stream.fps=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["stream.frames=many"])
    with pytest.raises(ConfigError, match="true/false"):
        load_config(None, ["ros=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["stream.frames"])
    with pytest.raises(ConfigError, match="stream.frames must be >= 4"):
        load_config(None, ["stream.frames=2"])


def test_config_round_trips_through_dict():
    cfg = load_config(CONFIGS / "tiny.yaml")
    again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


# ------------------------------------------------------------------------------ ROS helpers

def _frame(stamp: int, with_ids: bool) -> Frame:
    K = CameraIntrinsics.from_fov(8, 6, 60.0)
    ids = np.full((6, 8), 3, np.int32) if with_ids else None
    return Frame(stamp, np.zeros((6, 8, 3), np.uint8), np.ones((6, 8), np.float32), K, np.eye(4), ids,
                 {3: "sofa"} if with_ids else {})


def test_ground_truth_segmentation_matches_by_stamp():
    seg = GroundTruthSegmentation([_frame(100, True), _frame(200, True)])

    class Sink:
        def __init__(self):
            self.got = []
            self.num_gaussians = 7

        def ingest(self, f):
            self.got.append(f)
            return True

    sink = Sink()
    mem = Annotated(sink, seg)
    mem.ingest(_frame(200, False))
    mem.ingest(_frame(300, False))  # no rendered frame with this stamp: passed on unlabelled
    assert sink.got[0].id_to_label == {3: "sofa"} and sink.got[0].instance_ids is not None
    assert sink.got[1].instance_ids is None
    assert (seg.matched, seg.unmatched) == (1, 1)
    assert mem.num_gaussians == 7  # everything else is the wrapped memory's


# ------------------------------------------------------------------------------ sweeps

def test_sweep_jobs_and_aggregate(tmp_path):
    jobs = sweep_jobs("c.yaml", [0, 1], ["apartment"], [8], tmp_path)
    assert [j["seed"] for j in jobs] == [0, 1]
    assert "scene=apartment" in jobs[0]["sets"] and "episodic.budgets=[8]" in jobs[0]["sets"]
    assert len({j["out"] for j in jobs}) == 2
    runs = [{**j, "all_stages_ok": True, "headline": {"query_success": q, "wall_seconds": 10.0}}
            for j, q in zip(jobs, (0.5, 1.0))]
    (row,) = aggregate(runs)
    assert row["query_success"]["mean"] == pytest.approx(0.75)
    assert row["query_success"]["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert row["runs_ok"] == 2
    md = summary_markdown([row])
    assert "apartment" in md and "0.75" in md


# ------------------------------------------------------------------------------ end to end

def _env_with_ros() -> dict[str, str]:
    """The environment of scripts/with_env.sh (built interfaces on the paths) when present."""
    env = dict(os.environ)
    env_sh = ROOT / "install" / "ros" / "env.sh"
    if env_sh.is_file():
        out = subprocess.run(["bash", "-c", f"source {env_sh} && env -0"], capture_output=True, check=True)
        env = dict(kv.split("=", 1) for kv in out.stdout.decode().split("\0") if "=" in kv)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["EMEM_PROGRESS"] = "0"
    return env


def _ros_usable(env: dict[str, str]) -> tuple[bool, str]:
    if ros_available()[0]:
        return True, ""
    probe = subprocess.run([sys.executable, "-c", "import rclpy, embodied_memory.srv"], env=env, capture_output=True,
                           text=True)
    return probe.returncode == 0, probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "not importable"


@pytest.mark.timeout(900)
def test_tiny_experiment_end_to_end(tmp_path):
    env = _env_with_ros()
    use_ros, why = _ros_usable(env)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "emem.cli", "experiment", "run", "--config", str(CONFIGS / "tiny.yaml"),
           "--out", str(out), "--set", f"domain_id={40 + os.getpid() % 50}"]
    if not use_ros:
        print(f"running tiny.yaml with --no-ros: {why}")
        cmd.append("--no-ros")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    m = json.loads((out / "metrics.json").read_text())
    failed = {k: v.get("error") for k, v in m["stages"].items() if v["status"] != "ok"}
    assert not failed, f"stages failed: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and m["all_stages_ok"]
    assert m["transport"] == ("ros" if use_ros else "direct")

    for name in ("report.html", "metrics.json", "run.rrd", "config.json", "session2.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for d in ("maps/m3", "maps/episodic", "maps/favor", "maps/baseline", "maps_session2/m3", "bag"):
        assert (out / d).is_dir() and any((out / d).iterdir()), d
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # map, render, CDF, episodic, timing, sessions

    # every number in range
    q = m["queries"]
    assert 0.0 <= q["success_rate"] <= 1.0 and q["categories"] == len(m["scene"]["categories"])
    assert q["success_rate"] >= 0.3, q["per_label"]
    if use_ros:
        assert m["stream"]["frames_received"] == m["stream"]["frames_sent"] == m["scene"]["frames"]
        assert m["stream"]["segmentation_unmatched"] == 0
    res = m["kidnap"]["results"]
    assert set(res) == {"favor/mapping_lighting", "favor/changed_lighting", "baseline/mapping_lighting",
                        "baseline/changed_lighting"}
    for r in res.values():  # failed queries are null (metrics.json is strict JSON)
        assert len(r["errors_cm"]) == m["kidnap"]["queries"]
        ok = [e for e in r["errors_cm"] if e is not None]
        assert all(math.isfinite(e) and e >= 0 for e in ok)
        assert r["failure_rate"] == pytest.approx(1 - len(ok) / len(r["errors_cm"]))
    assert any(e is not None for r in res.values() for e in r["errors_cm"]), "no query relocalized at all"
    for s, by_budget in m["episodic"]["per_strategy"].items():
        for b, acc in by_budget.items():
            assert all(0.0 <= v <= 1.0 for v in acc.values()), (s, b, acc)
    assert m["views"]["psnr_db"] > 10.0

    # session 2 ran in another process, from the saved files
    s2 = m["session2"]
    assert s2["pid"] != m["pid"] and s2["pid"] > 0
    assert s2["loaded"]["m3"]["gaussians"] == m["stream"]["m3"]["gaussians"]
    assert s2["queries_loaded"]["success_rate"] == pytest.approx(q["success_rate"])
    assert s2["m3_after"]["gaussians"] >= s2["loaded"]["m3"]["gaussians"]
    ms = m["multi_session"]
    assert ms["checks"]["session2_in_separate_process"] and ms["checks"]["loaded_map_answers_like_saved"]
    assert ms["checks"]["query_success_kept"], ms
