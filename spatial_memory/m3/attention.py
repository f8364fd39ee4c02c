"""Gaussian memory attention: decode low-dimensional queries into foundation-model features.

M3 stores per Gaussian a small query ``q`` (a few floats per model) and per model a bank
of principal scene components ``PSC [K, D]``. A query (rendered per pixel, or read
directly from a Gaussian) is decoded as ``F = softmax(cos(q W, PSC) / tau) PSC``: a convex
combination of bank vectors, so decoded features always lie in the span of real features.

Paper vs released code: the paper describes ``W`` as learnable; the released code keeps it
a fixed random projection. ``train_W=True`` (default) follows the paper, ``False`` the code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class MemoryAttention(nn.Module):
    """Decode queries ``[..., d]`` into features ``[..., D]`` through a PSC bank ``[K, D]``.

    Args:
        query_dim: ``d``, floats per Gaussian for this model.
        psc_bank: ``[K, D]`` un-normalised principal scene components (may be replaced
            later with :meth:`set_bank` as a streaming bank grows; ``D`` must not change).
        tau: softmax temperature on cosine similarities (0.05 in M3's code).
        train_W: learn the projection ``W [d, D]`` (paper) or keep it fixed random (code).
        seed: seed of the random initialisation of ``W``.
    """

    def __init__(self, query_dim: int, psc_bank: np.ndarray | torch.Tensor, tau: float = 0.05,
                 train_W: bool = True, seed: int = 0) -> None:
        super().__init__()
        if query_dim < 1:
            raise ConfigError(f"MemoryAttention query_dim must be >= 1, got {query_dim}")
        if tau <= 0:
            raise ConfigError(f"MemoryAttention tau must be > 0, got {tau}")
        bank = torch.as_tensor(np.asarray(psc_bank, np.float32) if not isinstance(psc_bank, torch.Tensor) else psc_bank).float()
        if bank.ndim != 2 or bank.shape[1] < 1:
            raise ConfigError(f"PSC bank must be [K, D] with D >= 1, got {tuple(bank.shape)}")
        self.query_dim = int(query_dim)
        self.feature_dim = int(bank.shape[1])
        self.tau = float(tau)
        self.train_W = bool(train_W)
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(self.query_dim, self.feature_dim, generator=g) / self.query_dim**0.5
        self.W = nn.Parameter(W, requires_grad=self.train_W)
        self.register_buffer("bank", bank.clone())
        self.register_buffer("bank_n", F.normalize(bank, dim=-1))

    @property
    def bank_size(self) -> int:
        return int(self.bank.shape[0])

    def set_bank(self, psc_bank: np.ndarray | torch.Tensor) -> None:
        """Replace the bank ``[K', D]`` (same ``D``); ``W`` is kept."""
        bank = torch.as_tensor(np.asarray(psc_bank, np.float32) if not isinstance(psc_bank, torch.Tensor) else psc_bank).float()
        if bank.ndim != 2 or bank.shape[1] != self.feature_dim:
            raise ConfigError(f"new PSC bank must be [K, {self.feature_dim}], got {tuple(bank.shape)}")
        self.bank = bank.clone().to(self.W.device)
        self.bank_n = F.normalize(self.bank, dim=-1)

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[..., K]`` of queries ``q [..., d]``."""
        if q.shape[-1] != self.query_dim:
            raise ConfigError(f"queries have {q.shape[-1]} channels, attention expects {self.query_dim}")
        if self.bank_size == 0:
            raise ConfigError("MemoryAttention has an empty PSC bank")
        # cos(q W, b_k) = (q (W b_k^T)) / |q W| with |q W|^2 = q (W W^T) q^T: the same numbers as
        # normalising q W, but O(d (K + d)) per query instead of O(D (d + K)), since d << D.
        num = q @ (self.W @ self.bank_n.T)  # [..., K]
        sq = ((q @ (self.W @ self.W.T)) * q).sum(dim=-1, keepdim=True)
        # Clamp before the square root: sqrt has an infinite slope at 0 (a query rendered where
        # nothing is, q = 0), and clamping after it would turn that into a NaN gradient.
        norm = sq.clamp_min(1e-24).sqrt()
        return torch.softmax(num / norm / self.tau, dim=-1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Decode ``q [..., d]`` (per-pixel ``[H, W, d]`` or per-Gaussian ``[N, d]``) to ``[..., D]``."""
        return self.weights(q) @ self.bank

    def _chunk(self, chunk: int | None) -> int:
        """Rows per chunk keeping the ``[chunk, max(K, D)]`` intermediates near 16M floats (64 MB)."""
        return int(chunk) if chunk else max(1024, (1 << 24) // max(self.bank_size, self.feature_dim, 1))

    @torch.no_grad()
    def decode_chunked(self, q: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Inference decode of many queries ``[N, d]`` -> ``[N, D]`` in bounded memory."""
        chunk = self._chunk(chunk)
        out = [self.forward(q[s : s + chunk]) for s in range(0, q.shape[0], chunk)]
        return torch.cat(out) if out else q.new_zeros((0, self.feature_dim))

    @torch.no_grad()
    def weights_chunked(self, q: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Inference attention weights ``[N, K]`` in bounded memory."""
        chunk = self._chunk(chunk)
        out = [self.weights(q[s : s + chunk]) for s in range(0, q.shape[0], chunk)]
        return torch.cat(out) if out else q.new_zeros((0, self.bank_size))


def feature_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """M3's feature term for ``[P, D]`` pairs: mean ``(1 - cos)`` + mean L2 distance.

    Same form as :func:`splatting.losses.feature_loss`, but on already-sampled pairs so only
    the sampled pixels are decoded through the attention (decoding a whole image is ``H W K D``).
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, target, dim=-1)
    return (1.0 - cos).mean() + (pred - target).norm(dim=-1).mean()
