"""The Drake furnished living room (RobotLocomotion/models, CC0) as a :class:`sim.scene.Scene`.

The room is composed exactly as Drake composes it: ``furnished_living_room.dmd.yaml`` adds
models (``.sdf`` files) and welds each to the world with a pose ``X_PC``; each ``.sdf`` names a
glTF mesh (with its pose/scale inside the model); each glTF holds nodes, triangle primitives,
per-vertex UVs and PBR materials whose base-colour texture we keep. glTF is Y-up while the
Drake world is Z-up, so every glTF is rotated +90 deg about X before the model pose applies.

The directives file does not place the wooden table and the tea set that the Drake tutorial
adds in code; :data:`EXTRA_MODELS` adds them at the room centre (tea set on the table-top frame
the table ``.sdf`` declares), so the scene has every object the data set ships.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pygltflib
import yaml
from scipy.spatial.transform import Rotation

from spatial_memory.errors import DatasetFormatError
from spatial_memory.geometry import make_pose

from .scene import Material, Room, Scene, SceneObject

_REPO = Path(__file__).resolve().parents[1]
_PACKAGE_PREFIX = "package://drake_models/tutorials/models/"
DIRECTIVES_FILE = "models/furnished_living_room.dmd.yaml"

# glTF (Y-up) -> Drake world (Z-up): +90 deg about X maps (x, y, z) to (x, -z, y).
R_ZUP_YUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# Models the directives omit (the tutorial adds them in code): (model name, sdf file, X_PC).
EXTRA_MODELS: list[tuple[str, str, np.ndarray]] = [
    ("wooden_table", "wooden_table.sdf", make_pose(np.eye(3), [0.0, 0.0, 0.0])),
    ("tea_set", "tea_set.sdf", make_pose(np.eye(3), [0.0, 0.0, 0.8])),  # table_top_center frame
]

# Semantic label of each furniture model (directive model name -> label).
MODEL_LABELS = {
    "cabinet": "cabinet",
    "tall_cabinet": "cabinet",
    "bookshelves": "bookshelf",
    "sofa": "sofa",
    "stool": "stool",
    "curtains": "curtain",
    "wooden_table": "table",
    "tea_set": "tea set",
}

# Nodes of the room shell glTF -> (instance name, label). The "walls" node is split further.
SHELL_NODES = {
    "light0.001": ("ceiling_light_0", "lamp"),
    "light1.001": ("ceiling_light_1", "lamp"),
    "light2.001": ("ceiling_light_2", "lamp"),
    "light3.001": ("ceiling_light_3", "lamp"),
    "base board": ("baseboard", "wall"),
    "door": ("door", "door"),
    "door knob": ("door", "door"),
    "door_frame": ("door_frame", "door_frame"),
    "curtain_rod": ("curtain_rod", "curtain"),
}
# Materials of the shell's "walls" node -> (instance name, label); "wall" is split per side.
SHELL_MATERIALS = {
    "Wall paint": ("wall", "wall"),
    "Ceiling paint": ("ceiling", "ceiling"),
    "Floor": ("floor", "floor"),
    "Glass": ("window", "window"),
    "window_frame": ("window", "window"),
}


def default_data_dir() -> Path:
    """``$EMEM_SHARED_DATA/drake_living_room`` or ``<repo>/../shared/data/drake_living_room``."""
    root = os.environ.get("EMEM_SHARED_DATA")
    base = Path(root) if root else _REPO.parent / "shared" / "data"
    return base / "drake_living_room"


# ----------------------------------------------------------------------------- YAML / SDF


class _DirectivesLoader(yaml.SafeLoader):
    """SafeLoader that understands Drake's ``!Rpy`` rotation tag."""


def _construct_rpy(loader: yaml.SafeLoader, node: yaml.Node) -> np.ndarray:
    """``!Rpy {deg: [r, p, y]}`` (or ``rad:``) -> 3x3 rotation, Drake convention R = Rz(y) Ry(p) Rx(r)."""
    spec = loader.construct_mapping(node, deep=True)
    if "deg" in spec:
        rpy = np.radians(np.asarray(spec["deg"], dtype=np.float64))
    elif "rad" in spec:
        rpy = np.asarray(spec["rad"], dtype=np.float64)
    else:
        raise DatasetFormatError(f"!Rpy needs 'deg' or 'rad', got keys {sorted(spec)}")
    if rpy.shape != (3,):
        raise DatasetFormatError(f"!Rpy needs three angles, got {rpy.tolist()}")
    return Rotation.from_euler("xyz", rpy).as_matrix()  # extrinsic x, y, z == Rz @ Ry @ Rx


_DirectivesLoader.add_constructor("!Rpy", _construct_rpy)


def _resolve_package_uri(uri: str, models_dir: Path) -> Path:
    if uri.startswith(_PACKAGE_PREFIX):
        return models_dir / uri[len(_PACKAGE_PREFIX) :]
    return models_dir / uri


def parse_directives(path: Path) -> list[tuple[str, Path, np.ndarray]]:
    """Read a Drake model directives file.

    Returns:
        ``(model name, sdf path, X_world_model [4, 4])`` for every ``add_model`` that is welded to
        the world (unwelded models would fall under gravity; this room has none).
    """
    try:
        doc = yaml.load(path.read_text(), Loader=_DirectivesLoader)
    except yaml.YAMLError as e:
        raise DatasetFormatError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("directives"), list):
        raise DatasetFormatError(f"{path}: expected a top-level 'directives' list")
    files: dict[str, Path] = {}
    poses: dict[str, np.ndarray] = {}
    for d in doc["directives"]:
        if "add_model" in d:
            files[d["add_model"]["name"]] = _resolve_package_uri(d["add_model"]["file"], path.parent)
        elif "add_weld" in d:
            weld = d["add_weld"]
            if weld.get("parent") != "world":
                raise DatasetFormatError(f"{path}: only welds to 'world' are supported, got {weld.get('parent')!r}")
            model = str(weld["child"]).split("::")[0]
            xpc = weld.get("X_PC", {}) or {}
            R = xpc.get("rotation", np.eye(3))
            poses[model] = make_pose(np.asarray(R, dtype=np.float64), xpc.get("translation", [0.0, 0.0, 0.0]))
    missing = [m for m in files if m not in poses]
    if missing:
        raise DatasetFormatError(f"{path}: models {missing} are added but not welded to the world")
    return [(name, files[name], poses[name]) for name in files]


def _sdf_pose(elem: ET.Element | None) -> np.ndarray:
    """SDF ``<pose>x y z roll pitch yaw</pose>`` -> 4x4 (identity when absent)."""
    if elem is None or not (elem.text or "").strip():
        return np.eye(4)
    vals = [float(v) for v in elem.text.split()]
    if len(vals) != 6:
        raise DatasetFormatError(f"SDF pose needs 6 numbers, got {elem.text!r}")
    return make_pose(Rotation.from_euler("xyz", vals[3:]).as_matrix(), vals[:3])


@dataclass
class _VisualRef:
    mesh_path: Path
    X_model_visual: np.ndarray  # [4, 4]
    scale: np.ndarray  # [3]


def parse_sdf_visuals(path: Path) -> list[_VisualRef]:
    """Every ``<visual>`` mesh of an SDF model with its pose in the model frame and its scale."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetFormatError(f"{path}: cannot parse SDF ({e})") from None
    out = []
    for link in root.iter("link"):
        X_ml = _sdf_pose(link.find("pose"))
        for vis in link.findall("visual"):
            mesh = vis.find("geometry/mesh")
            if mesh is None or mesh.find("uri") is None:
                continue
            scale_el = mesh.find("scale")
            scale = np.array([float(v) for v in scale_el.text.split()]) if scale_el is not None else np.ones(3)
            out.append(_VisualRef(_resolve_package_uri(mesh.find("uri").text.strip(), path.parent),
                                  X_ml @ _sdf_pose(vis.find("pose")), scale))
    if not out:
        raise DatasetFormatError(f"{path}: no visual mesh found")
    return out


# ----------------------------------------------------------------------------- glTF

_COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _read_accessor(g: pygltflib.GLTF2, buffers: list[bytes], index: int) -> np.ndarray:
    """Decode one glTF accessor into ``[count, n_components]`` (strides and offsets honoured)."""
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    dtype = np.dtype(_COMPONENT_DTYPES[acc.componentType])
    ncomp = _TYPE_SIZES[acc.type]
    item = dtype.itemsize * ncomp
    stride = view.byteStride or item
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    raw = np.frombuffer(buffers[view.buffer], dtype=np.uint8, count=stride * (acc.count - 1) + item, offset=start)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(acc.count, item), strides=(stride, 1))
    arr = np.ascontiguousarray(rows).view(dtype).reshape(acc.count, ncomp)
    if acc.normalized and dtype.kind in "iu":
        arr = arr.astype(np.float32) / np.iinfo(dtype).max
    return arr


def _node_matrix(node: pygltflib.Node) -> np.ndarray:
    if node.matrix:
        return np.asarray(node.matrix, dtype=np.float64).reshape(4, 4).T  # glTF stores column-major
    T = np.eye(4)
    if node.rotation:
        T[:3, :3] = Rotation.from_quat(node.rotation).as_matrix()  # glTF quaternions are xyzw
    if node.scale:
        T[:3, :3] = T[:3, :3] @ np.diag(node.scale)
    if node.translation:
        T[:3, 3] = node.translation
    return T


@dataclass
class _Primitive:
    node_name: str
    material_name: str
    vertices: np.ndarray  # [n, 3] in the glTF file's root frame (Y-up)
    triangles: np.ndarray  # [t, 3]
    uv: np.ndarray  # [n, 2]
    material: Material


@functools.lru_cache(maxsize=32)
def _load_texture(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetFormatError(f"texture {path} is missing or cannot be decoded")
    return np.ascontiguousarray(img[:, :, ::-1])


def load_gltf_primitives(path: Path) -> list[_Primitive]:
    """All triangle primitives of a glTF file, node transforms applied (still in glTF Y-up)."""
    try:
        g = pygltflib.GLTF2().load(str(path))
    except Exception as e:  # pygltflib raises bare exceptions on malformed JSON
        raise DatasetFormatError(f"{path}: cannot read glTF ({e})") from None
    buffers = [(path.parent / b.uri).read_bytes() for b in g.buffers]
    materials: list[Material] = []
    for m in g.materials:
        pbr = m.pbrMetallicRoughness
        color = np.asarray((pbr.baseColorFactor if pbr and pbr.baseColorFactor else [1, 1, 1, 1])[:3], np.float32)
        tex = None
        if pbr is not None and pbr.baseColorTexture is not None:
            image = g.images[g.textures[pbr.baseColorTexture.index].source]
            tex = _load_texture(str(path.parent / image.uri))
        materials.append(Material(name=f"{path.stem}/{m.name}", base_color=color, texture=tex))
    default_material = Material(name=f"{path.stem}/default", base_color=np.full(3, 0.8, np.float32))

    out: list[_Primitive] = []

    def visit(node_index: int, parent: np.ndarray) -> None:
        node = g.nodes[node_index]
        T = parent @ _node_matrix(node)
        if node.mesh is not None:
            for p in g.meshes[node.mesh].primitives:
                if p.mode not in (None, 4):  # 4 = TRIANGLES; lines/points are not visible surfaces
                    continue
                pos = _read_accessor(g, buffers, p.attributes.POSITION).astype(np.float64)
                pos = pos @ T[:3, :3].T + T[:3, 3]
                if p.indices is not None:
                    tris = _read_accessor(g, buffers, p.indices).reshape(-1, 3).astype(np.int64)
                else:
                    tris = np.arange(len(pos)).reshape(-1, 3)
                if p.attributes.TEXCOORD_0 is not None:
                    uv = _read_accessor(g, buffers, p.attributes.TEXCOORD_0).astype(np.float32)
                else:
                    uv = np.zeros((len(pos), 2), np.float32)
                mat = materials[p.material] if p.material is not None else default_material
                mname = g.materials[p.material].name if p.material is not None else "default"
                out.append(_Primitive(node.name or f"node{node_index}", mname, pos, tris, uv, mat))
        for c in node.children or []:
            visit(c, T)

    scene = g.scenes[g.scene or 0]
    for n in scene.nodes:
        visit(n, np.eye(4))
    return out


# ----------------------------------------------------------------------------- assembly


class _SceneBuilder:
    """Accumulates triangle soups per instance and emits the Scene arrays."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.tris: list[np.ndarray] = []
        self.tri_inst: list[np.ndarray] = []
        self.tri_mat: list[np.ndarray] = []
        self.tri_uv: list[np.ndarray] = []
        self.materials: list[Material] = []
        self._mat_index: dict[int, int] = {}
        self.instances: dict[str, tuple[int, str]] = {}  # name -> (id, label)
        self.n_verts = 0

    def instance(self, name: str, label: str) -> int:
        if name not in self.instances:
            self.instances[name] = (len(self.instances) + 1, label)
        return self.instances[name][0]

    def add(self, vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray, material: Material, instance_id: int) -> None:
        """``vertices: [n, 3]`` world, ``triangles: [t, 3]`` local indices, ``uv: [n, 2]`` per vertex."""
        key = id(material)
        if key not in self._mat_index:
            self._mat_index[key] = len(self.materials)
            self.materials.append(material)
        self.verts.append(vertices.astype(np.float32))
        self.tris.append((triangles + self.n_verts).astype(np.int32))
        self.tri_uv.append(uv[triangles].astype(np.float32))
        self.tri_inst.append(np.full(len(triangles), instance_id, np.int32))
        self.tri_mat.append(np.full(len(triangles), self._mat_index[key], np.int32))
        self.n_verts += len(vertices)

    def build(self, name: str) -> Scene:
        V = np.concatenate(self.verts)
        F = np.concatenate(self.tris)
        inst = np.concatenate(self.tri_inst)
        objects = []
        for obj_name, (iid, label) in self.instances.items():
            used = np.unique(F[inst == iid])
            objects.append(SceneObject(iid, obj_name, label, V[used].min(0).astype(np.float64), V[used].max(0).astype(np.float64)))
        floor = [o for o in objects if o.label == "floor"]
        lo, hi = (floor[0].aabb_min, floor[0].aabb_max) if floor else (V.min(0), V.max(0))
        scene = Scene(
            name=name, vertices=V, triangles=F, tri_instance=inst, tri_material=np.concatenate(self.tri_mat),
            tri_uv=np.concatenate(self.tri_uv), materials=self.materials, objects=objects,
            rooms=[Room(0, "living_room", np.array(lo[:2], np.float64), np.array(hi[:2], np.float64))],
            floor_z=float(lo[2]) if floor else 0.0,
        )
        return scene


def _wall_side(centroids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index 0..3 (-x, +x, -y, +y) of the shell wall nearest each triangle centroid ``[t, 3]``."""
    d = np.stack([np.abs(centroids[:, 0] - lo[0]), np.abs(centroids[:, 0] - hi[0]),
                  np.abs(centroids[:, 1] - lo[1]), np.abs(centroids[:, 1] - hi[1])], axis=1)
    return d.argmin(1)


def _place(prim: _Primitive, X_world_visual: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """glTF vertices ``[n, 3]`` -> world: scale in the mesh frame, Y-up -> Z-up, then the visual pose."""
    p = (prim.vertices * scale) @ R_ZUP_YUP.T
    return p @ X_world_visual[:3, :3].T + X_world_visual[:3, 3]


def _build_drake_room(data_dir: Path) -> Scene:
    directives = data_dir / DIRECTIVES_FILE
    if not directives.is_file():
        raise DatasetFormatError(f"Drake living room not found: {directives} is missing (set EMEM_SHARED_DATA)")
    models = parse_directives(directives)
    models += [(n, directives.parent / f, X) for n, f, X in EXTRA_MODELS]
    b = _SceneBuilder()
    wall_names = ("wall_west", "wall_east", "wall_south", "wall_north")  # -x, +x, -y, +y
    for model_name, sdf_path, X_wm in models:
        for vis in parse_sdf_visuals(sdf_path):
            X = X_wm @ vis.X_model_visual
            prims = load_gltf_primitives(vis.mesh_path)
            if model_name == "living_room":
                _add_shell(b, prims, X, vis.scale, wall_names)
                continue
            if model_name not in MODEL_LABELS:
                raise DatasetFormatError(f"{directives}: no semantic label known for model {model_name!r}")
            iid = b.instance(model_name, MODEL_LABELS[model_name])
            for p in prims:
                b.add(_place(p, X, vis.scale), p.triangles, p.uv, p.material, iid)
    return b.build("drake_living_room")


def _add_shell(b: _SceneBuilder, prims: list[_Primitive], X: np.ndarray, scale: np.ndarray, wall_names: tuple) -> None:
    """Add the room shell: named nodes get their own instance; walls split into four sides."""
    placed = [(p, _place(p, X, scale)) for p in prims]
    floor_pts = [v for p, v in placed if p.node_name == "walls" and p.material_name == "Floor"]
    if not floor_pts:
        raise DatasetFormatError("living_room.gltf: no 'Floor' primitive in the 'walls' node")
    lo, hi = floor_pts[0].min(0), floor_pts[0].max(0)
    for p, v in placed:
        if p.node_name == "walls":
            if p.material_name not in SHELL_MATERIALS:
                raise DatasetFormatError(f"living_room.gltf: unknown shell material {p.material_name!r}")
            name, label = SHELL_MATERIALS[p.material_name]
            if name == "wall":
                side = _wall_side(v[p.triangles].mean(1), lo, hi)
                for s, wname in enumerate(wall_names):
                    sel = side == s
                    if sel.any():
                        b.add(v, p.triangles[sel], p.uv, p.material, b.instance(wname, "wall"))
                continue
        elif p.node_name in SHELL_NODES:
            name, label = SHELL_NODES[p.node_name]
        else:
            raise DatasetFormatError(f"living_room.gltf: unknown shell node {p.node_name!r}")
        b.add(v, p.triangles, p.uv, p.material, b.instance(name, label))


def _freeze(scene: Scene) -> Scene:
    for a in (scene.vertices, scene.triangles, scene.tri_instance, scene.tri_material, scene.tri_uv):
        a.flags.writeable = False
    for m in scene.materials:
        if m.texture is not None:
            m.texture.flags.writeable = False
    return scene


@functools.lru_cache(maxsize=4)
def _load_cached(resolved: str) -> Scene:
    return _freeze(_build_drake_room(Path(resolved)))


def load_drake_living_room(data_dir: str | Path | None = None) -> Scene:
    """Load the furnished Drake living room (about 6 x 6 x 3.2 m, z-up, floor at z = 0).

    The result is cached per process and its arrays are read-only: callers share one instance.

    Raises:
        DatasetFormatError: the data folder or one of its files is missing or malformed.
    """
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    return _load_cached(str(path.resolve()))
