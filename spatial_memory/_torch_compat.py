"""Make ``torchvision`` importable next to a CPU-only torch.

PyPI's Linux torchvision wheels are CUDA builds: next to the CPU torch wheel their compiled ops
(``torchvision._C``) cannot load, and ``import torchvision`` then fails while registering fake
kernels for ``torchvision::nms`` / ``qnms`` whose schemas the missing library would have
defined. open_clip and sentence-transformers only need torchvision's pure-Python parts
(image transforms), so we define those two schemas (without kernels: calling them raises
torch's "no kernel" error) when, and only when, the compiled ops are unavailable.
On a robot with matching torch/torchvision CUDA wheels this is a no-op.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)
_done = False
_LIB = None  # keep the Library fragment alive for the life of the process


def ensure_torchvision_importable() -> bool:
    """Returns True if torchvision imports (after defining the op schemas if needed)."""
    global _done, _LIB
    if _done:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    import torch

    try:
        torch.ops.load_library  # noqa: B018 - torch is importable
        spec = importlib.util.find_spec("torchvision")
        from pathlib import Path

        so = next(Path(spec.origin).parent.glob("_C*.so"), None)
        if so is not None:
            try:
                torch.ops.load_library(str(so))
            except OSError as e:  # CUDA build next to a CPU torch
                log.info("torchvision compiled ops unavailable (%s); defining op schemas only", str(e).splitlines()[0])
                if not hasattr(torch.ops.torchvision, "nms") or not _has_op("torchvision::nms"):
                    _LIB = torch.library.Library("torchvision", "DEF")  # noqa: PLW0603
                    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - report, let callers decide
        log.warning("torchvision is not importable: %s", e)
        return False
    _done = True
    return True


def _has_op(qualname: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False
