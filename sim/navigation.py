"""2D navigation over a scene: occupancy grid, free-space components, A* and ray casting.

The grid is a top-down raster of the floor (``grid[iy, ix]``, cell centres at
``origin + (i + 0.5) * resolution``). A cell is an *obstacle* when any scene triangle passes
through the vertical band between ``min_height`` above the floor (so the floor itself and thin
rugs are ignored) and ``max_height`` (the robot's height: a table top at 0.75 m blocks a 1.1 m
robot, a ceiling at 2.5 m does not). Triangles are clipped to that band and conservatively
rasterised (a cell is hit when the clipped polygon overlaps its square), so thin vertical walls
are never missed. Cells without floor underneath are obstacles too. The *traversable* mask is
then the obstacle mask inflated by the robot radius, restricted to one connected component.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from .scene import Scene


# ----------------------------------------------------------------------------- rasterisation


@numba.njit(cache=True)
def _clip_polygon_z(px, py, pz, n, z, keep_above):
    """Sutherland-Hodgman clip of a polygon (``n`` vertices) against the plane ``Z = z``."""
    ox = np.empty(n + 1)
    oy = np.empty(n + 1)
    oz = np.empty(n + 1)
    m = 0
    for i in range(n):
        j = (i + 1) % n
        ai = (pz[i] >= z) if keep_above else (pz[i] <= z)
        aj = (pz[j] >= z) if keep_above else (pz[j] <= z)
        if ai:
            ox[m] = px[i]
            oy[m] = py[i]
            oz[m] = pz[i]
            m += 1
        if ai != aj:
            t = (z - pz[i]) / (pz[j] - pz[i])
            ox[m] = px[i] + t * (px[j] - px[i])
            oy[m] = py[i] + t * (py[j] - py[i])
            oz[m] = z
            m += 1
    return ox, oy, oz, m


@numba.njit(cache=True)
def _rasterize_band(tris, z_lo, z_hi, ox0, oy0, res, out):
    """Mark every cell of ``out [ny, nx]`` overlapped by a triangle clipped to ``[z_lo, z_hi]``.

    ``tris: [T, 3, 3]`` world-space corners. Overlap is decided with the separating-axis test
    between the clipped convex polygon (projected to x/y) and the cell square, so degenerate
    projections (vertical walls project to segments) are handled exactly.
    """
    ny, nx = out.shape
    eps = 1e-9
    for t in range(tris.shape[0]):
        px = tris[t, :, 0].copy()
        py = tris[t, :, 1].copy()
        pz = tris[t, :, 2].copy()
        if pz.max() < z_lo or pz.min() > z_hi:
            continue
        px, py, pz, m = _clip_polygon_z(px, py, pz, 3, z_lo, True)
        if m == 0:
            continue
        px, py, pz, m = _clip_polygon_z(px, py, pz, m, z_hi, False)
        if m == 0:
            continue
        xmin, xmax = px[:m].min(), px[:m].max()
        ymin, ymax = py[:m].min(), py[:m].max()
        i0 = max(int(np.floor((xmin - ox0) / res)), 0)
        i1 = min(int(np.floor((xmax - ox0) / res)), nx - 1)
        j0 = max(int(np.floor((ymin - oy0) / res)), 0)
        j1 = min(int(np.floor((ymax - oy0) / res)), ny - 1)
        if i0 > i1 or j0 > j1:
            continue
        h = 0.5 * res
        for j in range(j0, j1 + 1):
            cy = oy0 + (j + 0.5) * res
            for i in range(i0, i1 + 1):
                cx = ox0 + (i + 0.5) * res
                hit = True
                for k in range(m):
                    k2 = (k + 1) % m
                    nxv = -(py[k2] - py[k])
                    nyv = px[k2] - px[k]
                    if abs(nxv) + abs(nyv) < 1e-12:
                        continue
                    pmin = 1e300
                    pmax = -1e300
                    for q in range(m):
                        d = nxv * px[q] + nyv * py[q]
                        pmin = min(pmin, d)
                        pmax = max(pmax, d)
                    c = nxv * cx + nyv * cy
                    r = (abs(nxv) + abs(nyv)) * h
                    if pmax < c - r - eps or pmin > c + r + eps:
                        hit = False
                        break
                if hit:
                    out[j, i] = True
    return out


# ----------------------------------------------------------------------------- search


@numba.njit(cache=True)
def _grid_search(free, start, goal):
    """8-connected Dijkstra (``goal < 0``) or A* with the octile heuristic (``goal >= 0``).

    Cells are flat indices into ``free [ny, nx]``. Diagonal moves may not cut a blocked corner.
    Returns ``(dist [ny*nx] float64 (inf = unreached), parent [ny*nx] int64 (-1 = none))``.
    """
    ny, nx = free.shape
    n = ny * nx
    dist = np.full(n, np.inf)
    parent = np.full(n, -1, dtype=np.int64)
    closed = np.zeros(n, dtype=np.bool_)
    gy, gx = (goal // nx, goal % nx) if goal >= 0 else (0, 0)
    dist[start] = 0.0
    heap = [(0.0, start)]
    dys = (-1, -1, -1, 0, 0, 1, 1, 1)
    dxs = (-1, 0, 1, -1, 1, -1, 0, 1)
    while len(heap) > 0:
        _, c = heapq.heappop(heap)
        if closed[c]:
            continue
        closed[c] = True
        if c == goal:
            break
        cy, cx = c // nx, c % nx
        for k in range(8):
            yy, xx = cy + dys[k], cx + dxs[k]
            if yy < 0 or yy >= ny or xx < 0 or xx >= nx or not free[yy, xx]:
                continue
            diag = dys[k] != 0 and dxs[k] != 0
            if diag and not (free[cy, xx] and free[yy, cx]):
                continue
            nb = yy * nx + xx
            nd = dist[c] + (1.4142135623730951 if diag else 1.0)
            if nd < dist[nb]:
                dist[nb] = nd
                parent[nb] = c
                pri = nd
                if goal >= 0:
                    ady, adx = abs(yy - gy), abs(xx - gx)
                    pri += max(ady, adx) + 0.41421356237309515 * min(ady, adx)
                heapq.heappush(heap, (pri, nb))
    return dist, parent


def _walk_parents(parent: np.ndarray, goal: int) -> list[int]:
    cells = [goal]
    while parent[cells[-1]] >= 0:
        cells.append(int(parent[cells[-1]]))
    return cells[::-1]


# ----------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class GridConfig:
    """How a scene is rasterised into an occupancy grid (metres)."""

    resolution: float = 0.05
    robot_radius: float = 0.18
    min_height: float = 0.05  # geometry lower than this above the floor is walkable (floor, rugs)
    max_height: float = 1.1  # geometry higher than this is above the robot (ceiling, lamps)
    margin: float = 0.25  # grid border around the scene bounds


class OccupancyGrid:
    """Top-down occupancy of a scene's floor, inflated by the robot radius.

    Attributes:
        obstacles: ``[ny, nx] bool`` cells with geometry in the robot's height band or without floor.
        traversable: ``[ny, nx] bool`` cells where the robot centre may be (inflated, one component
            when :meth:`component_of` / :meth:`largest_component` was used).
        clearance: ``[ny, nx] float32`` metres from the cell centre to the nearest obstacle cell.
        origin: ``[2]`` world x/y of the grid corner; resolution: cell size in metres.
    """

    def __init__(
        self,
        obstacles: np.ndarray,
        origin: np.ndarray,
        resolution: float,
        robot_radius: float,
        floor_z: float = 0.0,
        traversable: np.ndarray | None = None,
    ) -> None:
        self.obstacles = np.asarray(obstacles, dtype=bool)
        self.origin = np.asarray(origin, dtype=np.float64).reshape(2)
        self.resolution = float(resolution)
        self.robot_radius = float(robot_radius)
        self.floor_z = float(floor_z)
        self.clearance = (ndimage.distance_transform_edt(~self.obstacles) * self.resolution).astype(np.float32)
        if traversable is None:
            # A cell centre is at most half a diagonal from the geometry that marked its neighbour.
            traversable = self.clearance > self.robot_radius + 0.5 * self.resolution
        self.traversable = np.asarray(traversable, dtype=bool)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_scene(cls, scene: Scene, config: GridConfig | None = None, keep: str = "largest") -> "OccupancyGrid":
        """Rasterise ``scene`` and keep the largest free component (``keep="largest"``) or all (``"all"``)."""
        cfg = config or GridConfig()
        if cfg.resolution <= 0 or cfg.robot_radius < 0 or cfg.max_height <= cfg.min_height:
            raise ValueError(f"invalid grid config {cfg}")
        tris = np.asarray(scene.vertices, dtype=np.float64)[np.asarray(scene.triangles)]  # [T, 3, 3]
        lo, hi = scene.bounds
        origin = np.asarray(lo[:2], dtype=np.float64) - cfg.margin
        nx, ny = np.ceil((np.asarray(hi[:2]) + cfg.margin - origin) / cfg.resolution).astype(int)
        fz = float(scene.floor_z)
        occupied = _rasterize_band(tris, fz + cfg.min_height, fz + cfg.max_height, origin[0], origin[1],
                                   cfg.resolution, np.zeros((ny, nx), dtype=np.bool_))
        # Floor: near-horizontal triangles lying at the floor height.
        e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
        nrm = np.cross(e1, e2)
        horiz = np.abs(nrm[:, 2]) > 0.9 * (np.linalg.norm(nrm, axis=1) + 1e-12)
        at_floor = np.all(np.abs(tris[:, :, 2] - fz) < 0.03, axis=1)
        floor = _rasterize_band(np.ascontiguousarray(tris[horiz & at_floor]), fz - 0.03, fz + 0.03, origin[0],
                                origin[1], cfg.resolution, np.zeros((ny, nx), dtype=np.bool_))
        # A cell only partly over the floor edge counts as floor; eroding once keeps the robot on it.
        floor = ndimage.binary_erosion(floor, border_value=0)
        grid = cls(occupied | ~floor, origin, cfg.resolution, cfg.robot_radius, fz)
        if keep == "largest":
            return grid.largest_component()
        if keep != "all":
            raise ValueError(f"keep must be 'largest' or 'all', got {keep!r}")
        return grid

    def _with_traversable(self, mask: np.ndarray) -> "OccupancyGrid":
        g = OccupancyGrid.__new__(OccupancyGrid)
        g.__dict__.update(self.__dict__)
        g.traversable = mask
        return g

    def components(self) -> tuple[np.ndarray, int]:
        """8-connected components of the traversable cells: labels ``[ny, nx] int32`` (0 = blocked), count."""
        labels, n = ndimage.label(self.traversable, structure=np.ones((3, 3), dtype=bool))
        return labels.astype(np.int32), int(n)

    def largest_component(self) -> "OccupancyGrid":
        """The same grid with only its largest traversable component kept."""
        labels, n = self.components()
        if n == 0:
            return self
        sizes = np.bincount(labels.ravel())[1:]
        return self._with_traversable(labels == (int(np.argmax(sizes)) + 1))

    def component_of(self, xy: np.ndarray) -> "OccupancyGrid":
        """The same grid with only the component containing ``xy`` kept (the robot's start)."""
        labels, _ = self.components()
        c = self.snap(xy)
        if c is None:
            raise ValueError(f"position {np.asarray(xy).tolist()} is not in traversable space")
        cy, cx = self.world_to_cell(c)[0]
        return self._with_traversable(labels == labels[cy, cx])

    # -- queries --------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return self.obstacles.shape

    @property
    def free_area_m2(self) -> float:
        return float(self.traversable.sum()) * self.resolution**2

    def world_to_cell(self, xy: np.ndarray) -> np.ndarray:
        """World ``[N, 2]`` (or ``[2]``) x/y to integer cells ``[N, 2]`` as ``(iy, ix)`` rows (unclipped)."""
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))[:, :2]
        ij = np.floor((xy - self.origin) / self.resolution).astype(np.int64)
        return ij[:, ::-1]

    def cell_to_world(self, cells: np.ndarray) -> np.ndarray:
        """Cells ``[N, 2]`` ``(iy, ix)`` to world x/y ``[N, 2]`` of the cell centres."""
        cells = np.atleast_2d(np.asarray(cells))
        return self.origin + (cells[:, ::-1].astype(np.float64) + 0.5) * self.resolution

    def _lookup(self, mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
        cells = self.world_to_cell(xy)
        ny, nx = mask.shape
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < ny) & (cells[:, 1] >= 0) & (cells[:, 1] < nx)
        out = np.zeros(len(cells), dtype=bool)
        out[inside] = mask[cells[inside, 0], cells[inside, 1]]
        return out

    def is_free(self, xy: np.ndarray) -> bool | np.ndarray:
        """Whether the robot centre may stand at ``xy``: a bool for ``[2]``, ``[N] bool`` for ``[N, 2]``."""
        arr = np.asarray(xy, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"position contains NaN/inf: {arr.tolist()}")
        out = self._lookup(self.traversable, arr)
        return bool(out[0]) if arr.ndim == 1 else out

    def is_obstacle(self, xy: np.ndarray) -> np.ndarray:
        """``[N] bool``: whether the (un-inflated) cell under each point holds geometry or no floor."""
        cells = self.world_to_cell(xy)
        ny, nx = self.obstacles.shape
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < ny) & (cells[:, 1] >= 0) & (cells[:, 1] < nx)
        out = np.ones(len(cells), dtype=bool)
        out[inside] = self.obstacles[cells[inside, 0], cells[inside, 1]]
        return out

    def segment_free(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the straight segment ``a -> b`` (x/y) stays in traversable cells."""
        a, b = np.asarray(a, dtype=np.float64)[:2], np.asarray(b, dtype=np.float64)[:2]
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / (0.5 * self.resolution))) + 1)
        s = np.linspace(0.0, 1.0, n)[:, None]
        return bool(np.all(self._lookup(self.traversable, a + s * (b - a))))

    def free_cells_xy(self) -> np.ndarray:
        """World x/y ``[N, 2]`` of every traversable cell centre."""
        return self.cell_to_world(np.argwhere(self.traversable))

    def snap(self, xy: np.ndarray, max_dist: float = 0.5) -> np.ndarray | None:
        """Nearest traversable cell centre to ``xy`` within ``max_dist`` metres, else None."""
        xy = np.asarray(xy, dtype=np.float64)[:2]
        if self.is_free(xy):
            return xy.copy()
        r = int(np.ceil(max_dist / self.resolution))
        cy, cx = self.world_to_cell(xy)[0]
        ny, nx = self.shape
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, ny), max(cx - r, 0), min(cx + r + 1, nx)
        if y0 >= y1 or x0 >= x1:
            return None
        sub = np.argwhere(self.traversable[y0:y1, x0:x1]) + [y0, x0]
        if len(sub) == 0:
            return None
        pts = self.cell_to_world(sub)
        d = np.linalg.norm(pts - xy, axis=1)
        k = int(np.argmin(d))
        return pts[k] if d[k] <= max_dist else None

    def distance_field(self, start_xy: np.ndarray) -> np.ndarray:
        """Geodesic distance (metres) from ``start_xy`` to every cell, ``[ny, nx]`` (inf = unreachable)."""
        s = self.snap(start_xy)
        if s is None:
            raise ValueError(f"start {np.asarray(start_xy).tolist()} is not in traversable space")
        cy, cx = self.world_to_cell(s)[0]
        dist, _ = _grid_search(self.traversable, int(cy * self.shape[1] + cx), -1)
        return dist.reshape(self.shape) * self.resolution

    def plan(self, start_xy: np.ndarray, goal_xy: np.ndarray, smooth: bool = True) -> np.ndarray | None:
        """A* path from ``start_xy`` to ``goal_xy`` over traversable cells.

        Start and goal are snapped to the nearest traversable cell within 0.5 m. With ``smooth``,
        waypoints that can be skipped along a free straight line are dropped.

        Returns:
            ``[K, 2]`` world x/y waypoints starting at ``start_xy`` and ending at the (snapped)
            goal, or None when either end is not traversable or the goal is unreachable.
        """
        s, g = self.snap(start_xy), self.snap(goal_xy)
        if s is None or g is None:
            return None
        nx = self.shape[1]
        sc, gc = self.world_to_cell(s)[0], self.world_to_cell(g)[0]
        si, gi = int(sc[0] * nx + sc[1]), int(gc[0] * nx + gc[1])
        dist, parent = _grid_search(self.traversable, si, gi)
        if not np.isfinite(dist[gi]):
            return None
        cells = np.array(_walk_parents(parent, gi))
        pts = self.cell_to_world(np.stack([cells // nx, cells % nx], axis=1))
        pts[0], pts[-1] = np.asarray(start_xy, dtype=np.float64)[:2], g
        if not self.is_free(pts[0]):
            pts[0] = s
        return self.shortcut(pts) if smooth else pts

    def shortcut(self, path: np.ndarray) -> np.ndarray:
        """Greedy line-of-sight smoothing of a ``[K, 2]`` path (keeps the ends)."""
        if len(path) <= 2:
            return path
        out = [path[0]]
        i = 0
        while i < len(path) - 1:
            j = len(path) - 1
            while j > i + 1 and not self.segment_free(path[i], path[j]):
                j -= 1
            out.append(path[j])
            i = j
        return np.array(out)

    def visible_cells(
        self, xy: np.ndarray, yaw: float, hfov_rad: float, max_range: float, n_rays: int | None = None
    ) -> np.ndarray:
        """``[ny, nx] bool`` cells seen from ``xy`` looking along ``yaw`` within ``hfov_rad`` and ``max_range``.

        Rays march over the un-inflated obstacle grid and stop at (and include) the first obstacle.
        """
        step = 0.5 * self.resolution
        if n_rays is None:
            n_rays = max(8, int(np.ceil(hfov_rad * max_range / self.resolution)))
        ang = yaw + np.linspace(-0.5 * hfov_rad, 0.5 * hfov_rad, n_rays)
        r = np.arange(1, int(max_range / step) + 1) * step
        pts = np.asarray(xy, dtype=np.float64)[:2] + r[None, :, None] * np.stack([np.cos(ang), np.sin(ang)], 1)[:, None]
        cells = self.world_to_cell(pts.reshape(-1, 2)).reshape(n_rays, len(r), 2)
        ny, nx = self.shape
        inside = (cells[..., 0] >= 0) & (cells[..., 0] < ny) & (cells[..., 1] >= 0) & (cells[..., 1] < nx)
        cy, cx = np.clip(cells[..., 0], 0, ny - 1), np.clip(cells[..., 1], 0, nx - 1)
        blocked = self.obstacles[cy, cx] | ~inside
        # keep samples up to and including the first blocked one on each ray
        before = np.cumsum(blocked, axis=1) - blocked <= 0
        keep = before & inside
        out = np.zeros(self.shape, dtype=bool)
        out[cy[keep], cx[keep]] = True
        return out


# ----------------------------------------------------------------------------- ray casting


class SceneRaycaster:
    """Exact depth of a scene along camera rays (Open3D ``RaycastingScene``), for view checks."""

    def __init__(self, scene: Scene) -> None:
        import open3d as o3d

        self._rc = o3d.t.geometry.RaycastingScene()
        self._rc.add_triangles(
            o3d.core.Tensor(np.asarray(scene.vertices, dtype=np.float32)),
            o3d.core.Tensor(np.asarray(scene.triangles, dtype=np.uint32)),
        )
        self._o3d = o3d

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Hit distance ``[N]`` (inf = no hit) along unit ``directions [N, 3]`` from ``origins [N, 3]``."""
        rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
        ans = self._rc.cast_rays(self._o3d.core.Tensor(rays))
        return ans["t_hit"].numpy().astype(np.float64)

    def depth(self, K: np.ndarray, width: int, height: int, T_world_camera: np.ndarray) -> np.ndarray:
        """z-depth image ``[height, width] float32`` (0 where nothing is hit) of a pinhole camera ``K``."""
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        norm = np.linalg.norm(d_cam, axis=1)
        d_world = (d_cam / norm[:, None]) @ T_world_camera[:3, :3].T
        o = np.broadcast_to(T_world_camera[:3, 3], d_world.shape)
        t = self.cast(o, d_world)
        z = np.where(np.isfinite(t), t / norm, 0.0)
        return z.reshape(height, width).astype(np.float32)


__all__ = ["GridConfig", "OccupancyGrid", "SceneRaycaster"]
