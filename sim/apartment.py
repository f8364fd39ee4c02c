"""Seeded procedural apartments: rooms joined by doorways, furnished with textured, labelled objects.

The floor plan is a guillotine partition of a rectangle into axis-aligned rooms; adjacent rooms
that share enough wall get a doorway (every room is reachable). Walls are double planes
``WALL_T`` apart with door jambs, lintel and threshold around each opening. Objects are box and
cylinder compositions placed against walls or free-standing, never overlapping each other or the
clearance in front of a doorway, and leaving at least half of each room's floor free. Every
surface carries a procedural texture (wood grain, weave, tiles, noise, book spines) generated
from the seed, dense enough in detail for keypoint tracking.

Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``: the same seed gives
byte-identical arrays, another seed a different apartment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from spatial_memory.errors import ConfigError

from .scene import Material, Room, Scene, SceneObject

WALL_H = 2.6  # m
WALL_T = 0.1  # m, wall thickness between two rooms
DOOR_W = 0.9  # m: a 0.4 m robot passes with 0.25 m to spare each side
DOOR_H = 2.1
DOOR_CLEARANCE = 1.0  # m of free floor kept in front of each doorway, on both sides
MIN_ROOM = 3.4  # m, smallest interior side of a room
MAX_OCCUPIED = 0.5  # fraction of a room's floor objects may cover
TEX = 128  # texture side, texels


# ----------------------------------------------------------------------------- textures


def _periodic_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``[size, size]`` tileable value noise in [0, 1]: a random ``cells x cells`` grid, bilinear."""
    g = rng.random((cells, cells))
    x = np.arange(size) * cells / size
    i0 = np.floor(x).astype(int)
    f = x - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no visible grid creases
    i1 = (i0 + 1) % cells
    rows = g[i0][:, i0] * (1 - f)[None, :] + g[i0][:, i1] * f[None, :]
    rows1 = g[i1][:, i0] * (1 - f)[None, :] + g[i1][:, i1] * f[None, :]
    return rows * (1 - f)[:, None] + rows1 * f[:, None]


def _fractal(rng: np.random.Generator, size: int, base_cells: int = 4, octaves: int = 5) -> np.ndarray:
    """``[size, size]`` tileable fractal noise in [0, 1] (octaves double the frequency, halve the weight)."""
    out = np.zeros((size, size))
    w, total = 1.0, 0.0
    for o in range(octaves):
        cells = min(base_cells * 2**o, size)
        out += w * _periodic_noise(rng, size, cells)
        total += w
        w *= 0.55
    out /= total
    return (out - out.min()) / max(out.max() - out.min(), 1e-9)


def _colorize(v: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Map ``v: [h, w]`` in [0, 1] between two RGB colours ``[3]`` (0..1) -> ``[h, w, 3] uint8``."""
    img = c0[None, None, :] * (1 - v[..., None]) + c1[None, None, :] * v[..., None]
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator, color: tuple, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(color, np.float64) + rng.uniform(-amount, amount, 3), 0.0, 1.0)


def texture(kind: str, rng: np.random.Generator, color: tuple, size: int = TEX) -> np.ndarray:
    """A tileable ``[size, size, 3] uint8`` procedural texture of a surface ``kind`` around ``color``.

    Kinds: wood (grain), planks (floor boards), fabric (weave), tiles, paint (mottled), wallpaper (mottled + motif),
    leaves, metal (brushed), screen, ceramic, books (spines).
    """
    c = _jitter(rng, color)
    dark, light = c * 0.55, np.clip(c * 1.25 + 0.05, 0, 1)
    n = _fractal(rng, size, 4, 5)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "wood":
        warp = _fractal(rng, size, 2, 3)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.integers(6, 12) * yy + 1.5 * warp))
        v = 0.55 * rings + 0.45 * _fractal(rng, size, 16, 3)
    elif kind == "planks":
        k = int(rng.integers(4, 7))
        plank = np.floor(yy * k)
        shift = rng.random(k)[plank.astype(int) % k]
        warp = _fractal(rng, size, 4, 3)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (3 * k * yy + 2.0 * warp + 4 * shift))
        seam = ((yy * k) % 1 < 0.04) | ((xx + shift) % 1 < 0.01)
        v = np.where(seam, 0.02, 0.35 * grain + 0.3 * _fractal(rng, size, 32, 2) + 0.35 * shift)
    elif kind == "fabric":
        k = int(rng.integers(24, 40))
        weave = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * k * xx)) * np.sign(np.sin(2 * np.pi * k * yy))
        v = 0.45 * weave + 0.55 * n
    elif kind == "tiles":
        k = int(rng.integers(3, 6))
        tile = np.floor(xx * k) + k * np.floor(yy * k)
        per_tile = rng.random(k * k)[tile.astype(int) % (k * k)]
        grout = (np.minimum((xx * k) % 1, (yy * k) % 1) < 0.06).astype(float)
        v = np.clip(0.35 * per_tile + 0.4 * n + 0.25, 0, 1) * (1 - grout) + 0.05 * grout
    elif kind == "wallpaper":
        k = int(rng.integers(6, 10))
        motif = ((np.sin(2 * np.pi * k * xx) * np.sin(2 * np.pi * k * yy)) > 0.6).astype(float)
        v = 0.55 * n + 0.3 * motif + 0.15 * _fractal(rng, size, 32, 2)
    elif kind == "leaves":
        v = np.clip(1.4 * _fractal(rng, size, 16, 3) - 0.2, 0, 1)
    elif kind == "metal":
        streak = _periodic_noise(rng, size, 64)[:, :1] * np.ones((1, size))
        v = 0.5 * streak + 0.3 * n + 0.2
    elif kind == "screen":
        v = 0.15 * n + 0.35 * (_fractal(rng, size, 8, 4) > 0.6)
    elif kind == "ceramic":
        k = int(rng.integers(3, 7))
        v = 0.6 + 0.25 * (np.sin(2 * np.pi * k * yy) > 0.7) + 0.15 * n
    elif kind == "books":
        return _books_texture(rng, size)
    else:  # "paint": mottled with speckles
        v = 0.7 * n + 0.3 * (rng.random((size, size)) > 0.93)
    return _colorize(np.clip(v, 0, 1), dark, light)


def _books_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rows of book spines of random colours and widths (bookshelf backs and shelves)."""
    img = np.zeros((size, size, 3), np.float64)
    rows = 4
    for r in range(rows):
        x = 0
        y0, y1 = r * size // rows, (r + 1) * size // rows
        while x < size:
            w = int(rng.integers(3, 10))
            top = y0 + int(rng.integers(0, (y1 - y0) // 3))
            img[top:y1, x : x + w] = rng.uniform(0.1, 0.9, 3)
            img[top:y1, x + w - 1 : x + w] *= 0.4
            x += w
    img *= 0.8 + 0.2 * _fractal(rng, size, 16, 2)[..., None]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- geometry


@dataclass
class _Mesh:
    """Triangle soup of one instance: ``vertices [n, 3]``, ``triangles [t, 3]``, ``uv [t, 3, 2]``, ``material [t]``."""

    vertices: list[np.ndarray] = field(default_factory=list)
    triangles: list[np.ndarray] = field(default_factory=list)
    uv: list[np.ndarray] = field(default_factory=list)
    material: list[np.ndarray] = field(default_factory=list)
    n: int = 0

    def quad(self, corners: np.ndarray, uv: np.ndarray, mat: int) -> None:
        """``corners: [4, 3]`` in order around the quad, ``uv: [4, 2]``."""
        self.vertices.append(corners)
        tri = np.array([[0, 1, 2], [0, 2, 3]])
        self.triangles.append(tri + self.n)
        self.uv.append(uv[tri])
        self.material.append(np.full(2, mat))
        self.n += 4

    def tri(self, corners: np.ndarray, uv: np.ndarray, mat: int) -> None:
        """``corners: [3, 3]``, ``uv: [3, 2]``."""
        self.vertices.append(corners)
        self.triangles.append(np.array([[0, 1, 2]]) + self.n)
        self.uv.append(uv[None])
        self.material.append(np.full(1, mat))
        self.n += 3

    def transformed(self, yaw_quarters: int, offset: np.ndarray) -> "_Mesh":
        """Copy rotated by ``yaw_quarters * 90`` deg about +z, then translated by ``offset [3]``."""
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][yaw_quarters % 4]
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
        out = _Mesh()
        out.vertices = [v @ R.T + offset for v in self.vertices]
        out.triangles, out.uv, out.material, out.n = list(self.triangles), list(self.uv), list(self.material), self.n
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.concatenate(self.vertices)
        return v.min(0), v.max(0)


def _box(mesh: _Mesh, lo: np.ndarray, hi: np.ndarray, mat: int, tex_m: float, uv_off: np.ndarray) -> None:
    """Axis-aligned box ``[lo, hi]`` (6 quads); UVs are metric coordinates / ``tex_m`` (texture size in m)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        for side in (lo[axis], hi[axis]):
            c = np.zeros((4, 3))
            c[:, axis] = side
            c[:, a] = [lo[a], hi[a], hi[a], lo[a]]
            c[:, b] = [lo[b], lo[b], hi[b], hi[b]]
            mesh.quad(c, c[:, [a, b]] / tex_m + uv_off, mat)


def _cylinder(mesh: _Mesh, center_xy: tuple, z0: float, z1: float, r0: float, r1: float, mat: int, tex_m: float,
              uv_off: np.ndarray, segments: int = 20) -> None:
    """Vertical (truncated-cone) cylinder from ``z0`` (radius ``r0``) to ``z1`` (radius ``r1``) with caps."""
    ang = np.linspace(0.0, 2 * np.pi, segments + 1)
    cx, cy = center_xy
    for i in range(segments):
        a0, a1 = ang[i], ang[i + 1]
        c = np.array([[cx + r0 * np.cos(a0), cy + r0 * np.sin(a0), z0], [cx + r0 * np.cos(a1), cy + r0 * np.sin(a1), z0],
                      [cx + r1 * np.cos(a1), cy + r1 * np.sin(a1), z1], [cx + r1 * np.cos(a0), cy + r1 * np.sin(a0), z1]])
        rm = 0.5 * (r0 + r1)
        uv = np.array([[a0 * rm, z0], [a1 * rm, z0], [a1 * rm, z1], [a0 * rm, z1]]) / tex_m + uv_off
        mesh.quad(c, uv, mat)
        for z, r in ((z0, r0), (z1, r1)):
            if r > 0:
                cap = np.array([[cx, cy, z], [cx + r * np.cos(a0), cy + r * np.sin(a0), z],
                                [cx + r * np.cos(a1), cy + r * np.sin(a1), z]])
                mesh.tri(cap, cap[:, :2] / tex_m + uv_off, mat)


# ----------------------------------------------------------------------------- objects

# category -> (footprint width range, depth range, height range) in metres, front faces +y
CATALOGUE: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "sofa": ((1.7, 2.2), (0.85, 0.95), (0.8, 0.9)),
    "bed": ((1.4, 1.7), (2.0, 2.1), (0.9, 1.05)),
    "table": ((1.0, 1.5), (0.7, 0.9), (0.72, 0.76)),
    "coffee_table": ((0.9, 1.2), (0.5, 0.65), (0.4, 0.48)),
    "chair": ((0.45, 0.5), (0.45, 0.5), (0.85, 0.95)),
    "cabinet": ((0.8, 1.2), (0.45, 0.6), (0.8, 1.9)),
    "tv_stand": ((1.2, 1.6), (0.4, 0.5), (0.45, 0.55)),
    "bookshelf": ((0.8, 1.2), (0.3, 0.35), (1.7, 2.0)),
    "plant": ((0.35, 0.5), (0.35, 0.5), (0.8, 1.3)),
    "lamp": ((0.35, 0.4), (0.35, 0.4), (1.4, 1.7)),
    "fridge": ((0.65, 0.75), (0.65, 0.72), (1.75, 1.9)),
}
LABELS = {"coffee_table": "table", "tv_stand": "cabinet"}  # category -> semantic label when they differ


class _Palette:
    """Creates materials (procedural textures) and hands out their indices."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.materials: list[Material] = []

    def new(self, name: str, kind: str, color: tuple) -> int:
        tex = texture(kind, self.rng, color)
        self.materials.append(Material(name=name, base_color=np.ones(3, np.float32), texture=tex))
        return len(self.materials) - 1


def _build_object(category: str, size: np.ndarray, pal: _Palette, name: str) -> _Mesh:
    """Box/cylinder composition of one object in its local frame (footprint centred at the origin,
    floor at z = 0, front towards +y). ``size = [width, depth, height]``."""
    rng = pal.rng
    w, d, h = size
    m = _Mesh()

    def off() -> np.ndarray:
        return rng.random(2)

    def box(lo, hi, mat, tex_m=0.5):
        _box(m, np.array(lo), np.array(hi), mat, tex_m, off())

    if category == "sofa":
        fab = pal.new(f"{name}/fabric", "fabric", tuple(rng.uniform(0.2, 0.7, 3)))
        box([-w / 2, -d / 2, 0.1], [w / 2, d / 2, 0.45], fab)
        box([-w / 2, -d / 2, 0.45], [w / 2, -d / 2 + 0.22, h], fab)
        box([-w / 2, -d / 2, 0.1], [-w / 2 + 0.18, d / 2, 0.62], fab)  # arms
        box([w / 2 - 0.18, -d / 2, 0.1], [w / 2, d / 2, 0.62], fab)
        legs = pal.new(f"{name}/legs", "wood", (0.3, 0.2, 0.12))
        for sx in (-1, 1):
            for sy in (-1, 1):
                box([sx * (w / 2 - 0.08) - 0.03, sy * (d / 2 - 0.08) - 0.03, 0.0], [sx * (w / 2 - 0.08) + 0.03, sy * (d / 2 - 0.08) + 0.03, 0.1], legs)
        cush = pal.new(f"{name}/cushion", "fabric", tuple(rng.uniform(0.3, 0.9, 3)))
        for sx in (-1, 1):
            box([sx * w / 4 - 0.22, -d / 2 + 0.22, 0.45], [sx * w / 4 + 0.22, -d / 2 + 0.36, 0.8], cush)
    elif category == "bed":
        frame = pal.new(f"{name}/frame", "wood", (0.45, 0.3, 0.18))
        sheet = pal.new(f"{name}/sheet", "fabric", tuple(rng.uniform(0.4, 0.95, 3)))
        pillow = pal.new(f"{name}/pillow", "fabric", (0.9, 0.9, 0.85))
        box([-w / 2, -d / 2, 0.0], [w / 2, d / 2, 0.3], frame)
        box([-w / 2 + 0.03, -d / 2 + 0.08, 0.3], [w / 2 - 0.03, d / 2 - 0.02, 0.55], sheet)
        box([-w / 2, -d / 2, 0.0], [w / 2, -d / 2 + 0.08, h], frame)
        box([-w / 2 + 0.15, -d / 2 + 0.12, 0.55], [w / 2 - 0.15, -d / 2 + 0.5, 0.68], pillow)
    elif category in ("table", "coffee_table"):
        wood = pal.new(f"{name}/wood", "wood", tuple(rng.uniform([0.35, 0.2, 0.1], [0.7, 0.5, 0.3])))
        box([-w / 2, -d / 2, h - 0.04], [w / 2, d / 2, h], wood)
        for sx in (-1, 1):
            for sy in (-1, 1):
                cx, cy = sx * (w / 2 - 0.06), sy * (d / 2 - 0.06)
                box([cx - 0.03, cy - 0.03, 0.0], [cx + 0.03, cy + 0.03, h - 0.04], wood)
    elif category == "chair":
        wood = pal.new(f"{name}/wood", "wood", tuple(rng.uniform([0.3, 0.2, 0.1], [0.7, 0.5, 0.35])))
        seat = pal.new(f"{name}/seat", "fabric", tuple(rng.uniform(0.2, 0.8, 3)))
        box([-w / 2, -d / 2, 0.42], [w / 2, d / 2, 0.47], seat)
        for sx in (-1, 1):
            for sy in (-1, 1):
                cx, cy = sx * (w / 2 - 0.03), sy * (d / 2 - 0.03)
                box([cx - 0.02, cy - 0.02, 0.0], [cx + 0.02, cy + 0.02, 0.42], wood)
        box([-w / 2, -d / 2, 0.47], [w / 2, -d / 2 + 0.05, h], wood)
    elif category in ("cabinet", "tv_stand"):
        body = pal.new(f"{name}/body", "wood" if rng.random() < 0.5 else "paint", tuple(rng.uniform(0.3, 0.9, 3)))
        door = pal.new(f"{name}/doors", "paint", tuple(rng.uniform(0.2, 0.95, 3)))
        metal = pal.new(f"{name}/handles", "metal", (0.7, 0.7, 0.72))
        box([-w / 2, -d / 2, 0.0], [w / 2, d / 2 - 0.02, h], body)
        n_doors = 2 if w > 0.9 else 1
        dw = (w - 0.06) / n_doors
        for k in range(n_doors):
            x0 = -w / 2 + 0.03 + k * dw
            box([x0 + 0.01, d / 2 - 0.02, 0.05], [x0 + dw - 0.01, d / 2, h - 0.05], door)
            hx = x0 + (dw - 0.08 if k == 0 else 0.08)
            box([hx - 0.015, d / 2, h / 2 - 0.08], [hx + 0.015, d / 2 + 0.03, h / 2 + 0.08], metal)
    elif category == "bookshelf":
        wood = pal.new(f"{name}/wood", "wood", tuple(rng.uniform([0.3, 0.2, 0.1], [0.6, 0.45, 0.3])))
        books = pal.new(f"{name}/books", "books", (0.5, 0.5, 0.5))
        box([-w / 2, -d / 2, 0.0], [-w / 2 + 0.03, d / 2, h], wood)
        box([w / 2 - 0.03, -d / 2, 0.0], [w / 2, d / 2, h], wood)
        box([-w / 2, -d / 2, 0.0], [w / 2, -d / 2 + 0.02, h], books, tex_m=0.6)
        n_shelves = 5
        for k in range(n_shelves + 1):
            z = k * (h - 0.03) / n_shelves
            box([-w / 2 + 0.03, -d / 2, z], [w / 2 - 0.03, d / 2, z + 0.03], wood)
            if k < n_shelves:  # a row of books on each shelf
                gap = (h - 0.03) / n_shelves
                box([-w / 2 + 0.05, -d / 2 + 0.02, z + 0.03], [w / 2 - 0.05, d / 2 - 0.05, z + 0.03 + 0.75 * gap], books, tex_m=0.6)
    elif category == "plant":
        pot = pal.new(f"{name}/pot", "ceramic", tuple(rng.uniform(0.4, 0.9, 3)))
        leaves = pal.new(f"{name}/leaves", "leaves", tuple(rng.uniform([0.05, 0.3, 0.05], [0.25, 0.6, 0.2])))
        r = min(w, d) / 2
        _cylinder(m, (0.0, 0.0), 0.0, 0.35, 0.6 * r, 0.75 * r, pot, 0.3, off())
        zs = np.linspace(0.35, h, 4)
        for k in range(3):
            rr0 = r * (0.6 + 0.4 * np.sin(np.pi * (k + 0.5) / 3))
            rr1 = r * (0.6 + 0.4 * np.sin(np.pi * (k + 1.0) / 3)) if k < 2 else 0.0
            _cylinder(m, (0.0, 0.0), zs[k], zs[k + 1], rr0, rr1, leaves, 0.25, off(), segments=9)
    elif category == "lamp":
        metal = pal.new(f"{name}/metal", "metal", tuple(rng.uniform(0.2, 0.8, 3)))
        shade = pal.new(f"{name}/shade", "fabric", tuple(rng.uniform(0.6, 1.0, 3)))
        r = min(w, d) / 2
        _cylinder(m, (0.0, 0.0), 0.0, 0.03, 0.7 * r, 0.7 * r, metal, 0.3, off())
        _cylinder(m, (0.0, 0.0), 0.03, h - 0.3, 0.02, 0.02, metal, 0.3, off(), segments=8)
        _cylinder(m, (0.0, 0.0), h - 0.3, h, r, 0.6 * r, shade, 0.3, off())
    elif category == "fridge":
        body = pal.new(f"{name}/body", "metal", tuple(rng.uniform(0.75, 0.95, 3)))
        metal = pal.new(f"{name}/handles", "metal", (0.3, 0.3, 0.32))
        box([-w / 2, -d / 2, 0.0], [w / 2, d / 2 - 0.03, h], body)
        box([-w / 2 + 0.01, d / 2 - 0.03, 0.02], [w / 2 - 0.01, d / 2, 0.62 * h - 0.01], body)
        box([-w / 2 + 0.01, d / 2 - 0.03, 0.62 * h + 0.01], [w / 2 - 0.01, d / 2, h - 0.02], body)
        for z0, z1 in ((0.35 * h, 0.55 * h), (0.68 * h, 0.85 * h)):
            box([w / 2 - 0.1, d / 2, z0], [w / 2 - 0.07, d / 2 + 0.04, z1], metal)
    elif category == "tv":
        frame = pal.new(f"{name}/frame", "metal", (0.12, 0.12, 0.13))
        screen = pal.new(f"{name}/screen", "screen", tuple(rng.uniform(0.1, 0.4, 3)))
        box([-w / 2, -d / 2, 0.0], [w / 2, d / 2 - 0.01, h], frame)
        box([-w / 2 + 0.03, d / 2 - 0.01, 0.03], [w / 2 - 0.03, d / 2, h - 0.03], screen, tex_m=max(w, h))
    elif category == "mug":
        cer = pal.new(f"{name}/ceramic", "ceramic", tuple(rng.uniform(0.3, 1.0, 3)))
        _cylinder(m, (0.0, 0.0), 0.0, h, w / 2, w / 2, cer, 0.1, off(), segments=14)
        box([w / 2, -0.008, 0.25 * h], [w / 2 + 0.03, 0.008, 0.8 * h], cer, tex_m=0.1)
    else:
        raise ConfigError(f"unknown object category {category!r}")
    return m


# ----------------------------------------------------------------------------- floor plan


@dataclass
class _Door:
    rooms: tuple[int, int]
    axis: int  # 0: the wall is at constant x (pass along x); 1: constant y (pass along y)
    wall: float  # wall centre coordinate on `axis`
    lo: float  # opening along the other axis
    hi: float


def _split_plan(rng: np.random.Generator, n_rooms: int) -> list[np.ndarray]:
    """Guillotine partition of a random rectangle into ``n_rooms`` cells ``[x0, y0, x1, y1]``
    (wall centre lines), every interior side >= MIN_ROOM: the largest splittable cell is cut
    across its longer side, at a ratio that keeps both halves wide enough."""
    min_cell = MIN_ROOM + WALL_T
    for _ in range(100):
        area = n_rooms * rng.uniform(16.0, 22.0)
        aspect = rng.uniform(1.0, 1.6)
        cells = [np.array([0.0, 0.0, np.sqrt(area * aspect), np.sqrt(area / aspect)])]
        while len(cells) < n_rooms:
            order = np.argsort([-(c[2] - c[0]) * (c[3] - c[1]) for c in cells], kind="stable")
            for k in order:
                c = cells[k]
                axis = 0 if (c[2] - c[0]) >= (c[3] - c[1]) else 1
                length = c[axis + 2] - c[axis]
                lo, hi = max(0.35, min_cell / length), min(0.65, 1.0 - min_cell / length)
                if lo <= hi:
                    break
            else:
                break  # nothing can be split: draw another outline
            cut = c[axis] + rng.uniform(lo, hi) * length
            a, b = c.copy(), c.copy()
            a[axis + 2], b[axis] = cut, cut
            cells[k : k + 1] = [a, b]
        if len(cells) == n_rooms and all(min(c[2] - c[0], c[3] - c[1]) >= min_cell - 1e-9 for c in cells):
            return cells
    raise ConfigError(f"could not lay out {n_rooms} rooms of at least {MIN_ROOM} m")


def _plan_doors(rng: np.random.Generator, cells: list[np.ndarray]) -> list[_Door]:
    """Doorways on a spanning tree of the room adjacency (plus a few extra), so all rooms connect."""
    margin = 0.35
    candidates: dict[tuple[int, int], tuple[int, float, float, float]] = {}
    for i, a in enumerate(cells):
        for j in range(i + 1, len(cells)):
            b = cells[j]
            for axis in (0, 1):
                o = 1 - axis
                if abs(a[axis + 2] - b[axis]) < 1e-9 or abs(b[axis + 2] - a[axis]) < 1e-9:
                    wall = a[axis + 2] if abs(a[axis + 2] - b[axis]) < 1e-9 else a[axis]
                    lo, hi = max(a[o], b[o]) + WALL_T / 2 + margin, min(a[o + 2], b[o + 2]) - WALL_T / 2 - margin
                    if hi - lo >= DOOR_W:
                        candidates[(i, j)] = (axis, wall, lo, hi)
    # randomised Prim spanning tree over the candidate edges
    connected, chosen = {0}, []
    while len(connected) < len(cells):
        frontier = sorted(e for e in candidates if (e[0] in connected) != (e[1] in connected))
        if not frontier:
            return []
        e = frontier[int(rng.integers(len(frontier)))]
        chosen.append(e)
        connected |= set(e)
    chosen += [e for e in sorted(candidates) if e not in chosen and rng.random() < 0.3]
    doors = []
    for e in chosen:
        axis, wall, lo, hi = candidates[e]
        start = rng.uniform(lo, hi - DOOR_W)
        doors.append(_Door(e, axis, wall, start, start + DOOR_W))
    return doors


def _interior(cell: np.ndarray) -> np.ndarray:
    return cell + np.array([WALL_T / 2, WALL_T / 2, -WALL_T / 2, -WALL_T / 2])


def _room_shell(rid: int, inner: np.ndarray, doors: list[_Door], mats: dict[str, int],
                meshes: dict[str, _Mesh]) -> None:
    """Floor, ceiling and the four wall planes (with openings) of one room."""
    x0, y0, x1, y1 = inner
    floor, ceil, wall = meshes["floor"], meshes["ceiling"], meshes["wall"]
    c = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], np.float64)
    floor.quad(c, c[:, :2] / 1.2, mats["floor"])
    c = c.copy()
    c[:, 2] = WALL_H
    ceil.quad(c, c[:, :2] / 1.5, mats["ceiling"])
    # walls: (axis of constant coordinate, coordinate, along-range)
    for axis, coord in ((0, x0), (0, x1), (1, y0), (1, y1)):
        o = 1 - axis
        a0, a1 = (y0, y1) if axis == 0 else (x0, x1)
        openings = sorted((d.lo, d.hi) for d in doors if d.axis == axis and rid in d.rooms
                          and abs(d.wall - coord) <= WALL_T / 2 + 1e-6)
        pieces, cur = [], a0
        for lo, hi in openings:
            pieces.append((cur, lo, 0.0, WALL_H))
            pieces.append((lo, hi, DOOR_H, WALL_H))
            cur = hi
        pieces.append((cur, a1, 0.0, WALL_H))
        for s0, s1, z0, z1 in pieces:
            if s1 - s0 < 1e-6:
                continue
            q = np.zeros((4, 3))
            q[:, axis] = coord
            q[:, o] = [s0, s1, s1, s0]
            q[:, 2] = [z0, z0, z1, z1]
            wall.quad(q, q[:, [o, 2]] / 1.0, mats["wall"])


def _door_frame(door: _Door, mat: int) -> _Mesh:
    """Jambs, lintel underside and threshold spanning the wall thickness around one opening."""
    m = _Mesh()
    a, o = door.axis, 1 - door.axis
    w0, w1 = door.wall - WALL_T / 2, door.wall + WALL_T / 2

    def q(pa, po, pz):
        c = np.zeros((4, 3))
        c[:, a], c[:, o], c[:, 2] = pa, po, pz
        uv = np.stack([c[:, o] + c[:, a], c[:, 2] + c[:, a]], 1) / 0.5
        m.quad(c, uv, mat)

    for s in (door.lo, door.hi):  # jambs
        q([w0, w1, w1, w0], [s, s, s, s], [0, 0, DOOR_H, DOOR_H])
    q([w0, w1, w1, w0], [door.lo, door.lo, door.hi, door.hi], [DOOR_H] * 4)  # lintel underside
    q([w0, w1, w1, w0], [door.lo, door.lo, door.hi, door.hi], [0.0] * 4)  # threshold
    return m


# ----------------------------------------------------------------------------- furnishing

ROOM_TYPES = ["living_room", "bedroom", "kitchen", "office", "bedroom", "dining_room"]
# room type -> (mandatory categories, optional categories)
ROOM_FURNITURE = {
    "living_room": (["sofa", "tv_stand", "coffee_table", "plant"], ["bookshelf", "lamp", "chair", "plant", "cabinet"]),
    "bedroom": (["bed", "cabinet", "lamp"], ["plant", "chair", "bookshelf", "table"]),
    "kitchen": (["fridge", "table", "chair", "chair"], ["cabinet", "plant", "cabinet"]),
    "office": (["table", "chair", "bookshelf"], ["lamp", "plant", "cabinet", "bookshelf"]),
    "dining_room": (["table", "chair", "chair", "cabinet"], ["plant", "lamp", "bookshelf"]),
}
FLOOR_KIND = {"kitchen": "tiles", "bedroom": "planks", "living_room": "planks", "office": "planks", "dining_room": "tiles"}
FREE_STANDING = {"table", "coffee_table"}


@dataclass
class _Placed:
    name: str
    label: str
    category: str
    mesh: _Mesh
    rect: np.ndarray  # [x0, y0, x1, y1] footprint
    room: int
    height: float
    on_floor: bool = True


def _overlaps(r: np.ndarray, rects: list[np.ndarray], gap: float) -> bool:
    return any(r[0] < q[2] + gap and q[0] < r[2] + gap and r[1] < q[3] + gap and q[1] < r[3] + gap for q in rects)


def _door_zones(rid: int, inner: np.ndarray, doors: list[_Door]) -> list[np.ndarray]:
    """Footprints kept free in front of each doorway of a room: ``[x0, y0, x1, y1]``."""
    zones = []
    for d in doors:
        if rid not in d.rooms:
            continue
        a, o = d.axis, 1 - d.axis
        z = np.zeros(4)
        z[o], z[o + 2] = d.lo - 0.25, d.hi + 0.25
        on_high_wall = abs(d.wall - inner[a + 2]) <= WALL_T
        z[a], z[a + 2] = (inner[a + 2] - DOOR_CLEARANCE, inner[a + 2]) if on_high_wall else (inner[a], inner[a] + DOOR_CLEARANCE)
        zones.append(z)
    return zones


def _try_place(rng: np.random.Generator, category: str, inner: np.ndarray, rects: list[np.ndarray],
               anchor: _Placed | None = None) -> tuple[np.ndarray, int, np.ndarray] | None:
    """Draw a size, orientation and position for ``category`` in room ``inner`` clear of ``rects``.

    Returns ``(size [3], yaw quarter turns, footprint centre [2])`` or None after 60 failed draws.
    Wall objects stand with their back to a wall facing into the room; tables stand free; chairs
    next to ``anchor`` (a table) when given, facing it.
    """
    (w0, w1), (d0, d1), (h0, h1) = CATALOGUE[category]
    x0, y0, x1, y1 = inner
    for _ in range(60):
        size = np.array([rng.uniform(w0, w1), rng.uniform(d0, d1), rng.uniform(h0, h1)])
        if anchor is not None:
            side = int(rng.integers(4))
            ax0, ay0, ax1, ay1 = anchor.rect
            cx, cy = [((ax0 + ax1) / 2, ay0 - 0.35), (ax1 + 0.35, (ay0 + ay1) / 2), ((ax0 + ax1) / 2, ay1 + 0.35),
                      (ax0 - 0.35, (ay0 + ay1) / 2)][side]
            yaw = [0, 1, 2, 3][side]  # front (+y local) turned towards the table
            centre = np.array([cx, cy]) + rng.uniform(-0.15, 0.15, 2) * ([1, 0] if side % 2 == 0 else [0, 1])
        elif category in FREE_STANDING:
            yaw = int(rng.integers(2))
            ext = size[:2] if yaw % 2 == 0 else size[1::-1]
            centre = np.array([rng.uniform(x0 + 0.8 + ext[0] / 2, x1 - 0.8 - ext[0] / 2),
                               rng.uniform(y0 + 0.8 + ext[1] / 2, y1 - 0.8 - ext[1] / 2)])
        else:
            side = int(rng.integers(4))  # 0: south wall, 1: east, 2: north, 3: west
            yaw = side
            ext = size[:2] if yaw % 2 == 0 else size[1::-1]
            along = rng.uniform(0.0, 1.0)
            gap = 0.02
            if side == 0:
                centre = np.array([x0 + ext[0] / 2 + along * (x1 - x0 - ext[0]), y0 + gap + ext[1] / 2])
            elif side == 2:
                centre = np.array([x0 + ext[0] / 2 + along * (x1 - x0 - ext[0]), y1 - gap - ext[1] / 2])
            elif side == 1:
                centre = np.array([x1 - gap - ext[0] / 2, y0 + ext[1] / 2 + along * (y1 - y0 - ext[1])])
            else:
                centre = np.array([x0 + gap + ext[0] / 2, y0 + ext[1] / 2 + along * (y1 - y0 - ext[1])])
        ext = size[:2] if yaw % 2 == 0 else size[1::-1]
        rect = np.array([centre[0] - ext[0] / 2, centre[1] - ext[1] / 2, centre[0] + ext[0] / 2, centre[1] + ext[1] / 2])
        if rect[0] < x0 or rect[1] < y0 or rect[2] > x1 or rect[3] > y1:
            continue
        if not _overlaps(rect, rects, 0.08):
            return size, yaw, centre
    return None


def _furnish_room(rng: np.random.Generator, rid: int, rtype: str, inner: np.ndarray, doors: list[_Door],
                  pal: _Palette, name_counts: dict[str, int]) -> list[_Placed]:
    mandatory, optional = ROOM_FURNITURE[rtype]
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    wanted = list(mandatory) + [optional[i] for i in rng.permutation(len(optional))[: int(rng.integers(2, 4))]]
    blocked = _door_zones(rid, inner, doors)
    placed: list[_Placed] = []
    used = 0.0
    for cat in wanted:
        dining = cat == "chair" and rtype in ("kitchen", "office", "dining_room")
        anchor = next((p for p in placed if p.category == "table"), None) if dining else None
        got = _try_place(rng, cat, inner, blocked + [p.rect for p in placed if p.on_floor], anchor)
        if got is None:
            continue
        size, yaw, centre = got
        fp = size[0] * size[1]
        if used + fp > MAX_OCCUPIED * area:
            continue
        label = LABELS.get(cat, cat)
        name = _next_name(label, name_counts)
        mesh = _build_object(cat, size, pal, name).transformed(yaw, np.array([centre[0], centre[1], 0.0]))
        lo, hi = mesh.bounds()
        base = _Placed(name, label, cat, mesh, np.array([lo[0], lo[1], hi[0], hi[1]]), rid, float(hi[2]))
        placed.append(base)
        used += fp
        if cat == "tv_stand":  # small objects standing on this one
            placed.append(_on_top(rng, "tv", base, yaw, pal, name_counts))
        if cat in ("table", "coffee_table") and (rtype == "kitchen" or rng.random() < 0.6):
            placed.append(_on_top(rng, "mug", base, yaw, pal, name_counts))
    return placed


def _next_name(label: str, name_counts: dict[str, int]) -> str:
    k = name_counts.get(label, 0)
    name_counts[label] = k + 1
    return f"{label}_{k}"


def _on_top(rng: np.random.Generator, category: str, base: _Placed, yaw: int, pal: _Palette,
            name_counts: dict[str, int]) -> _Placed:
    """A tv or mug standing on ``base``'s top surface (its footprint is not floor: not in rects)."""
    if category == "tv":
        bw = (base.rect[2] - base.rect[0]) if yaw % 2 == 0 else (base.rect[3] - base.rect[1])
        size = np.array([min(bw - 0.1, rng.uniform(1.0, 1.3)), 0.06, rng.uniform(0.6, 0.75)])
        centre = 0.5 * (base.rect[:2] + base.rect[2:])
    else:
        size = np.array([0.08, 0.08, 0.1])
        centre = np.array([rng.uniform(base.rect[0] + 0.15, base.rect[2] - 0.15), rng.uniform(base.rect[1] + 0.15, base.rect[3] - 0.15)])
    name = _next_name(category, name_counts)
    mesh = _build_object(category, size, pal, name).transformed(yaw, np.array([centre[0], centre[1], base.height]))
    lo, hi = mesh.bounds()
    return _Placed(name, category, category, mesh, np.array([lo[0], lo[1], hi[0], hi[1]]), base.room, float(hi[2]),
                   on_floor=False)


# ----------------------------------------------------------------------------- assembly


def _assemble(name: str, parts: list[tuple[str, str, int, _Mesh]], materials: list[Material], rooms: list[Room]) -> Scene:
    """``parts``: (instance name, label, room id, mesh) in instance-id order (ids 1..)."""
    V, F, UV, M, I, objects = [], [], [], [], [], []
    n = 0
    for iid, (oname, label, rid, mesh) in enumerate(parts, start=1):
        v = np.concatenate(mesh.vertices)
        V.append(v)
        F.append(np.concatenate(mesh.triangles) + n)
        UV.append(np.concatenate(mesh.uv))
        M.append(np.concatenate(mesh.material))
        I.append(np.full(len(F[-1]), iid))
        n += len(v)
        objects.append(SceneObject(iid, oname, label, v.min(0), v.max(0), room_id=rid))
    return Scene(
        name=name, vertices=np.concatenate(V).astype(np.float32), triangles=np.concatenate(F).astype(np.int32),
        tri_instance=np.concatenate(I).astype(np.int32), tri_material=np.concatenate(M).astype(np.int32),
        tri_uv=np.concatenate(UV).astype(np.float32), materials=materials, objects=objects, rooms=rooms, floor_z=0.0,
    )


MIN_OBJECTS = 15
MIN_CATEGORIES = 8


def _generate(seed: int, n_rooms: int) -> Scene:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        cells = _split_plan(rng, n_rooms)
        doors = _plan_doors(rng, cells)
        if doors:
            break
    else:
        raise ConfigError(f"seed {seed}: could not connect {n_rooms} rooms with doorways")
    types = ["living_room", "bedroom", "kitchen"] + [ROOM_TYPES[3 + int(rng.integers(3))] for _ in range(n_rooms - 3)]
    for _ in range(20):  # furnishing can fall short of the minimum counts: draw again (still seeded)
        pal = _Palette(rng)
        door_mat = pal.new("door_frame", "wood", (0.75, 0.7, 0.6))
        type_counts: dict[str, int] = {}
        name_counts: dict[str, int] = {}
        rooms, parts, furniture = [], [], []
        for rid, cell in enumerate(cells):
            rtype = types[rid]
            k = type_counts.get(rtype, 0)
            type_counts[rtype] = k + 1
            rname = rtype if k == 0 else f"{rtype}_{k + 1}"
            inner = _interior(cell)
            rooms.append(Room(rid, rname, inner[:2].copy(), inner[2:].copy()))
            floor_color = tuple(rng.uniform([0.4, 0.3, 0.2], [0.8, 0.65, 0.5]))
            mats = {
                "floor": pal.new(f"{rname}/floor", FLOOR_KIND.get(rtype, "wood"), floor_color),
                "ceiling": pal.new(f"{rname}/ceiling", "paint", (0.9, 0.9, 0.88)),
                "wall": pal.new(f"{rname}/wall", "wallpaper", tuple(rng.uniform(0.45, 0.9, 3))),
            }
            shell = {"floor": _Mesh(), "ceiling": _Mesh(), "wall": _Mesh()}
            _room_shell(rid, inner, doors, mats, shell)
            for label in ("floor", "wall", "ceiling"):
                parts.append((f"{label}_{rname}", label, rid, shell[label]))
            furniture += _furnish_room(rng, rid, rtype, inner, doors, pal, name_counts)
        if len(furniture) >= MIN_OBJECTS and len({p.label for p in furniture}) >= MIN_CATEGORIES:
            break
    else:
        raise ConfigError(f"seed {seed}: could not furnish the apartment with {MIN_OBJECTS} objects")
    parts += [(p.name, p.label, p.room, p.mesh) for p in furniture]
    parts += [(f"door_frame_{k}", "door_frame", min(d.rooms), _door_frame(d, door_mat)) for k, d in enumerate(doors)]
    return _assemble(f"apartment_{seed}", parts, pal.materials, rooms)


def _freeze(scene: Scene) -> Scene:
    for a in (scene.vertices, scene.triangles, scene.tri_instance, scene.tri_material, scene.tri_uv):
        a.flags.writeable = False
    for m in scene.materials:
        m.texture.flags.writeable = False
    return scene


@functools.lru_cache(maxsize=8)
def _cached(seed: int, n_rooms: int) -> Scene:
    return _freeze(_generate(seed, n_rooms))


def generate_apartment(seed: int, n_rooms: int = 3, cache: bool = True) -> Scene:
    """A furnished apartment of ``n_rooms`` (>= 3) rooms drawn from ``seed``.

    With ``cache`` the result is shared per process (its arrays are read-only); without, it is
    generated afresh. Rooms 0..2 are a living room, a bedroom and a kitchen; further rooms are
    offices, bedrooms or dining rooms.

    Raises:
        ConfigError: ``n_rooms`` < 3 or > 8, or a negative seed.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"apartment seed must be a non-negative integer, got {seed!r}")
    if not 3 <= int(n_rooms) <= 8:
        raise ConfigError(f"n_rooms must be between 3 and 8, got {n_rooms}")
    if not cache:
        return _freeze(_generate(int(seed), int(n_rooms)))
    return _cached(int(seed), int(n_rooms))
