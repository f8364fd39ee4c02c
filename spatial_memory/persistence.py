"""Map files: one directory per map, ``meta.json`` + ``*.safetensors``, written atomically.

Why this shape: safetensors holds only raw tensors (loading never executes code, unlike
pickle), JSON holds the config and format version, and writing into a sibling temporary
directory that is then renamed into place means an interrupted save never leaves a
half-written map where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import MapFormatError

META_NAME = "meta.json"


def _to_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().contiguous()
    return torch.from_numpy(np.ascontiguousarray(x))


def save_map_dir(
    path: str | os.PathLike,
    kind: str,
    format_version: int,
    meta: Mapping[str, Any],
    tensor_files: Mapping[str, Mapping[str, Any]],
) -> Path:
    """Atomically write a map directory.

    Args:
        path: target directory; replaced as a whole if it exists.
        kind: map type tag checked on load (e.g. ``"m3"``, ``"favor"``, ``"episodic"``).
        format_version: bumped whenever the layout changes incompatibly.
        meta: JSON-serialisable metadata (config, extractor names, ...).
        tensor_files: ``{file_stem: {tensor_name: tensor or array}}``; each becomes
            ``file_stem.safetensors``. Shapes are recorded in ``meta.json`` for validation.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        shapes: dict[str, dict[str, list[int]]] = {}
        for stem, tensors in tensor_files.items():
            tt = {k: _to_tensor(v) for k, v in tensors.items()}
            shapes[stem] = {k: list(v.shape) for k, v in tt.items()}
            save_file(tt, str(tmp / f"{stem}.safetensors"))
        full_meta = {"kind": kind, "format_version": int(format_version), "tensors": shapes, **dict(meta)}
        with open(tmp / META_NAME, "w") as f:
            json.dump(full_meta, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        # Swap in: the old map is moved aside first and only deleted after the rename succeeded.
        backup = None
        if path.exists():
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            if backup.exists():
                shutil.rmtree(backup)
            os.rename(path, backup)
        os.rename(tmp, path)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_map_dir(
    path: str | os.PathLike, kind: str, format_version: int
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read and validate a map directory written by :func:`save_map_dir`.

    Returns:
        ``(meta, {file_stem: {tensor_name: tensor}})``.

    Raises:
        MapFormatError: missing directory/files, wrong kind or version, missing tensors,
            or shapes that differ from those recorded in ``meta.json``.
    """
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        raise MapFormatError(f"{path}: not a map directory (no {META_NAME})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapFormatError(f"{meta_path}: invalid JSON ({e})") from None
    if meta.get("kind") != kind:
        raise MapFormatError(f"{path}: is a {meta.get('kind')!r} map, expected {kind!r}")
    if meta.get("format_version") != format_version:
        raise MapFormatError(
            f"{path}: format version {meta.get('format_version')} is not supported (this build reads {format_version})"
        )
    out: dict[str, dict[str, torch.Tensor]] = {}
    for stem, shapes in meta.get("tensors", {}).items():
        fpath = path / f"{stem}.safetensors"
        if not fpath.is_file():
            raise MapFormatError(f"{path}: missing tensor file {fpath.name}")
        try:
            tensors = load_file(str(fpath))
        except (SafetensorError, OSError, ValueError) as e:
            raise MapFormatError(f"{fpath}: unreadable safetensors file ({e})") from None
        for name, shape in shapes.items():
            if name not in tensors:
                raise MapFormatError(f"{fpath.name}: missing tensor {name!r}")
            if list(tensors[name].shape) != list(shape):
                raise MapFormatError(
                    f"{fpath.name}: tensor {name!r} has shape {list(tensors[name].shape)}, meta.json says {shape}"
                )
        out[stem] = tensors
    return meta, out


def require_tensor(tensors: Mapping[str, torch.Tensor], name: str, shape: tuple[int | None, ...], where: str) -> torch.Tensor:
    """Fetch a tensor and check its shape (``None`` = any size in that dimension)."""
    if name not in tensors:
        raise MapFormatError(f"{where}: missing tensor {name!r}")
    t = tensors[name]
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise MapFormatError(f"{where}: tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
    return t
