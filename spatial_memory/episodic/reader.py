"""Spatially-Aware Transformer reader: query tokens cross-attend into place-aware memory tokens.

Memory token i = LayerNorm(W e_i) + time(step_i) + place(place_i): the SAT paper's sum of an
observation encoding, a time embedding and a place embedding. Time and place embeddings are
``"sinusoidal"`` (fixed, as in the released code) or ``"learned"`` (tables); ``place_embedding =
"none"`` gives the T-FIFO baseline (time only). A learned always-valid *null* token is prepended
to every memory so an empty (or fully masked) memory still yields a defined read.

Query tokens: ``[task]`` + arguments: a place (place embedding + "place" type), a category
(label table + "label" type) or an ordered pair of places (place embeddings + slot 0/1 types).
Each layer (pre-LayerNorm): self-attention over the query tokens, cross-attention into memory,
MLP. The three final query tokens (concatenated) feed four task heads: multi-label for
what-was-there and first-visit, 2-way for order, and for last-seen a *pointer* that scores every
place slot by its place embedding (slots are arbitrary names, relabelled per episode).

Place-matched attention bias: a query token that names a place (what-was-there, first-visit,
order) adds a learned per-head bonus (initialised to 2) to its cross-attention scores on memory
tokens of that place. The place embedding alone must otherwise learn this binding from the task
loss, which our small reader did not manage within a CPU training budget (order stayed at
chance); T-FIFO has no places and so no bias. Recency bias: every layer also adds a learned
per-head slope times the memory token's step / ``max_steps`` (ALiBi-like, both readers), so a
head can prefer the newest (last-seen) or oldest (first-visit, order) memories without
decoding that from the time embedding.

Place-pooled read (``place_pool = True``, ours; needs places): softmax attention *averages* the
memory tokens of a place, but what-was-there asks for the *union* of what a place's entries
show, and first-visit for the union over its earliest visit. A linear *evidence* layer maps each
memory entry to per-category logits ``e_i`` and the reader max-pools them over the entries whose
place is the query place (first-visit: only entries of the earliest kept run of that place: an
entry of another place kept between the place's earliest entry and entry i proves i belongs to a
later visit, and a learned penalty on the step gap to the earliest entry down-weights entries
that are probably from a later visit). When the place has entries, the head's logits get
``gain * sigmoid(pooled) + bias + slope * log(1 + n_pooled)`` (learned per category): a category
some entry shows is added, while absence counts more the more entries were kept (with two kept
entries of a place, most of what it showed is simply not in memory); a place without entries is
answered by the head alone (label priors). Order gets ``gain * (t_q - t_p)`` on its "p first"
logit, t = the earliest kept step of a place (1 = no entry), the oracle's rule with a learned
gain, gated by ``sigmoid(a + b * x)`` with x = the first kept step over the latest kept step
(learned a, b; see ``evicted_start``): once the start of the stream is evicted (FIFO), earliest
kept steps say nothing about first visits.
Last-seen
gets the same kind of read: every entry scores ``gain * log sigmoid(e_ic) + slope * step /
max_steps`` for the queried category c, the scores are log-sum-exp pooled per place slot, and the
resulting log-distribution over slots is added to the pointer logits (the last entry showing c
wins). T-FIFO has no places and no pooled read.

Hierarchical read (``read = "hierarchical"``, the paper's SAT-PM-PH): memory tokens are grouped
into place chunks, each chunk is summarised by its masked mean, every query token scores the
chunk summaries, and cross-attention is restricted to tokens of its ``top_k`` best chunks. The
softmax-weighted read of the summaries is added to the residual too, which is how the chunk
scorer receives gradient through the hard top-k.

Place ids are mapped to slots ``place_id % max_places``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spatial_memory.errors import ConfigError

from .tasks import TASKS

TASK_INDEX = {t: i for i, t in enumerate(TASKS)}


@dataclass
class ReaderConfig:
    """Reader hyper-parameters (paper: 4 layers, width 128, 2 heads; default is smaller for CPU)."""

    n_labels: int = 10
    emb_dim: int = 32
    width: int = 64
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    max_places: int = 32
    max_steps: int = 1024
    time_embedding: str = "sinusoidal"  # "sinusoidal" | "learned"
    place_embedding: str = "sinusoidal"  # "sinusoidal" | "learned" | "none" (T-FIFO)
    read: str = "flat"  # "flat" | "hierarchical"
    top_k: int = 2
    place_pool: bool = True  # place-pooled evidence read (see module docstring); ignored without places
    visit_scale: float = 16.0  # steps: unit of the first-visit step-gap penalty (a visit is 6-12 steps)
    # order-rule gate input: the first kept step relative to the latest kept one (True), or as a
    # fraction of max_steps (False, weights trained before this field existed)
    order_gate_relative: bool = True

    def validate(self) -> "ReaderConfig":
        if self.time_embedding not in ("sinusoidal", "learned"):
            raise ConfigError(f"time_embedding must be 'sinusoidal' or 'learned', got {self.time_embedding!r}")
        if self.place_embedding not in ("sinusoidal", "learned", "none"):
            raise ConfigError(f"place_embedding must be 'sinusoidal', 'learned' or 'none', got {self.place_embedding!r}")
        if self.read not in ("flat", "hierarchical"):
            raise ConfigError(f"read must be 'flat' or 'hierarchical', got {self.read!r}")
        if self.read == "hierarchical" and self.place_embedding == "none":
            raise ConfigError("a hierarchical read over place chunks needs places (place_embedding != 'none')")
        for k in ("n_labels", "emb_dim", "width", "layers", "heads", "max_places", "max_steps", "top_k"):
            if int(getattr(self, k)) <= 0:
                raise ConfigError(f"reader {k} must be positive, got {getattr(self, k)}")
        if float(self.visit_scale) <= 0:
            raise ConfigError(f"reader visit_scale must be positive, got {self.visit_scale}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ConfigError(f"width {self.width} must split into {self.heads} heads of even size")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def time_only(self) -> "ReaderConfig":
        """The T-FIFO baseline's configuration: this reader without place embeddings (flat read)."""
        return ReaderConfig(**{**self.to_dict(), "place_embedding": "none", "read": "flat"})


def sinusoid(pos: torch.Tensor, dim: int, max_period: float | None = 1000.0) -> torch.Tensor:
    """Sinusoidal code ``pos: [...]`` -> ``[..., dim]``.

    ``max_period`` given: the transformer's geometric frequencies (for time, a continuum).
    ``max_period=None``: linear frequencies ``pi k / (dim/2)`` (a Fourier basis) for categorical
    ids such as places: the codes of two integer ids then have dot product 0 or 1 (out of
    ``dim/2``), i.e. ids ``0..dim-1`` are nearly orthogonal. Geometric frequencies make nearby
    ids almost identical, and the reader then learns to tell places apart far more slowly.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)
    freqs = math.pi * k / half if max_period is None else torch.exp(-math.log(max_period) * k / half)
    ang = pos.float()[..., None] * freqs
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class _Embed(nn.Module):
    """Integer -> vector, either a fixed sinusoid or a learned table."""

    def __init__(self, kind: str, n: int, dim: int, max_period: float | None) -> None:
        super().__init__()
        self.kind, self.n, self.dim, self.max_period = kind, n, dim, max_period
        self.table = nn.Embedding(n, dim) if kind == "learned" else None
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.clamp(0, self.n - 1)
        if self.table is not None:
            return self.table(idx)
        return sinusoid(idx, self.dim, self.max_period)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, heads: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head dot-product attention. ``q: [B, Q, W]``, ``k, v: [B, M, W]``,
    ``mask: [B, Q, M] bool`` (True = may attend), ``bias: [B, heads, Q, M]`` added to the scores
    -> ``[B, Q, W]``."""
    B, Q, W = q.shape
    M = k.shape[1]
    d = W // heads
    qh = q.view(B, Q, heads, d).transpose(1, 2)
    kh = k.view(B, M, heads, d).transpose(1, 2)
    vh = v.view(B, M, heads, d).transpose(1, 2)
    am = None if mask is None else mask[:, None]
    if bias is not None:
        am = bias if am is None else bias.masked_fill(~am, float("-inf"))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=am)
    return out.transpose(1, 2).reshape(B, Q, W)


class _Layer(nn.Module):
    def __init__(self, cfg: ReaderConfig) -> None:
        super().__init__()
        W = cfg.width
        self.heads = cfg.heads
        self.ln_s, self.ln_c, self.ln_m, self.ln_f = (nn.LayerNorm(W) for _ in range(4))
        self.qkv_s = nn.Linear(W, 3 * W)
        self.out_s = nn.Linear(W, W)
        self.q_c = nn.Linear(W, W)
        self.kv_c = nn.Linear(W, 2 * W)
        self.out_c = nn.Linear(W, W)
        self.mlp = nn.Sequential(nn.Linear(W, cfg.mlp_ratio * W), nn.GELU(), nn.Linear(cfg.mlp_ratio * W, W))
        self.hier = cfg.read == "hierarchical"
        self.top_k = cfg.top_k
        # per-head bonus for memory tokens of the place a query token names (see SATReader)
        self.match_bias = nn.Parameter(torch.full((cfg.heads,), 2.0))
        # per-head recency slope on the memory tokens' normalised step (ALiBi-like): heads start
        # alternately preferring recent (last-seen) and old (first-visit, order) memories
        self.recency = nn.Parameter(torch.tensor([4.0 if h % 2 == 0 else -4.0 for h in range(cfg.heads)]))
        if self.hier:
            self.q_chunk = nn.Linear(W, W)
            self.kv_chunk = nn.Linear(W, 2 * W)
            self.out_chunk = nn.Linear(W, W)

    def forward(self, h: torch.Tensor, qmask: torch.Tensor, mem: torch.Tensor, mmask: torch.Tensor,
                chunks: torch.Tensor | None, chunk_valid: torch.Tensor | None, member: torch.Tensor | None,
                match: torch.Tensor | None = None, age: torch.Tensor | None = None) -> torch.Tensor:
        """``h: [B, Q, W]``, ``qmask: [B, Q]``, ``mem: [B, M, W]``, ``mmask: [B, M]``;
        ``match: [B, Q, M] bool`` query token names the memory token's place (None = no place bias);
        hierarchical: ``chunks: [B, P, W]`` summaries, ``chunk_valid: [B, P]``, ``member: [B, M, P]`` one-hot."""
        x = self.ln_s(h)
        q, k, v = self.qkv_s(x).chunk(3, dim=-1)
        h = h + self.out_s(_attend(q, k, v, qmask[:, None, :].expand(-1, h.shape[1], -1), self.heads))
        x = self.ln_c(h)
        m = self.ln_m(mem)
        k, v = self.kv_c(m).chunk(2, dim=-1)
        cmask = mmask[:, None, :].expand(-1, h.shape[1], -1)
        if self.hier:
            assert chunks is not None and chunk_valid is not None and member is not None
            ck, cv = self.kv_chunk(self.ln_m(chunks)).chunk(2, dim=-1)
            cq = self.q_chunk(x)
            score = torch.einsum("bqw,bpw->bqp", cq, ck) / math.sqrt(cq.shape[-1])
            score = score.masked_fill(~chunk_valid[:, None, :], float("-inf"))
            attn = torch.softmax(score, dim=-1).nan_to_num(0.0)
            h = h + self.out_chunk(attn @ cv)
            k_top = min(self.top_k, score.shape[-1])
            top = score.topk(k_top, dim=-1).indices  # [B, Q, k]
            sel = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, True) & chunk_valid[:, None, :]
            in_sel = torch.einsum("bqp,bmp->bqm", sel.float(), member) > 0
            cmask = cmask & (in_sel | ~member.any(-1)[:, None, :])  # tokens without a place (null) stay readable
        bias = None if match is None else match[:, None].float() * self.match_bias[None, :, None, None]
        if age is not None:  # age: [B, M] step / max_steps (0 for the null token)
            rec = (self.recency[None, :, None] * age[:, None, :])[:, :, None, :].expand(-1, -1, h.shape[1], -1)
            bias = rec if bias is None else bias + rec
        h = h + self.out_c(_attend(self.q_c(x), k, v, cmask, self.heads, bias))
        return h + self.mlp(self.ln_f(h))


class SATReader(nn.Module):
    """Spatially-aware reader over a batch of memories (see module docstring)."""

    def __init__(self, cfg: ReaderConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        W = cfg.width
        self.obs = nn.Sequential(nn.Linear(cfg.emb_dim, W), nn.LayerNorm(W))
        self.time = _Embed(cfg.time_embedding, cfg.max_steps, W, max_period=2.0 * cfg.max_steps)
        self.place = _Embed("learned" if cfg.place_embedding == "learned" else "sinusoidal", cfg.max_places, W, None)
        self.use_place = cfg.place_embedding != "none"
        self.null = nn.Parameter(torch.randn(W) * 0.1)
        self.task = nn.Embedding(len(TASKS), W)
        self.label = nn.Embedding(cfg.n_labels, W)
        self.types = nn.Embedding(4, W)  # place arg, label arg, pair slot 0, pair slot 1
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(W)
        # heads read all three query tokens (task, argument, second place): the argument tokens
        # are the ones that cross-attended to their place's memories
        self.heads = nn.ModuleDict({
            "what_was_there": nn.Linear(3 * W, cfg.n_labels),
            "first_visit": nn.Linear(3 * W, cfg.n_labels),
            "last_seen": nn.Linear(3 * W, W),  # a pointer: scored against every place slot's embedding
            "order": nn.Sequential(nn.Linear(3 * W, W), nn.GELU(), nn.Linear(W, 2)),
        })
        self.pooled = cfg.place_pool and self.use_place
        if self.pooled:
            C = cfg.n_labels
            self.evidence = nn.Linear(cfg.emb_dim, C)  # per-entry category logits
            # per (what_was_there, first_visit) and category: gain of the pooled probability, bias
            # and slope in log(1 + pooled entries) (absence means more the more entries were kept)
            self.pool_gain = nn.Parameter(torch.full((2, C), 4.0))
            self.pool_bias = nn.Parameter(torch.full((2, C), -2.0))
            self.pool_count = nn.Parameter(torch.zeros(2, C))
            # order rule gain, gated by sigmoid(a + b * evicted_start). Once the
            # start of the stream is gone (FIFO), earliest kept steps say nothing about first visits
            # and the rule only adds apartment-specific noise (val 70 % / test 40 % on FIFO memories)
            self.order_gain = nn.Parameter(torch.tensor(10.0))
            self.order_gate = nn.Parameter(torch.tensor([3.0, -12.0]))
            # softplus-parametrised (positive) first-visit step-gap penalty and last-seen gains
            self.fv_gap = nn.Parameter(torch.tensor(1.5))
            self.ls_gain = nn.Parameter(torch.tensor(4.0))
            self.ls_slope = nn.Parameter(torch.tensor(20.0))
            # mixing weight of the pooled last-seen pointer starts at 0 so the attention pointer trains
            # from the first step (in our one comparison, starting at 1 gave a validation mixed score of
            # 64.7 against 66.2)
            self.ls_mix = nn.Parameter(torch.tensor(0.0))

    def memory_tokens(self, emb: torch.Tensor, step: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
        """``emb: [B, M, E]``, ``step, place: [B, M]`` -> ``[B, M, W]`` tokens."""
        tok = self.obs(emb) + self.time(step)
        if self.use_place:
            tok = tok + self.place(place % self.cfg.max_places)
        return tok

    def query_tokens(self, task: torch.Tensor, args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``task: [B]``, ``args: [B, 2]`` -> tokens ``[B, 3, W]`` and validity ``[B, 3]``."""
        B = task.shape[0]
        P = self.cfg.max_places
        a0 = args[:, 0].clamp(min=0)
        a1 = args[:, 1].clamp(min=0)
        is_label = task == TASK_INDEX["last_seen"]
        is_pair = task == TASK_INDEX["order"]
        place0 = self.place(a0 % P)
        lab0 = self.label(a0.clamp(max=self.cfg.n_labels - 1))
        types0 = torch.where(is_label, 1, torch.where(is_pair, 2, 0))
        t1 = torch.where(is_label[:, None], lab0, place0) + self.types(types0)
        t2 = self.place(a1 % P) + self.types(torch.full_like(task, 3))
        toks = torch.stack([self.task(task), t1, t2], dim=1)
        valid = torch.stack([torch.ones_like(is_pair), torch.ones_like(is_pair), is_pair], dim=1)
        return toks, valid.reshape(B, 3)

    def place_pool(self, e: torch.Tensor, step: torch.Tensor, slot: torch.Tensor, mmask: torch.Tensor,
                   q_slot: torch.Tensor, first_run: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Max-pooled evidence of the query place's entries.

        Args:
            e: ``[B, M, C]`` per-entry category logits; step, slot: ``[B, M]``; mmask: ``[B, M] bool``.
            q_slot: ``[B]`` query place slot (-1 = none); first_run: ``[B] bool`` pool only the
                place's earliest kept run (first-visit).

        Returns:
            ``pooled [B, C]`` (0 where the place has no entry), ``has [B] bool`` and ``count [B]``
            the number of pooled entries.
        """
        match = mmask & (slot == q_slot[:, None]) & (q_slot[:, None] >= 0)
        has = match.any(1)
        s = step.float()
        s_min = torch.where(match, s, torch.full_like(s, float("inf"))).min(1).values  # [B]
        # an entry of another place kept between the place's earliest entry and entry i (j strictly
        # between them in time) proves that i belongs to a later visit
        other = mmask & ~match
        between = other[:, None, :] & (s[:, None, :] > s_min[:, None, None]) & (s[:, None, :] < s[:, :, None])
        later = between.any(-1) & first_run[:, None]  # [B, M]
        gap = torch.where(has[:, None], (s - s_min[:, None]).clamp(min=0), torch.zeros_like(s)) / self.cfg.visit_scale
        penalty = F.softplus(self.fv_gap) * gap * first_run[:, None].float()
        score = (e - penalty[..., None]).masked_fill(~(match & ~later)[..., None], -1e4)  # finite: no NaN gradients
        pooled = torch.where(has[:, None], score.max(1).values, torch.zeros_like(score[:, 0]))
        return pooled, has, (match & ~later).sum(1)

    def earliest(self, step: torch.Tensor, slot: torch.Tensor, mmask: torch.Tensor, q_slot: torch.Tensor) -> torch.Tensor:
        """Earliest kept step of place ``q_slot: [B]`` as a fraction of ``max_steps``: ``[B]``; a place
        without entries counts as 1 (after every kept entry). ``step, slot: [B, M]``, ``mmask: [B, M]``."""
        match = mmask & (slot == q_slot[:, None])
        frac = (step.float() / self.cfg.max_steps).clamp(max=1.0)
        t = torch.where(match, frac, torch.ones_like(frac))
        return t.min(1).values

    def evicted_start(self, step: torch.Tensor, mmask: torch.Tensor) -> torch.Tensor:
        """Input of the order rule's gate ``[B]``: how much of the stream lies before the first kept entry.

        Relative (default): first kept step / (latest kept step + 1), in [0, 1): 0 when the start
        of the stream is still in memory (LIFO), ~1 - L / T after FIFO writes, whatever the stream
        length T. As a fraction of ``max_steps`` the gate learned on 512-step episodes stayed open
        on a 200-step stream after FIFO writes and answered order by recency (12 % on the demo's
        episode). An empty memory gives 1 (gate closed).
        """
        frac = (step.float() / self.cfg.max_steps).clamp(max=1.0)  # as in ``earliest``
        t0 = frac.masked_fill(~mmask, 1.0).amin(1)  # first kept step; 1 for an empty memory
        if not self.cfg.order_gate_relative:
            return t0
        t_last = frac.masked_fill(~mmask, 0.0).amax(1)
        rel = t0 / (t_last + 1.0 / self.cfg.max_steps)
        return torch.where(mmask.any(1), rel.clamp(max=1.0), torch.ones_like(rel))

    def last_seen_pool(self, e: torch.Tensor, slot: torch.Tensor, mmask: torch.Tensor, age: torch.Tensor,
                       label: torch.Tensor) -> torch.Tensor:
        """Log-distribution ``[B, max_places]`` over place slots of the latest entry showing ``label: [B]``.

        ``e: [B, M, C]``, ``slot: [B, M]``, ``age: [B, M]`` step / max_steps. Empty slots get -30.
        """
        e_c = e.gather(-1, label[:, None, None].expand(-1, e.shape[1], 1)).squeeze(-1)  # [B, M]
        sc = F.softplus(self.ls_gain) * F.logsigmoid(e_c) + self.ls_slope * age
        onehot = F.one_hot(slot, self.cfg.max_places).bool() & mmask[..., None]  # [B, M, P]
        per_slot = torch.logsumexp(sc[..., None].masked_fill(~onehot, -1e4), dim=1)  # [B, P], finite
        return (per_slot - torch.logsumexp(per_slot, dim=-1, keepdim=True)).clamp(min=-30.0)

    def forward(self, emb: torch.Tensor, step: torch.Tensor, place: torch.Tensor, mmask: torch.Tensor,
                task: torch.Tensor, args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Read a batch.

        Args:
            emb: ``[B, M, E]`` memory encodings; step, place: ``[B, M] int64``; mmask: ``[B, M] bool``.
            task: ``[B] int64`` index into ``TASKS``; args: ``[B, 2] int64`` (-1 = unused).

        Returns:
            ``{task_name: logits}``: ``[B, n_labels]``, ``[B, max_places]`` or ``[B, 2]``.
        """
        B = emb.shape[0]
        entry_mask = mmask  # [B, M] without the null token
        mem = self.memory_tokens(emb, step, place)
        mem = torch.cat([self.null.expand(B, 1, -1), mem], dim=1)
        mmask = torch.cat([torch.ones(B, 1, dtype=torch.bool), mmask], dim=1)
        chunks = chunk_valid = member = None
        if self.cfg.read == "hierarchical":
            slot = torch.cat([torch.full((B, 1), -1, dtype=torch.long), place % self.cfg.max_places], dim=1)
            member = F.one_hot(slot.clamp(min=0), self.cfg.max_places).float() * ((slot >= 0) & mmask)[..., None]
            cnt = member.sum(1)  # [B, P]
            chunks = torch.einsum("bmp,bmw->bpw", member, mem) / cnt.clamp(min=1)[..., None]
            chunk_valid = cnt > 0
        h, qmask = self.query_tokens(task, args)
        match = None
        if self.use_place:
            P = self.cfg.max_places
            is_label = task == TASK_INDEX["last_seen"]
            is_pair = task == TASK_INDEX["order"]
            neg = torch.full_like(task, -1)
            q_slot = torch.stack([neg, torch.where(is_label, neg, args[:, 0] % P), torch.where(is_pair, args[:, 1] % P, neg)], 1)
            m_slot = torch.cat([torch.full((B, 1), -2, dtype=torch.long), place % P], dim=1)
            match = (q_slot[:, :, None] == m_slot[:, None, :]) & (q_slot[:, :, None] >= 0)
        age = torch.cat([torch.zeros(B, 1), step.float() / self.cfg.max_steps], dim=1)
        for layer in self.layers:
            h = layer(h, qmask, mem, mmask, chunks, chunk_valid, member, match, age)
        h = self.ln_out(h) * qmask[..., None]  # an unused second argument contributes nothing
        z = h.reshape(B, -1)
        out = {name: head(z) for name, head in self.heads.items() if name != "last_seen"}
        # last-seen answers a place slot; slots are arbitrary names, so score each slot through its
        # place embedding (a pointer) instead of a fixed per-slot output row
        slots = self.place(torch.arange(self.cfg.max_places))
        out["last_seen"] = self.heads["last_seen"](z) @ slots.T / math.sqrt(slots.shape[-1])
        if self.pooled:
            P = self.cfg.max_places
            e = self.evidence(emb)  # [B, M, C]
            slot = place % P
            is_fv = task == TASK_INDEX["first_visit"]
            q_slot = torch.where(args[:, 0] >= 0, args[:, 0] % P, torch.full_like(task, -1))
            pooled, has, count = self.place_pool(e, step, slot, entry_mask, q_slot, is_fv)
            # positive evidence (a kept entry of the place shows c) saturates at the gain; absence
            # shifts by bias + slope x log(1 + entries): with few entries kept, the label prior of
            # the head keeps most of its say
            n = torch.log1p(count.float())[:, None]
            for i, name in enumerate(("what_was_there", "first_visit")):
                add = self.pool_gain[i] * torch.sigmoid(pooled) + self.pool_bias[i] + self.pool_count[i] * n
                out[name] = out[name] + has[:, None].float() * add
            # order: the place whose earliest kept entry is earlier was (probably) visited first
            t_a = self.earliest(step, slot, entry_mask, args[:, 0].clamp(min=0) % P)
            t_b = self.earliest(step, slot, entry_mask, args[:, 1].clamp(min=0) % P)
            gate = torch.sigmoid(self.order_gate[0] + self.order_gate[1] * self.evicted_start(step, entry_mask))
            out["order"] = out["order"] + torch.stack([torch.zeros_like(t_a), gate * self.order_gain * (t_b - t_a)], -1)
            label = args[:, 0].clamp(0, self.cfg.n_labels - 1)
            out["last_seen"] = out["last_seen"] + self.ls_mix * self.last_seen_pool(e, slot, entry_mask, age[:, 1:], label)
        return out

    def entry_evidence(self, emb: torch.Tensor) -> torch.Tensor | None:
        """Per-entry category logits ``[..., C]`` of ``emb: [..., E]`` (None without a pooled read)."""
        return self.evidence(emb) if self.pooled else None
