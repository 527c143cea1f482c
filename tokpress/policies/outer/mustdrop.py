"""``mustdrop`` (outer stage) — MustDrop (Liu et al., arXiv 2411.10803, "Multi-Stage Vision Token Dropping: Towards
Efficient Multimodal Large Language Model"; code ``liuting20/MustDrop``), the vision-encoding stage: local spatial
merging and the key token set.

Algorithm, per video, on each frame's token grid:

1. *Local spatial merging.* The frame is tiled into ``window x window`` windows from its top-left corner (only
   whole windows; edge rows and columns that do not fill one stay as they are). A window's similarity is the mean
   cosine similarity of its tokens' distinct pairs (float32). The most similar windows are merged: each becomes
   one token, the size-weighted mean of its members (the authors' ``merge_wavg``), at the position of the window's
   last token (their ``dst``, the bottom-right one).
2. *Key token set.* Of the tokens left, the ``ceil(key_ratio * k)`` with the most vision-encoder attention are
   marked as key tokens (``Plan.marks``): no later stage drops them (the engine keeps them through every inner
   stage, prefill and decode). A merged token's attention is the sum of its members'.

Budget mapping: ``retain_ratio`` is the fraction of the video's tokens entering the LLM, as for every outer policy.
The authors merge every window whose similarity is at least ``spatial_threshold`` (0.8), the same number in every
frame of a batch (the minimum over frames); tokpress merges the ``R // (window**2 - 1)`` most similar windows
(``R = N - budget`` tokens to remove) taken frame by frame in turn — every frame's best window by similarity, then
every frame's second best, ... — so frames merge equally (±1) and the best of them first, as LightCompress's
``retained_tokens`` form does (``fix_r``). The ``R mod (window**2 - 1)`` tokens left over merge part of the next
window: its last ``e + 1`` tokens into its last one. When even merging every window removes too few tokens
(``budget`` below about ``N / window**2``), the tokens with the least vision attention are dropped after merging.

Deviations from the authors' code, with reasons:

- Where: the authors merge after the first CLIP layer (3x3 windows of the 24x24 patch grid) and take the key set
  from the last layer's [CLS] attention on the merged sequence. This outer stage merges the LLM-input tokens (the
  video towers tokpress supports emit tokens that are already 2x2 patch groups, so ``window = 2`` covers 4x4
  patches); on LLaVA-OneVision the authors' placement is also available as the vision stage ``vision="mustdrop"``
  (:mod:`tokpress.policies.vision.mustdrop`: 3x3 windows after SigLIP's first layer), which stacks with this one.
  The key set is ranked by the [CLS] attention the engine computes at the encoder's feature layer
  (``vision_attention = "cls"``): the real [CLS] row on CLIP (LLaVA-NeXT-Video) and InternViT; SigLIP and the Qwen
  ViTs have no [CLS] token, so there it is the attention each token receives from its frame's mean query, an
  adaptation. Without the vision stage the encoder itself runs on every patch.
- Count: a promised budget instead of the similarity threshold, reached as above (the threshold is kept as an
  option: ``spatial_threshold`` set to a number merges only windows at or above it and fills the rest of the
  removals by dropping the least-attended tokens).
- Video: the authors' code handles images (a batch of frames merges the same number of windows in each);
  tokpress merges per frame as described and picks the key set over the whole video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.errors import InputError
from tokpress.ops import group_mean, group_size, topk_sorted
from tokpress.policies.base import Grid, OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class MustDropOuterConfig(PolicyConfig):
    window: int = 2
    """Side of the merging windows, in LLM tokens (the authors' 3x3 CLIP patches are 1.5x1.5 tokens of 2x2 patches)."""
    key_ratio: float = 0.08
    """Share of the kept tokens marked as key tokens (the authors' ``keep_rate = 0.08``); 0 marks none."""
    spatial_threshold: float | None = None
    """``None``: merge the most similar windows up to the budget. A number: merge only windows whose similarity is at
    least it (the authors' rule, 0.8), and drop the least-attended tokens for the rest of the budget."""

    def validate(self) -> None:
        check_window_options(self)
        ratio = self.key_ratio
        self.check(
            isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 1,
            f"key_ratio must be a number in [0, 1] (the authors use 0.08), got {ratio!r}",
        )


def check_window_options(config: PolicyConfig) -> None:
    """:class:`ConfigError` unless ``config.window`` is an int >= 2 and ``config.spatial_threshold`` is ``None`` or a
    cosine (the options MustDrop's outer and vision stages share)."""
    window, t = config.window, config.spatial_threshold
    config.check(
        isinstance(window, int) and not isinstance(window, bool) and window >= 2,
        f"window must be an int >= 2 (the side of the merging windows), got {window!r}",
    )
    config.check(
        t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and -1 <= t <= 1),
        f"spatial_threshold must be None (merge up to the budget) or a cosine in [-1, 1], got {t!r}",
    )


def window_members(grid: Grid, window: int) -> torch.Tensor:
    """``[W, window**2]`` long: the raster indices of every whole window of every frame, frame by frame, each
    window's members in raster order (its last member is the bottom-right token)."""
    rows, cols = grid.height // window, grid.width // window
    r = torch.arange(rows)[:, None, None, None] * window + torch.arange(window)[None, None, :, None]
    c = torch.arange(cols)[None, :, None, None] * window + torch.arange(window)[None, None, None, :]
    in_frame = (r * grid.width + c).reshape(rows * cols, window * window)
    frames = torch.arange(grid.frames)[:, None, None] * grid.per_frame
    return (frames + in_frame[None]).reshape(-1, window * window)


def window_similarity(features: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """``[..., W]`` float32: the mean cosine similarity of each window's distinct token pairs (``features``
    ``[..., N, D]``, e.g. one video's tokens or ``[F, N, D]`` frames of patches; ``members`` ``[W, m]``)."""
    unit = F.normalize(features.float(), dim=-1)[..., members, :]  # [..., W, m, D]
    m = members.shape[1]
    gram = unit @ unit.transpose(-1, -2)
    return (gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))


def merge_order(similarity: torch.Tensor, per_frame: int) -> torch.Tensor:
    """``[W]`` the windows in merging order: every frame's most similar window (frames by similarity), then every
    frame's second most similar, ... (stable: the earlier window first on ties)."""
    frames = similarity.numel() // per_frame
    sim = similarity.view(frames, per_frame)
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices  # [T, P] window order within each frame
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(per_frame).expand(frames, per_frame))
    key = rank.flatten().double() * 4.0 - similarity.double()  # rank first; within a rank, higher similarity first
    return torch.sort(key, stable=True).indices


@register_policy("mustdrop", stage="outer")
class MustDropOuterPolicy(OuterPolicy):
    config_cls = MustDropOuterConfig
    needs_vision_attention = True
    vision_attention = "cls"  # the [CLS] row where the tower has one (CLIP, InternViT), else the mean query

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        if video.attention is None:
            raise InputError(
                "outer policy 'mustdrop' ranks its key set by vision-encoder attention: pass VideoTokens.attention "
                "(the engine does for policies with needs_vision_attention)"
            )
        n, cfg = video.grid.numel, self.config
        device = video.features.device
        group = torch.arange(n, device=device)  # the token each original token ends up in (its index)
        members = window_members(video.grid, cfg.window).to(device)
        to_remove = n - budget
        if to_remove and members.numel():
            similarity = window_similarity(video.features, members)
            order = merge_order(similarity, members.shape[0] // video.grid.frames)
            if cfg.spatial_threshold is not None:
                order = order[similarity[order] >= cfg.spatial_threshold]
            per = members.shape[1] - 1
            full = min(to_remove // per, order.numel())
            merged = members[order[:full]]
            group[merged.flatten()] = merged[:, -1:].expand_as(merged).flatten()
            left = to_remove - full * per
            if 0 < left < per and full < order.numel():  # part of the next window: its last left + 1 tokens
                part = members[order[full], -(left + 1) :]
                group[part] = part[-1]
        attention = video.attention.to(device).float()
        alive = torch.unique(group)
        slot = torch.searchsorted(alive, group)
        score = torch.zeros(alive.numel(), device=device).index_add_(0, slot, attention)
        if alive.numel() > budget:  # merging alone cannot reach the budget: drop the least attended
            keep_slots = topk_sorted(score, budget)
            alive, score = alive[keep_slots], score[keep_slots]
            slot = torch.searchsorted(alive, group).clamp_max(alive.numel() - 1)
            lost = alive[slot] != group
            slot = torch.where(lost, -1, slot)
        else:
            lost = torch.zeros(n, dtype=torch.bool, device=device)
        keep_rows = ~lost
        features = group_mean(video.features[keep_rows], slot[keep_rows], budget)
        sizes = group_size(slot[keep_rows], budget)
        marks = torch.zeros(budget, dtype=torch.bool, device=device)
        key = math.ceil(cfg.key_ratio * budget)
        if key:
            marks[topk_sorted(score, key)] = True
        return Plan(alive, features.to(video.features.dtype), sizes, marks=marks)
