"""Observation encoder: a small CNN on low-resolution RGB, trained here.

Choice: the memory must work from what a camera sees, so the encoder reads only RGB (64 x 48,
the episode render size; any other size is resized). It is trained once, before the reader, to
predict the multi-hot of categories visible in a view (ground-truth semantics are used only as
the *training target* of this encoder, never at run time). Its penultimate activation
(``dim`` floats) is the memory embedding. This is cheaper and less label-leaky than pooling
per-instance text embeddings of ground-truth labels, and keeps the reader honest: it must
decode categories from pixels-derived features.

Architecture: 4 stride-2 conv blocks (16-32-48-64 channels, BatchNorm, ReLU), global average
pooling, a ``dim``-wide linear bottleneck, and a linear multi-label head. About 60 k parameters.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatial_memory.errors import InvalidFrameError

log = logging.getLogger(__name__)

IN_H, IN_W = 48, 64


class ObservationEncoder(nn.Module):
    """RGB view -> ``[dim]`` embedding (+ category logits for training)."""

    def __init__(self, n_labels: int, dim: int = 32) -> None:
        super().__init__()
        chans = [3, 16, 32, 48, 64]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.bottleneck = nn.Linear(chans[-1], dim)
        self.head = nn.Linear(dim, n_labels)
        self.dim = dim
        self.n_labels = n_labels

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 3, 48, 64]`` float in [0, 1] -> ``[B, dim]``."""
        h = self.features(x).mean(dim=(2, 3))
        return torch.tanh(self.bottleneck(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(embedding [B, dim], logits [B, n_labels])``."""
        z = self.embed(x)
        return z, self.head(z)


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """``rgb: [H, W, 3] or [B, H, W, 3] uint8`` -> ``[B, 3, 48, 64] float32`` in [0, 1].

    Raises:
        InvalidFrameError: not an RGB uint8 image.
    """
    a = np.asarray(rgb)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise InvalidFrameError(f"encoder input must be [B,]H,W,3 uint8, got {a.shape} {a.dtype}")
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # e.g. a view of a ROS message buffer: torch needs memory it may own
        a = a.copy()
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (IN_H, IN_W):
        x = F.interpolate(x, size=(IN_H, IN_W), mode="area")
    return x


@torch.no_grad()
def encode(model: ObservationEncoder, rgb: np.ndarray, batch: int = 256) -> np.ndarray:
    """Embeddings ``[B, dim] float32`` of ``rgb: [B, H, W, 3] uint8`` (eval mode)."""
    model.eval()
    x = to_input(rgb)
    return torch.cat([model.embed(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy().astype(np.float32)


def train_encoder(rgb: np.ndarray, seen: np.ndarray, dim: int = 32, epochs: int = 4, batch: int = 128, lr: float = 3e-3,
                  seed: int = 0, progress: bool = True) -> tuple[ObservationEncoder, dict]:
    """Fit the encoder on views ``rgb: [N, H, W, 3] uint8`` with targets ``seen: [N, C] bool``.

    Returns:
        ``(model, stats)`` with the last epoch's loss, training micro-F1 and seconds.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    model = ObservationEncoder(seen.shape[1], dim)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x_all = to_input(rgb)
    y_all = torch.from_numpy(np.asarray(seen, np.float32))
    pos = y_all.mean(0).clamp(0.02, 0.98)
    pos_weight = ((1 - pos) / pos).clamp(max=10.0)  # rare categories would otherwise never fire
    n = len(x_all)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    steps = epochs * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="encoder", disable=not progress, leave=False)
    loss_v = 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = x_all[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # brightness jitter: robustness to lighting
                xb = (xb * (0.8 + 0.4 * torch.rand(len(xb), 1, 1, 1, generator=gen))).clamp(0, 1)
            # mirrored views show the same categories: halves the train/test gap on unseen apartments
            flip = torch.rand(len(xb), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            _, logits = model(xb)
            loss = F.binary_cross_entropy_with_logits(logits, y_all[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_v = float(loss.detach())
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_all[i : i + 512])[1] for i in range(0, n, 512)]) > 0
    tp = (pred & (y_all > 0.5)).sum().item()
    f1 = 2 * tp / max(pred.sum().item() + (y_all > 0.5).sum().item(), 1)
    return model, {"loss": loss_v, "train_f1": f1, "seconds": time.perf_counter() - t0, "n_views": n}
