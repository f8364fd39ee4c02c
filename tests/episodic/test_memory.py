"""EpisodicMemory query API on rendered toy-scene frames: ingest, recall, last_seen, answer,
bad inputs, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.episodes import TOY_LABELS, make_toy_apartment
from sim.renderer import Renderer
from spatial_memory.episodic.encoder import ObservationEncoder
from spatial_memory.episodic.memory import Answer, EpisodicConfig, EpisodicMemory, Models
from spatial_memory.episodic.reader import ReaderConfig, SATReader
from spatial_memory.errors import ConfigError, MapFormatError, QueryError
from spatial_memory.geometry import make_pose, yaw_pitch_to_rotation
from spatial_memory.types import CameraIntrinsics, Frame


@pytest.fixture(scope="module")
def models() -> Models:
    torch.manual_seed(0)
    vocab = sorted(TOY_LABELS)
    return Models(ObservationEncoder(len(vocab), 16), SATReader(ReaderConfig(n_labels=len(vocab), emb_dim=16, width=16, layers=1)),
                  vocab, {})


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    scene = make_toy_apartment(0, n_rooms=3)
    r = Renderer(scene)
    intr = CameraIntrinsics.from_fov(64, 48, 80.0)
    out = []
    for i in range(24):
        room = i // 8  # 8 looks around the centre of each room
        pos = np.array([room * 4.0 + 2.0, 2.0, 1.3])
        T = make_pose(yaw_pitch_to_rotation(2 * np.pi * (i % 8) / 8, -0.3), pos)
        out.append(r.render_frame(intr, T, stamp_ns=(i + 1) * 10**8, index=i))
    return out


def make_memory(models: Models, frames: list[Frame], budget: int = 12) -> EpisodicMemory:
    mem = EpisodicMemory(EpisodicConfig(budget=budget, strategy="sat_pm", place_radius=1.5), models)
    for f in frames:
        assert mem.ingest(f)
    return mem


def test_ingest_recall_and_last_seen(models: Models, frames: list[Frame]) -> None:
    mem = make_memory(models, frames)
    assert len(mem) == 12 and mem.places.n_places == 3  # one place per room, from positions only
    occ = mem.store.occupancy()
    assert sorted(occ.values()) == [4, 4, 4]  # sat_pm split the budget evenly
    at0 = mem.recall(place_id=0)
    assert at0 and all(e.place_id == 0 for e in at0)
    near = mem.recall(position=np.array([10.0, 2.0, 1.3]), radius=0.5)
    assert near and all(e.place_id == 2 for e in near)
    window = mem.recall(t_min_ns=16 * 10**8, t_max_ns=23 * 10**8)
    # each place keeps its 4 newest frames: place 1 stamps 13..16, place 2 stamps 21..24
    assert [e.stamp_ns for e in window] == [k * 10**8 for k in (16, 21, 22, 23)]
    # last_seen is exact: the last frame whose instance image shows the label
    seen_in = {lab: f for f in frames for lab in f.labels_present() if lab in TOY_LABELS}
    assert seen_in
    for lab, f in seen_in.items():
        ls = mem.last_seen(lab)
        assert ls is not None and ls.stamp_ns == f.stamp_ns
        np.testing.assert_allclose(ls.T_world_camera, f.T_world_camera)
    never = [l for l in TOY_LABELS if l not in seen_in][0]
    assert mem.last_seen(never) is None and never in mem.last_error


def test_bad_frames_are_skipped_not_raised(models: Models, frames: list[Frame]) -> None:
    mem = make_memory(models, frames[:3])
    f = frames[0]
    bad_T = f.T_world_camera.copy()
    bad_T[0, 3] = np.nan
    assert not mem.ingest(f.with_pose(None)) and "no pose" in mem.last_error
    assert not mem.ingest(f.with_pose(bad_T)) and "bad pose" in mem.last_error
    assert not mem.ingest("not a frame")  # type: ignore[arg-type]
    bad_rgb = Frame(0, np.zeros((4, 4), np.uint8), None, f.intrinsics, f.T_world_camera)
    assert not mem.ingest(bad_rgb) and "bad rgb" in mem.last_error
    assert sum(mem.skipped.values()) == 4 and len(mem) == 3
    # a frame without semantics is remembered with no labels
    plain = Frame(5, f.rgb, None, f.intrinsics, f.T_world_camera)
    assert mem.ingest(plain) and mem.store.entries()[-1].labels == []


def test_answers_and_bad_queries(models: Models, frames: list[Frame]) -> None:
    mem = make_memory(models, frames)
    a = mem.answer("what_was_there", {"place_id": 1})
    assert isinstance(a, Answer) and isinstance(a.prediction, list) and 0.0 <= a.confidence <= 1.0
    assert set(a.prediction) <= set(models.vocab) and set(a.scores) == set(models.vocab)
    b = mem.answer("last_seen", {"label": models.vocab[0]})
    assert b.prediction in range(mem.places.n_places)
    c = mem.answer("order", {"place_a": 0, "place_b": 2})
    assert c.prediction in (0, 2) and 0.5 <= c.confidence <= 1.0
    with pytest.raises(QueryError):
        mem.answer("what_was_there", {"place_id": 7})
    with pytest.raises(QueryError):
        mem.answer("what_was_there", {"place_id": "kitchen"})
    with pytest.raises(QueryError):
        mem.answer("last_seen", {"label": "unicorn"})
    with pytest.raises(QueryError):
        mem.answer("order", {"place_a": 1, "place_b": 1})
    with pytest.raises(QueryError):
        mem.answer("dance", {})
    with pytest.raises(QueryError):
        mem.recall(place_id=99)
    empty = EpisodicMemory(EpisodicConfig(budget=4), models)
    with pytest.raises(QueryError):  # no places yet: every place id is unknown
        empty.answer("first_visit", {"place_id": 0})


def test_bad_config(models: Models) -> None:
    for cfg in (EpisodicConfig(budget=0), EpisodicConfig(budget=-1), EpisodicConfig(strategy="lru"),
                EpisodicConfig(place_radius=float("nan"))):
        with pytest.raises(ConfigError):
            EpisodicMemory(cfg, models)


def test_save_load_round_trip(models: Models, frames: list[Frame], tmp_path) -> None:
    mem = make_memory(models, frames)
    q = {"place_id": 2}
    before = mem.answer("first_visit", q)
    mem.save(tmp_path / "ep")
    back = EpisodicMemory.load(tmp_path / "ep")
    assert [e.step for e in back.store.entries()] == [e.step for e in mem.store.entries()]
    for e0, e1 in zip(mem.store.entries(), back.store.entries()):
        np.testing.assert_array_equal(e0.embedding, e1.embedding)
        assert e0.labels == e1.labels and e0.place_id == e1.place_id and e0.stamp_ns == e1.stamp_ns
    assert back.store.visits == mem.store.visits and back.step == mem.step
    after = back.answer("first_visit", q)
    assert after.prediction == before.prediction and after.confidence == pytest.approx(before.confidence)
    lab = next(iter(mem._last_seen))
    assert back.last_seen(lab).stamp_ns == mem.last_seen(lab).stamp_ns
    # keeps working online after loading
    assert back.ingest(frames[0]) and back.places.n_places == 3
    (tmp_path / "ep" / "meta.json").write_text('{"kind": "m3", "format_version": 1}')
    with pytest.raises(MapFormatError):
        EpisodicMemory.load(tmp_path / "ep")
