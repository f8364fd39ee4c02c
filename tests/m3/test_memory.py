"""M3Memory end to end on a short simulated run: ingest, text queries, rendering, persistence, PLY."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spatial_memory import Frame
from spatial_memory.errors import MapFormatError, QueryError
from spatial_memory.m3 import M3Config, M3Memory
from emem.m3_eval import aabb_distance


@pytest.fixture(scope="module")
def run():
    """A memory built from 10 frames of the Drake room at 128x96 (shared by the tests below)."""
    from sim.simulator import make_sim_source

    src = make_sim_source(scene="drake_living_room", seed=0, frames=10, width=128, height=96, progress=False)
    frames = list(src)
    cfg = M3Config()
    cfg.mapper.iters_per_keyframe = 8
    mem = M3Memory(cfg)
    for f in frames:
        mem.ingest(f)
    return mem, frames, src.scene


def test_ingest_skips_bad_frames_and_counts_them(run) -> None:
    _, frames, _ = run
    mem = M3Memory(M3Config())
    f = frames[0]
    r = mem.ingest(f.with_pose(None))
    assert not r.integrated and "pose" in r.reason
    no_depth = Frame(f.stamp_ns, f.rgb, None, f.intrinsics, f.T_world_camera)
    assert not mem.ingest(no_depth).integrated
    broken = Frame(f.stamp_ns, f.rgb[:, :, :2], f.depth, f.intrinsics, f.T_world_camera)
    r = mem.ingest(broken)
    assert not r.integrated and "invalid" in r.reason
    s = mem.stats()
    assert (s["skipped_no_pose"], s["skipped_no_depth"], s["skipped_invalid"]) == (1, 1, 1)
    assert mem.num_gaussians == 0
    assert mem.ingest(f).integrated and mem.num_gaussians > 0


def test_text_query_finds_labelled_object(run) -> None:
    mem, frames, scene = run
    assert mem.stats()["keyframes"] >= 3 and mem.psc["labels"].size >= 3
    # The object category that covers most pixels in the run (structure excluded) must be found.
    counts: dict[str, int] = {}
    for f in frames:
        for i, n in zip(*np.unique(f.instance_ids, return_counts=True)):
            lab = f.id_to_label.get(int(i))
            if lab in scene.labels():
                counts[lab] = counts.get(lab, 0) + int(n)
    label = max(counts, key=counts.get)
    hits = mem.query_text(label, top_k=3)
    assert hits and hits[0].label == label and hits[0].support >= 5
    objs = [o for o in scene.objects if o.label == label]
    d = min(aabb_distance(hits[0].position, np.asarray(o.aabb_min), np.asarray(o.aabb_max)) for o in objs)
    assert d <= 0.5, (label, hits[0].position, d)
    # what_is_here at the hit returns that label first.
    assert mem.what_is_here(hits[0].position, k=2)[0][0] == label


def test_query_errors(run) -> None:
    mem, _, _ = run
    with pytest.raises(QueryError):
        mem.query_text("   ")
    with pytest.raises(QueryError):
        mem.query_text("sofa", extractor="dino")
    with pytest.raises(QueryError):
        mem.query_text("sofa", top_k=0)


def test_render_and_heatmap(run) -> None:
    mem, frames, _ = run
    f = frames[2]
    view = mem.render(f.intrinsics, f.T_world_camera, text="floor")
    assert view.rgb.shape == (96, 128, 3) and view.rgb.dtype == np.uint8
    assert view.depth.shape == (96, 128) and view.depth.dtype == np.float32
    assert view.features["labels"].shape == (96, 128, 384)
    heat = mem.heatmap("floor", f.intrinsics, f.T_world_camera)
    np.testing.assert_allclose(heat, view.heatmap, atol=1e-5)
    floor_ids = [i for i, lab in f.id_to_label.items() if lab == "floor"]
    on_floor = np.isin(f.instance_ids, floor_ids)
    if on_floor.any() and (~on_floor).any():
        assert heat[on_floor].mean() > heat[~on_floor].mean()


def test_save_load_roundtrip_gives_identical_answers(run, tmp_path: Path) -> None:
    mem, frames, _ = run
    mem.save(tmp_path / "map")
    back = M3Memory.load(tmp_path / "map")
    assert back.num_gaussians == mem.num_gaussians and back.vocabulary == mem.vocabulary
    for text in mem.vocabulary[:4]:
        a, b = mem.query_text(text), back.query_text(text)
        assert [h.support for h in a] == [h.support for h in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.position, y.position, atol=1e-6)
            assert x.score == pytest.approx(y.score, abs=1e-6)
    f = frames[1]
    np.testing.assert_array_equal(mem.render(f.intrinsics, f.T_world_camera).rgb, back.render(f.intrinsics, f.T_world_camera).rgb)


def _edit_meta(path: Path, fn) -> None:
    meta = json.loads((path / "meta.json").read_text())
    fn(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def test_load_errors(run, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    mem, _, _ = run
    good = mem.save(tmp_path / "good")

    wrong_version = tmp_path / "v"
    shutil.copytree(good, wrong_version)
    _edit_meta(wrong_version, lambda m: m.update(format_version=99))
    with pytest.raises(MapFormatError, match="version"):
        M3Memory.load(wrong_version)

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    t = load_file(str(missing / "attention.safetensors"))
    del t["W.labels"]
    save_file(t, str(missing / "attention.safetensors"))
    with pytest.raises(MapFormatError, match="W.labels"):
        M3Memory.load(missing)

    # A consistent file whose query width differs from the config.
    shape = tmp_path / "shape"
    shutil.copytree(good, shape)
    g = load_file(str(shape / "gaussians.safetensors"))
    g["query.labels"] = torch.zeros(g["query.labels"].shape[0], 5)
    save_file(g, str(shape / "gaussians.safetensors"))
    _edit_meta(shape, lambda m: m["tensors"]["gaussians"].update({"query.labels": list(g["query.labels"].shape)}))
    with pytest.raises(MapFormatError, match="query.labels"):
        M3Memory.load(shape)

    with pytest.raises(MapFormatError):
        M3Memory.load(tmp_path / "nothing_here")


def test_interrupted_save_leaves_old_map_intact(run, tmp_path: Path, monkeypatch) -> None:
    import spatial_memory.persistence as persistence

    mem, _, _ = run
    target = mem.save(tmp_path / "map")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    calls = {"n": 0}
    real = persistence.save_file

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence, "save_file", failing)
    with pytest.raises(OSError, match="simulated"):
        mem.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map"]  # no temporary leftovers
    assert M3Memory.load(target).num_gaussians == mem.num_gaussians


def test_export_ply_has_embedding_properties(run, tmp_path: Path) -> None:
    mem, _, _ = run
    path = mem.export_ply(tmp_path / "map.ply")
    raw = Path(path).read_bytes()
    header = raw[: raw.index(b"end_header")].decode("ascii")
    assert f"element vertex {mem.num_gaussians}" in header
    d = mem.attention["labels"].query_dim
    props = [ln.split()[-1] for ln in header.splitlines() if ln.startswith("property")]
    assert [p for p in props if p.startswith("f_emb_")] == [f"f_emb_{j}" for j in range(d)]
    assert mem.ply_embedding_layout() == {"labels": (0, d)}
    assert {"x", "y", "z", "opacity", "scale_0", "rot_0", "f_dc_0"} <= set(props)
    # Binary body: one float32 per property per vertex.
    body = raw[raw.index(b"end_header") + len(b"end_header\n") :]
    arr = np.frombuffer(body, dtype="<f4").reshape(mem.num_gaussians, len(props))
    q = mem.mapper.model.queries["labels"].detach().numpy()
    np.testing.assert_allclose(arr[:, props.index("f_emb_0")], q[:, 0], atol=1e-6)
    xyz, rgb = mem.gaussian_points()
    np.testing.assert_allclose(arr[:, :3], xyz, atol=1e-6)
    assert rgb.dtype == np.uint8 and rgb.shape == xyz.shape


def test_cluster_points_equals_dbscan_on_voxel_centres() -> None:
    from sklearn.cluster import DBSCAN

    from spatial_memory.m3.memory import cluster_points

    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.normal(c, 0.08, (300, 3)) for c in ([0, 0, 0], [1, 0, 0], [0.35, 0, 0], [3, 3, 1])])
    eps = 0.15
    ours = cluster_points(xyz, eps)
    cells = np.floor(xyz / (eps / 2)).astype(np.int64)
    uniq, inv = np.unique(cells, axis=0, return_inverse=True)
    ref = DBSCAN(eps=eps * (1 + 1e-9), min_samples=1).fit_predict((uniq + 0.5) * eps / 2)[inv.reshape(-1)]
    # Same partition (labels may be numbered differently).
    pairs = set(zip(ours.tolist(), ref.tolist()))
    assert len(pairs) == len(set(ours.tolist())) == len(set(ref.tolist()))
    assert len(set(ours.tolist())) >= 2
