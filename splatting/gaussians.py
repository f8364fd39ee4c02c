"""The 3D Gaussian model: parameters, initialisation, structural edits, SH colour, persistence.

Parameters are stored pre-activation like 3DGS: ``log_scales``, ``opacity_logits`` (sigmoid),
``quats`` (w, x, y, z; normalised on use), SH coefficients split into ``sh_dc [N,1,3]`` and
``sh_rest [N,K-1,3]`` (K = (degree+1)^2) so they can have different learning rates, and named
per-Gaussian feature ``queries [N, d_m]`` (M3's learnable query vectors, one per feature model).

Every structural edit (append, prune, clone, split) is expressed as a :class:`Remap`: the new
row set is ``old[index]`` followed by ``n_new`` fresh rows. The trainer replays it on Adam's
moment buffers, so surviving Gaussians keep their optimizer state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from spatial_memory.errors import ConfigError, EmptyMapError, MapFormatError
from spatial_memory.types import Frame, backproject_depth

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
_CORE = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel for ``degree`` in 0..3."""
    if degree not in (0, 1, 2, 3):
        raise ConfigError(f"SH degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> degree-0 SH coefficient (inverse of eval_sh at degree 0)."""
    return (rgb - 0.5) / SH_C0


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int | None = None) -> torch.Tensor:
    """View-dependent colour from real spherical harmonics (3DGS convention).

    Args:
        sh: ``[N, K, 3]`` coefficients, K >= (degree+1)^2.
        dirs: ``[N, 3]`` viewing directions (camera -> Gaussian), any length.
        degree: SH degree to evaluate (default: the largest K allows).

    Returns:
        ``[N, 3]`` RGB, ``max(0, SH(dirs) + 0.5)`` as in 3DGS.
    """
    k = sh.shape[1]
    if degree is None:
        degree = int(math.isqrt(k)) - 1
    if (degree + 1) ** 2 > k:
        raise ConfigError(f"eval_sh: degree {degree} needs {(degree + 1) ** 2} coefficients, sh has {k}")
    res = SH_C0 * sh[:, 0]
    if degree > 0:
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        x, y, z = d[:, 0:1], d[:, 1:2], d[:, 2:3]
        res = res - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
        if degree > 1:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            res = (
                res
                + SH_C2[0] * xy * sh[:, 4]
                + SH_C2[1] * yz * sh[:, 5]
                + SH_C2[2] * (2.0 * zz - xx - yy) * sh[:, 6]
                + SH_C2[3] * xz * sh[:, 7]
                + SH_C2[4] * (xx - yy) * sh[:, 8]
            )
            if degree > 2:
                res = (
                    res
                    + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9]
                    + SH_C3[1] * xy * z * sh[:, 10]
                    + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
                    + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
                    + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
                    + SH_C3[5] * z * (xx - yy) * sh[:, 14]
                    + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15]
                )
    return torch.clamp_min(res + 0.5, 0.0)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """``[N, 4]`` unit quaternions (w, x, y, z) -> ``[N, 3, 3]`` rotation matrices."""
    w, x, y, z = quats.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip


def knn_mean_distance(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """``[N]`` mean distance of each point to its ``k`` nearest neighbours (0 if alone)."""
    from scipy.spatial import cKDTree

    n = xyz.shape[0]
    if n < 2:
        return np.zeros(n)
    kk = min(k, n - 1)
    d, _ = cKDTree(xyz).query(xyz, k=kk + 1)
    return d[:, 1:].mean(axis=1)


def _to_numpy(x: np.ndarray | torch.Tensor, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


@dataclass(frozen=True)
class Remap:
    """A structural edit: new rows = ``old[index]`` then ``n_new`` appended rows."""

    index: torch.Tensor  # [M] long, into the old rows
    n_new: int


class GaussianModel(nn.Module):
    """N anisotropic 3D Gaussians with SH colour and optional named feature queries.

    Attributes (all ``nn.Parameter``, first dimension N):
        means ``[N,3]``, log_scales ``[N,3]``, quats ``[N,4]`` (w,x,y,z), opacity_logits ``[N]``,
        sh_dc ``[N,1,3]``, sh_rest ``[N,K-1,3]``, queries ``{name: [N, d]}``.
        ``sh_degree`` is the maximum degree, ``active_sh_degree`` the one rendered (grown by the trainer).
    """

    def __init__(
        self,
        means: torch.Tensor,
        log_scales: torch.Tensor,
        quats: torch.Tensor,
        opacity_logits: torch.Tensor,
        sh_dc: torch.Tensor,
        sh_rest: torch.Tensor,
        queries: dict[str, torch.Tensor] | None = None,
        active_sh_degree: int = 0,
    ) -> None:
        super().__init__()
        n = means.shape[0]
        k = 1 + sh_rest.shape[1]
        degree = int(math.isqrt(k)) - 1
        if (degree + 1) ** 2 != k or degree > 3:
            raise ConfigError(f"GaussianModel: sh_rest holds {k - 1} bases; need (d+1)^2 - 1 for d in 0..3")
        shapes = {
            "means": (means, (n, 3)),
            "log_scales": (log_scales, (n, 3)),
            "quats": (quats, (n, 4)),
            "opacity_logits": (opacity_logits, (n,)),
            "sh_dc": (sh_dc, (n, 1, 3)),
            "sh_rest": (sh_rest, (n, k - 1, 3)),
        }
        for name, (t, shape) in shapes.items():
            if tuple(t.shape) != shape:
                raise ConfigError(f"GaussianModel: {name} has shape {list(t.shape)}, expected {list(shape)}")
            setattr(self, name, nn.Parameter(t.detach().float().clone().contiguous()))
        self.queries = nn.ParameterDict()
        for name, q in (queries or {}).items():
            self._check_query(name, q, n)
            self.queries[name] = nn.Parameter(q.detach().float().clone().contiguous())
        self.sh_degree = degree
        self.active_sh_degree = min(int(active_sh_degree), degree)

    @staticmethod
    def _check_query(name: str, q: torch.Tensor, n: int) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]+", name):
            raise ConfigError(f"query name {name!r} must be alphanumeric (it becomes a PLY property prefix)")
        if q.dim() != 2 or q.shape[0] != n:
            raise ConfigError(f"query {name!r} has shape {list(q.shape)}, expected [{n}, d]")

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_gaussians(self) -> int:
        return len(self)

    @property
    def scales(self) -> torch.Tensor:
        """``[N, 3]`` linear scales."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        """``[N]`` opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh(self) -> torch.Tensor:
        """``[N, K, 3]`` all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    def activated(self) -> dict[str, torch.Tensor]:
        """Rasterizer-ready tensors: means, quats (normalised), scales, opacities."""
        return {
            "means": self.means,
            "quats": self.quats / self.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            "scales": self.scales,
            "opacities": self.opacities,
        }

    def colors(self, camera_center: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` RGB seen from ``camera_center [3]`` (world) at the active SH degree."""
        dirs = self.means - camera_center.to(self.means)[None]
        k = (self.active_sh_degree + 1) ** 2
        return eval_sh(self.sh[:, :k], dirs, self.active_sh_degree)

    def query_names(self) -> list[str]:
        """Query names in the order their columns appear in :meth:`features`."""
        return sorted(self.queries.keys())

    def query_dims(self) -> dict[str, int]:
        return {k: int(self.queries[k].shape[1]) for k in self.query_names()}

    def features(self) -> torch.Tensor | None:
        """``[N, sum d_m]`` all queries concatenated (sorted by name), or None without queries."""
        names = self.query_names()
        if not names:
            return None
        return torch.cat([self.queries[k] for k in names], dim=1)

    def split_features(self, rendered: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a rendered ``[..., sum d_m]`` feature image back into ``{name: [..., d_m]}``."""
        out, c = {}, 0
        for name, d in self.query_dims().items():
            out[name] = rendered[..., c : c + d]
            c += d
        return out

    def render(
        self,
        viewmat: torch.Tensor,
        K: torch.Tensor,
        width: int,
        height: int,
        background: torch.Tensor | None = None,
        with_features: bool = True,
        backend: str = "auto",
        near: float = 0.01,
        far: float = 100.0,
    ):
        """Render this model from ``viewmat [4,4]`` (world->camera) with ``K [3,3]``; see ``rasterization``."""
        from .rasterize import rasterization

        viewmat = viewmat.to(self.means)
        cam_center = -viewmat[:3, :3].T @ viewmat[:3, 3]
        act = self.activated()
        return rasterization(
            act["means"], act["quats"], act["scales"], act["opacities"], self.colors(cam_center),
            viewmat, K.to(self.means), width, height,
            features=self.features() if with_features else None,
            near=near, far=far, background=background, backend=backend,
        )  # fmt: skip

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray | torch.Tensor,
        rgb: np.ndarray | torch.Tensor,
        sh_degree: int = 3,
        query_dims: dict[str, int] | None = None,
        init_opacity: float = 0.1,
        scales: np.ndarray | torch.Tensor | None = None,
    ) -> "GaussianModel":
        """Isotropic Gaussians at points.

        Args:
            xyz: ``[N, 3]`` positions; rgb: ``[N, 3]`` colours in [0, 1].
            scales: ``[N]`` isotropic scale; default the mean distance to the 3 nearest neighbours.
            query_dims: ``{name: d}`` feature queries, initialised to zero.
        """
        xyz_np = _to_numpy(xyz, np.float64).reshape(-1, 3)
        rgb_t = torch.from_numpy(_to_numpy(rgb, np.float32))
        n = xyz_np.shape[0]
        if rgb_t.shape != (n, 3):
            raise ConfigError(f"from_points: rgb has shape {list(rgb_t.shape)}, expected [{n}, 3]")
        if not np.isfinite(xyz_np).all():
            raise ConfigError("from_points: xyz contains NaN/inf")
        if scales is None:
            s = knn_mean_distance(xyz_np, 3)
            pos = s[s > 0]
            fallback = float(np.median(pos)) if pos.size else 0.01
            s = np.where(s > 0, s, fallback)
        else:
            s = _to_numpy(scales, np.float64).reshape(n)
        s = np.clip(s, 1e-6, None)
        k = num_sh_bases(sh_degree)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        p = float(np.clip(init_opacity, 1e-4, 1 - 1e-4))
        return cls(
            means=torch.as_tensor(xyz_np, dtype=torch.float32),
            log_scales=torch.log(torch.as_tensor(s, dtype=torch.float32))[:, None].repeat(1, 3),
            quats=quats,
            opacity_logits=torch.full((n,), math.log(p / (1 - p))),
            sh_dc=rgb_to_sh_dc(rgb_t.clamp(0, 1))[:, None, :],
            sh_rest=torch.zeros(n, k - 1, 3),
            queries={name: torch.zeros(n, int(d)) for name, d in (query_dims or {}).items()},
        )

    @staticmethod
    def points_from_rgbd(
        frames: Iterable[Frame], voxel_size: float = 0.02, max_points: int = 200_000, stride: int = 2, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Back-project the valid depth of posed frames, voxel-downsample (Open3D), cap the count.

        Returns ``xyz [M, 3] float64`` (world) and ``rgb [M, 3] float32`` in [0, 1].
        Frames without depth or pose are skipped.
        """
        import open3d as o3d

        pts, cols = [], []
        for f in frames:
            if f.depth is None or f.T_world_camera is None:
                continue
            p, vu = backproject_depth(f.depth, f.intrinsics, f.T_world_camera, stride=stride)
            pts.append(p)
            cols.append(f.rgb[vu[:, 0], vu[:, 1]].astype(np.float64) / 255.0)
        if not pts or sum(len(p) for p in pts) == 0:
            raise EmptyMapError("from_rgbd: no frame has valid depth and a pose")
        pcd = o3d.geometry.PointCloud()
        pcd.points = o3d.utility.Vector3dVector(np.concatenate(pts))
        pcd.colors = o3d.utility.Vector3dVector(np.concatenate(cols))
        if voxel_size > 0:
            pcd = pcd.voxel_down_sample(voxel_size)
        xyz, rgb = np.asarray(pcd.points), np.asarray(pcd.colors, dtype=np.float32)
        if len(xyz) > max_points:
            keep = np.random.default_rng(seed).choice(len(xyz), size=max_points, replace=False)
            xyz, rgb = xyz[keep], rgb[keep]
        return xyz, rgb

    @classmethod
    def from_rgbd(
        cls,
        frames: Iterable[Frame],
        voxel_size: float = 0.02,
        max_points: int = 200_000,
        stride: int = 2,
        sh_degree: int = 3,
        query_dims: dict[str, int] | None = None,
        init_opacity: float = 0.1,
        seed: int = 0,
    ) -> "GaussianModel":
        """Initialise from posed RGB-D frames (see :meth:`points_from_rgbd`, :meth:`from_points`)."""
        xyz, rgb = cls.points_from_rgbd(frames, voxel_size, max_points, stride, seed)
        return cls.from_points(xyz, rgb, sh_degree=sh_degree, query_dims=query_dims, init_opacity=init_opacity)

    # ------------------------------------------------------------------ structural edits
    def row_parameters(self) -> dict[str, nn.Parameter]:
        """Every per-Gaussian parameter by name (queries as ``query.<name>``)."""
        out = {name: getattr(self, name) for name in _CORE}
        out.update({f"query.{k}": self.queries[k] for k in self.query_names()})
        return out

    def _set_row_param(self, name: str, value: torch.Tensor) -> None:
        p = nn.Parameter(value.detach().contiguous())
        if name.startswith("query."):
            self.queries[name[len("query.") :]] = p
        else:
            setattr(self, name, p)

    def apply_remap(self, remap: Remap, new_rows: dict[str, torch.Tensor] | None = None) -> Remap:
        """Rebuild every parameter as ``cat(old[remap.index], new_rows[name])``; returns ``remap``."""
        params = self.row_parameters()
        new_rows = new_rows or {}
        if remap.n_new and set(new_rows) != set(params):
            missing = sorted(set(params) - set(new_rows))
            raise ConfigError(f"apply_remap: new rows lack {missing}")
        idx = remap.index.to(self.means.device)
        for name, p in params.items():
            kept = p.data[idx]
            if remap.n_new:
                add = new_rows[name].to(kept)
                if add.shape[1:] != kept.shape[1:] or add.shape[0] != remap.n_new:
                    raise ConfigError(f"apply_remap: {name} rows {list(add.shape)} do not match {list(kept.shape)}")
                kept = torch.cat([kept, add], dim=0)
            self._set_row_param(name, kept)
        return remap

    def _rows(self, mask_or_index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: p.data[mask_or_index].clone() for name, p in self.row_parameters().items()}

    def append(self, other: "GaussianModel") -> Remap:
        """Add all Gaussians of ``other`` (same SH degree and query dims)."""
        if other.sh_degree != self.sh_degree or other.query_dims() != self.query_dims():
            raise ConfigError(
                f"append: SH degree/query dims differ ({other.sh_degree}, {other.query_dims()} vs "
                f"{self.sh_degree}, {self.query_dims()})"
            )
        rows = {name: p.data for name, p in other.row_parameters().items()}
        return self.apply_remap(Remap(torch.arange(len(self)), len(other)), rows)

    def extend_from_points(
        self, xyz: np.ndarray | torch.Tensor, rgb: np.ndarray | torch.Tensor, init_opacity: float = 0.1,
        scales: np.ndarray | torch.Tensor | None = None,
    ) -> Remap:  # fmt: skip
        """Append isotropic Gaussians at points (see :meth:`from_points`)."""
        other = GaussianModel.from_points(
            xyz, rgb, sh_degree=self.sh_degree, query_dims=self.query_dims(), init_opacity=init_opacity, scales=scales
        )
        return self.append(other)

    def prune(self, mask: torch.Tensor) -> Remap:
        """Remove the Gaussians where ``mask [N] bool`` is True."""
        keep = torch.nonzero(~mask.to(torch.bool)).squeeze(1)
        return self.apply_remap(Remap(keep, 0))

    def clone_gaussians(self, mask: torch.Tensor) -> Remap:
        """Duplicate the selected Gaussians (3DGS "clone": the copies separate under optimisation)."""
        rows = self._rows(mask.to(torch.bool))
        return self.apply_remap(Remap(torch.arange(len(self)), int(mask.sum())), rows)

    def split(self, mask: torch.Tensor, n_split: int = 2, generator: torch.Generator | None = None) -> Remap:
        """Replace each selected Gaussian by ``n_split`` samples drawn from it, scales / (0.8 n_split)."""
        mask = mask.to(torch.bool)
        sel = torch.nonzero(mask).squeeze(1)
        rows = {k: v.repeat_interleave(n_split, dim=0) for k, v in self._rows(sel).items()}
        act = self.activated()
        scales = act["scales"].detach()[sel].repeat_interleave(n_split, dim=0)
        rot = quat_to_rotmat(act["quats"].detach()[sel]).repeat_interleave(n_split, dim=0)
        noise = torch.randn(scales.shape, generator=generator).to(scales) * scales
        rows["means"] = rows["means"] + (rot @ noise[..., None]).squeeze(-1)
        rows["log_scales"] = torch.log(scales / (0.8 * n_split))
        return self.apply_remap(Remap(torch.nonzero(~mask).squeeze(1), rows["means"].shape[0]), rows)

    # ------------------------------------------------------------------ persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{name: tensor}`` for safetensors (queries as ``query.<name>``), CPU, contiguous."""
        out = {name: p.detach().cpu().contiguous() for name, p in self.row_parameters().items()}
        out["active_sh_degree"] = torch.tensor([self.active_sh_degree], dtype=torch.int64)
        return out

    @classmethod
    def from_state_tensors(cls, tensors: dict[str, torch.Tensor]) -> "GaussianModel":
        """Inverse of :meth:`state_tensors`. Raises MapFormatError on missing/mismatched tensors."""
        missing = [k for k in _CORE if k not in tensors]
        if missing:
            raise MapFormatError(f"Gaussian state lacks tensors {missing}")
        queries = {k[len("query.") :]: v for k, v in tensors.items() if k.startswith("query.")}
        active = int(tensors["active_sh_degree"].reshape(-1)[0]) if "active_sh_degree" in tensors else 0
        try:
            return cls(*(tensors[k] for k in _CORE), queries=queries, active_sh_degree=active)
        except ConfigError as e:
            raise MapFormatError(f"Gaussian state is inconsistent: {e}") from None

    # ------------------------------------------------------------------ PLY (3DGS layout)
    def to_ply(self, path: str | Path, extra: dict[str, torch.Tensor | np.ndarray] | None = None) -> Path:
        """Write a binary little-endian 3DGS PLY readable by common splat viewers.

        Properties: x y z nx ny nz f_dc_0..2 f_rest_* (channel-major like 3DGS) opacity (logit)
        scale_0..2 (log) rot_0..3 (w,x,y,z), then ``f_<name>_<i>`` for each ``extra`` entry
        ``[N, d]`` (default: this model's queries). Returns the path.
        """
        path = Path(path)
        n = len(self)
        cols: list[tuple[str, np.ndarray]] = []

        def add(prefix: str, arr: np.ndarray) -> None:
            arr = np.asarray(arr, dtype=np.float32).reshape(n, -1)
            cols.extend((f"{prefix}{i}", arr[:, i]) for i in range(arr.shape[1]))

        det = lambda t: t.detach().cpu().numpy()  # noqa: E731
        m = det(self.means)
        cols += [("x", m[:, 0]), ("y", m[:, 1]), ("z", m[:, 2])]
        cols += [(k, np.zeros(n, np.float32)) for k in ("nx", "ny", "nz")]
        add("f_dc_", det(self.sh_dc)[:, 0, :])
        add("f_rest_", det(self.sh_rest).transpose(0, 2, 1).reshape(n, -1))
        cols.append(("opacity", det(self.opacity_logits)))
        add("scale_", det(self.log_scales))
        add("rot_", det(self.quats))
        extras = {k: self.queries[k] for k in self.query_names()} if extra is None else extra
        for name, arr in extras.items():
            if not re.fullmatch(r"[A-Za-z0-9]+", name) or name in ("dc", "rest"):
                raise ConfigError(f"to_ply: extra name {name!r} must be alphanumeric and not dc/rest")
            a = det(arr) if isinstance(arr, torch.Tensor) else np.asarray(arr)
            if a.ndim != 2 or a.shape[0] != n:
                raise ConfigError(f"to_ply: extra {name!r} has shape {list(a.shape)}, expected [{n}, d]")
            add(f"f_{name}_", a)
        data = np.empty(n, dtype=[(name, "<f4") for name, _ in cols])
        for name, col in cols:
            data[name] = col
        header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
        header += [f"property float {name}" for name, _ in cols]
        header.append("end_header")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(data.tobytes())
        tmp.replace(path)
        return path

    @classmethod
    def from_ply(cls, path: str | Path) -> "GaussianModel":
        """Read a 3DGS PLY (as written by :meth:`to_ply` or 3DGS/gsplat); ``f_<name>_<i>`` become queries."""
        data = read_ply_vertices(path)
        names = data.dtype.names or ()
        need = ["x", "y", "z", "opacity", "f_dc_0", "f_dc_1", "f_dc_2"]
        need += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
        missing = [k for k in need if k not in names]
        if missing:
            raise MapFormatError(f"{path}: PLY lacks Gaussian properties {missing}")
        col = lambda k: np.asarray(data[k], dtype=np.float32)  # noqa: E731
        stack = lambda ks: np.stack([col(k) for k in ks], axis=1)  # noqa: E731
        n = len(data)
        n_rest = sum(1 for k in names if k.startswith("f_rest_"))
        if n_rest % 3 or int(math.isqrt(1 + n_rest // 3)) ** 2 != 1 + n_rest // 3:
            raise MapFormatError(f"{path}: {n_rest} f_rest properties is not 3 * ((d+1)^2 - 1)")
        rest = stack([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, n_rest // 3).transpose(0, 2, 1)
        groups: dict[str, dict[int, str]] = {}
        for k in names:
            mt = re.fullmatch(r"f_([A-Za-z0-9]+)_(\d+)", k)
            if mt and mt.group(1) not in ("dc", "rest"):
                groups.setdefault(mt.group(1), {})[int(mt.group(2))] = k
        queries = {}
        for g, idx in groups.items():
            if sorted(idx) != list(range(len(idx))):
                raise MapFormatError(f"{path}: properties f_{g}_* are not numbered 0..{len(idx) - 1}")
            queries[g] = torch.from_numpy(stack([idx[i] for i in range(len(idx))]))
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return cls(
            means=t(stack(["x", "y", "z"])),
            log_scales=t(stack([f"scale_{i}" for i in range(3)])),
            quats=t(stack([f"rot_{i}" for i in range(4)])),
            opacity_logits=t(col("opacity")),
            sh_dc=t(stack(["f_dc_0", "f_dc_1", "f_dc_2"]))[:, None, :],
            sh_rest=t(rest),
            queries=queries,
            active_sh_degree=int(math.isqrt(1 + n_rest // 3)) - 1,
        )


_PLY_TYPES = {
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
    "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
}  # fmt: skip


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """The ``vertex`` element of a binary PLY as a numpy structured array.

    Raises:
        MapFormatError: not a PLY, ASCII/big-endian, list properties, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFormatError(f"{path}: PLY file not found")
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise MapFormatError(f"{path}: not a PLY file (no 'ply' magic or 'end_header')")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format")), "")
    endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
    if endian is None:
        raise MapFormatError(f"{path}: unsupported PLY format {fmt!r} (binary only)")
    fields: list[tuple[str, str]] = []
    n, in_vertex = 0, False
    for ln in lines:
        parts = ln.split()
        if parts and parts[0] == "element":
            if in_vertex:
                break
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                n = int(parts[2])
            elif not fields:
                raise MapFormatError(f"{path}: elements before 'vertex' are not supported")
        elif parts and parts[0] == "property" and in_vertex:
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise MapFormatError(f"{path}: unsupported vertex property {' '.join(parts[1:])!r}")
            fields.append((parts[2], endian + _PLY_TYPES[parts[1]]))
    dtype = np.dtype(fields)
    start = end + len(b"end_header\n")
    if len(raw) - start < n * dtype.itemsize:
        raise MapFormatError(f"{path}: truncated ({len(raw) - start} bytes for {n} vertices of {dtype.itemsize})")
    return np.frombuffer(raw, dtype=dtype, count=n, offset=start)
