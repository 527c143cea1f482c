"""``vidcom2`` — VidCom² (Liu et al., EMNLP 2025, "Video Compression Commander: Plug-and-Play Inference
Acceleration for Video Large Language Models"), the token-pruning form the authors ship for LLaVA-OneVision,
LLaVA-Video and Qwen2/2.5/3-VL (one algorithm for every family).

Algorithm, for one video of ``T`` frames x ``P`` tokens (the projected features the LLM would read):

1. **Channel selection** — keep the ``int(D * channel_ratio)`` feature channels of *lowest* variance over the
   video's ``N = T P`` tokens (population variance); every token is then L2-normalised over those channels.
2. **Uniqueness scores** — with the multi-scale Gaussian kernel
   ``G(x, c) = sum_a exp(-||x - c||^2 / (2 a))``, ``a in alphas = (1/8, 1/4, 1/2, 1, 2)``, each token gets a
   *video* similarity ``v = G(x, mean of all N tokens)`` and a *frame* similarity ``f = G(x, mean of its frame)``
   (:func:`uniqueness_scores`).
3. **Frame budgets** — frame ``t``'s uniqueness is ``u_t = -mean_p v[t, p]``;
   ``sigma = softmax(u / temperature)`` over the frames, and the frame's share of the budget is proportional to
   ``1 + sigma_t - 1 / T`` (:func:`frame_weights`) — the reference's ``scale_t = r (1 + sigma_t - mean(sigma))``. The
   weights average 1, so a frame unlike the video gets up to twice the mean share, a typical one
   ``1 - 1/T`` of it. Shares become integers by :func:`frame_budgets` (below).
4. **Token selection** — every frame keeps its ``k_t`` tokens with the *lowest* ``v + f`` (least similar to both the
   whole video and its own frame), i.e. the most unique ones. Kept tokens are returned unchanged (no merging).

Budget mapping. The reference keeps ``round(R_RATIO * P * (1 + sigma_t - 1/T))`` tokens of frame ``t`` (the
environment's ``R_RATIO``, default 0.25, is tokpress's ``retain_ratio``), capped at ``P`` and at least 1. tokpress
keeps exactly ``budget`` (``round(r N)``) tokens: the real shares ``q_t = budget (1 + sigma_t - 1/T) / T`` (these sum
to ``budget``, as the reference's would for ``r = budget / N``) are made integers by :func:`frame_budgets`:

* **clamping** — each share is held in ``[lo, P]`` with ``lo = 1`` when ``budget >= T`` (the reference's "at least
  one token per frame") and ``lo = 0`` otherwise. What a clamped frame gives up or needs is taken from / given to
  the free frames *in proportion to their shares*: ``q_t = clamp(s w_t, lo, P)`` with the one scale ``s`` that makes
  the shares sum to ``budget`` (a water-filling, solved exactly from the sorted breakpoints, no iteration);
* **rounding** — largest remainder: every frame gets ``floor(q_t)``, and the leftover tokens go one each to the
  frames with the largest fractional parts (ties to the earlier frame). Every frame thus gets ``floor`` or
  ``ceil`` of its share, never more than ``P``, and the counts sum to ``budget``. Whenever the reference's own
  ``round(q_t)`` happens to sum to ``budget`` (no clamp binding, no share ending in exactly .5) the counts are the
  reference's.

:func:`tokpress.ops.apportion` is not used: it splits by integer weights and knows no per-group cap or floor, while
these shares are real numbers bounded by ``[lo, P]``.

Per-family notes: the reference runs the same scoring per video for every family; a "frame" is what carries one
``P``-token grid — a LLaVA frame (196 tokens for LLaVA-OneVision after 2x2 pooling, 169 for LLaVA-Video) or a Qwen-VL
temporal patch (``t`` of ``grid_thw``, i.e. two sampled frames, ``h w / merge^2`` tokens). LLaVA-OneVision's single
trailing newline and LLaVA-Video's per-row newlines are not scored and always kept (the engine's protected
tokens); for Qwen3-VL the reference cuts the deepstack features with the same indices. tokpress's ``Grid`` already
describes each of these, so the policy has no per-family branch.

Deviations from the reference code, and why:

* **Exact budget** (above). The reference's total drifts from ``R_RATIO * N``: per-frame rounding (up to ``T / 2``
  tokens either way), the floor of one token per frame (even when ``R_RATIO * N < T``) and the cap at ``P`` —
  which drops the capped frame's excess (from ``R_RATIO`` ~0.5 on, e.g. ``r = 0.75`` with a one-hot ``sigma`` and
  ``T = 2`` gives the distinct frame a scale of 1.125, cut to 1). tokpress redistributes the excess to the other
  frames instead, and below one token per frame gives the tokens to the frames with the largest shares.
* **float32 scoring**: variances, norms, kernels and the softmax run in float32 (the shares in float64) whatever
  the model dtype; the reference computes in the model's dtype (bf16 / fp16), where ``u / 0.01`` keeps only about
  three significant digits.
* **Ties** go to the lower index: equal channel variances keep the earlier channel, equal token scores the earlier
  token (stable sorts); the reference's ``topk`` leaves both unspecified. The earliest reference also added
  ``1e-8`` to the softmax denominator; its refactored code (used here) does not.
* ``channel_ratio`` keeps at least one channel (``D = 1`` would otherwise select none).
* ``budget == N`` returns the identity plan (the reference would still clamp and round).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.errors import InputError
from tokpress.policies.base import Grid, OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class VidCom2Config(PolicyConfig):
    """Options of :class:`VidCom2Policy` (the authors' defaults)."""

    #: softmax temperature of the frame-uniqueness allocation; smaller concentrates the extra share on fewer frames
    temperature: float = 0.01
    #: fraction of the feature channels scored: the ``int(D * channel_ratio)`` of lowest variance over the video
    channel_ratio: float = 0.5
    #: bandwidths ``a`` of the multi-scale Gaussian kernel ``sum_a exp(-d^2 / (2 a))``
    alphas: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)

    def validate(self) -> None:
        t = self.temperature
        self.check(
            _is_num(t) and t > 0,
            f"temperature must be a number > 0, got {t!r} (the authors use 0.01; larger spreads budgets evenly)",
        )
        c = self.channel_ratio
        self.check(
            _is_num(c) and 0 < c <= 1,
            f"channel_ratio must be a number in (0, 1], got {c!r} (the authors score the lowest-variance half: 0.5)",
        )
        a = self.alphas
        self.check(
            isinstance(a, tuple) and len(a) > 0 and all(_is_num(x) and x > 0 for x in a),
            f"alphas must be a non-empty tuple of numbers > 0 (kernel bandwidths), got {a!r}; "
            "the authors use (0.125, 0.25, 0.5, 1.0, 2.0)",
        )


def low_variance_channels(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """The ``max(1, int(D * ratio))`` channels of ``x`` ``[N, D]`` with the lowest population variance over the
    ``N`` tokens, as ``[N, C]`` float32 (in increasing-variance order; ties keep the earlier channel)."""
    x = x.float()
    k = max(1, int(x.shape[-1] * ratio))
    order = torch.sort(x.var(dim=0, unbiased=False), stable=True).indices[:k]
    return x[:, order]


def gaussian_kernel(dist_sq: torch.Tensor, alphas: tuple[float, ...]) -> torch.Tensor:
    """Multi-scale Gaussian similarity ``sum_a exp(-dist_sq / (2 a))``, elementwise on ``dist_sq`` (any shape)."""
    return sum(torch.exp(dist_sq / (-2.0 * a)) for a in alphas)


def uniqueness_scores(frames: torch.Tensor, alphas: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel similarity of every token to the video's and to its frame's mean token.

    Args:
        frames: ``[T, P, C]`` the selected channels of the video's tokens.
        alphas: kernel bandwidths.

    Returns:
        ``video [T, P]`` and ``frame [T, P]`` float32: ``G(x, mean over all T P tokens)`` and ``G(x, mean over the
        frame's P tokens)``, on L2-normalised tokens (the means are of the normalised tokens, not renormalised).
    """
    x = F.normalize(frames.float(), dim=-1)
    video_mean = x.mean(dim=(0, 1), keepdim=True)
    frame_mean = x.mean(dim=1, keepdim=True)
    video = gaussian_kernel((x - video_mean).square().sum(-1), alphas)
    frame = gaussian_kernel((x - frame_mean).square().sum(-1), alphas)
    return video, frame


def frame_weights(video_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[T]`` float64 relative frame shares ``1 + sigma_t - 1/T`` (mean 1), ``sigma = softmax(u / temperature)``
    with ``u_t = -mean_p video_scores[t, p]`` (``video_scores`` ``[T, P]``): frames unlike the video weigh more."""
    u = -video_scores.float().mean(-1)
    sigma = torch.softmax((u - u.max()) / temperature, dim=0).double()
    return 1 + sigma - 1 / u.numel()


def _clamped_shares(weights: torch.Tensor, total: int, lo: int, hi: int) -> torch.Tensor:
    """Real shares ``clamp(s * weights, lo, hi)`` (``[T]`` float64) with the scale ``s`` that makes them sum to
    ``total``; needs ``weights > 0`` and ``T lo <= total <= T hi``.

    ``f(s) = sum clamp(s w, lo, hi)`` is continuous, non-decreasing and linear between the breakpoints
    ``lo / w_t`` and ``hi / w_t``; ``s`` is found on the segment where ``f`` reaches ``total``.
    """
    w = weights.double()
    breaks = torch.sort(torch.cat([lo / w, hi / w])).values  # [2T]
    f = (breaks[:, None] * w).clamp(lo, hi).sum(1)  # [2T] non-decreasing, f[0] = T lo, f[-1] = T hi
    j = int(torch.searchsorted(f, torch.tensor([float(total)], dtype=f.dtype, device=f.device)))
    if j == 0:
        s = breaks[0]
    else:
        j = min(j, f.numel() - 1)
        s = breaks[j - 1] + (total - f[j - 1]) / (f[j] - f[j - 1]) * (breaks[j] - breaks[j - 1])
    return (s * w).clamp(lo, hi)


def frame_budgets(weights: torch.Tensor, budget: int, per_frame: int) -> torch.Tensor:
    """``[T]`` tokens kept per frame (``torch.long``): shares of ``budget`` in proportion to ``weights`` ``[T]``
    (all > 0), each in ``[lo, per_frame]`` (``lo = 1`` when ``budget >= T``, else 0), summing to ``budget``.

    Needs ``1 <= budget <= T * per_frame``. Clamped frames' excess or deficit is spread over the others in
    proportion to their weights; the real shares become integers by largest remainder (ties to the earlier frame).
    """
    t = weights.numel()
    lo = 1 if budget >= t else 0
    shares = _clamped_shares(weights, budget, lo, per_frame)
    counts = shares.floor().long().clamp(lo, per_frame)
    frac = torch.where(counts < per_frame, shares - counts, -1.0)  # a frame at its cap takes no extra token
    # the shares sum to `budget`, so 0 <= left = sum of the fractions, which is below the number of frames with a
    # fraction > 0 (each < 1); such a frame is below its cap, so every frame picked here has room for one more
    left = budget - int(counts.sum())
    extra = torch.sort(frac, descending=True, stable=True).indices[: max(0, left)]
    counts[extra] += 1
    return counts


def vidcom2_counts_and_scores(
    features: torch.Tensor, grid: Grid, budget: int, config: VidCom2Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame budgets ``[T]`` (``torch.long``, summing to ``budget``) and token scores ``v + f`` ``[T, P]``
    float32 (lower = more unique, kept first) of one video's ``features`` ``[N, D]``."""
    selected = low_variance_channels(features, config.channel_ratio).view(grid.frames, grid.per_frame, -1)
    video, frame = uniqueness_scores(selected, config.alphas)
    counts = frame_budgets(frame_weights(video, config.temperature), budget, grid.per_frame)
    return counts, video + frame


@register_policy("vidcom2", stage="outer")
class VidCom2Policy(OuterPolicy):
    config_cls = VidCom2Config

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        x = video.features
        n = g.numel
        if x.dim() != 2 or x.shape[0] != n:
            raise InputError(
                f"vidcom2: features must have shape [N, D] with N = grid.numel = {n}, got {tuple(x.shape)}; "
                "pass the video's projected tokens in raster order (t, h, w)"
            )
        if not 1 <= budget <= n:
            raise InputError(f"vidcom2: budget must be in [1, {n}], got {budget}")
        if budget == n:
            return Plan(torch.arange(n, device=x.device))
        counts, scores = vidcom2_counts_and_scores(x, g, budget, self.config)
        # rank of each token within its frame by increasing score (stable: ties to the earlier token)
        order = torch.sort(scores, dim=1, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(g.per_frame, device=x.device).expand_as(order))
        keep = (rank < counts[:, None]).flatten().nonzero().squeeze(1)
        return Plan(keep)
