"""Running policies over the videos of a batch and checking what they return."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from tokpress.config import budget
from tokpress.patches.base import VideoSpan
from tokpress.patches.deepstack import Deepstack, merged_side_features
from tokpress.patches.layout import Layout
from tokpress.policies.base import InnerTokens, OuterPolicy, Plan, VideoTokens


def check_plan(plan: Plan, promised: int, n: int, where: str) -> Plan:
    """Raise ``RuntimeError`` unless ``plan`` keeps exactly ``promised`` distinct sorted indices of ``n`` tokens."""
    keep = plan.keep
    if keep.dim() != 1 or keep.numel() != promised or keep.dtype != torch.long:
        raise RuntimeError(
            f"{where}: the policy returned {tuple(keep.shape)} {keep.dtype} indices; "
            f"the budget promises {promised} long indices"
        )
    if promised and (keep[0] < 0 or keep[-1] >= n or bool((keep[1:] <= keep[:-1]).any())):
        raise RuntimeError(f"{where}: kept indices must be sorted, distinct and in [0, {n})")
    if plan.features is not None and plan.features.shape[0] != promised:
        raise RuntimeError(f"{where}: {plan.features.shape[0]} replacement features for {promised} kept tokens")
    if plan.marks is not None and (plan.marks.shape != keep.shape or plan.marks.dtype != torch.bool):
        raise RuntimeError(f"{where}: marks must be a [{promised}] bool tensor over the kept tokens")
    return plan


def outer_keep(
    policy: OuterPolicy,
    ratio: float,
    embeds: torch.Tensor,
    spans: list[list[VideoSpan]],
    layout: Layout,
    attention: list[list[torch.Tensor | None]] | None = None,
    family: str = "",
    deepstack: Deepstack | None = None,
    vision_kept: list[list[torch.Tensor]] | None = None,
) -> tuple[list[torch.Tensor], list[tuple], list[list[Plan]], list[tuple[int, torch.Tensor]]]:
    """Plan every video of the batch.

    Args:
        policy: the outer policy.
        ratio: fraction of each video's grid tokens to keep.
        embeds: ``[B, q, D]`` decoder inputs with the video features scattered in.
        spans: per sample, its videos.
        layout: the logical layout (for the padding of each sample).
        attention: per sample and video, the vision-encoder attention ``[N]`` (policies that ask for it).
        family: the adapter's family name, passed on as ``VideoTokens.family``.
        deepstack: the deepstack rows of ``embeds``' positions; merged tokens get merged rows written in.
        vision_kept: per sample and video, the ``[N]`` bool tokens a drop-before-the-encoder vision stage kept.

    Policies with ``needs_question`` get each sample's text after its last video (``VideoTokens.question``).

    Returns:
        per-sample kept positions ``[n_b]``; merges ``(sample, positions, features [k, D], sizes [k])``; the plans
        ``[sample][video]``; the key tokens the plans mark, ``(sample, positions)``.
    """
    keep, replace, plans, marks = [], [], [], []
    questions = question_embeddings(embeds, layout) if policy.needs_question else None
    for b, found in enumerate(spans):
        alive = ~layout.filler[b]
        plans_b = []
        for j, span in enumerate(found):
            n = span.grid.numel
            k = budget(ratio, n)
            att = attention[b][j] if attention is not None else None
            kept = vision_kept[b][j] if vision_kept is not None else None
            at = span.index(embeds.device)[:n]
            contiguous = span.positions is None
            feats = embeds[b, span.start : span.start + n] if contiguous else embeds[b, at]
            question = None if questions is None else questions[b]
            video = VideoTokens(feats, span.grid, b, j, att, family, vision_kept=kept, question=question)
            plan = check_plan(policy.plan(video, k), k, n, f"outer policy {policy.name!r} on sample {b} video {j}")
            if deepstack is not None and plan.features is not None:
                if plan.sides is None:
                    replan = lambda f, v=video, k=k: policy.plan(dataclasses.replace(v, features=f), k)  # noqa: E731
                    plan.sides = merged_side_features(replan, feats, plan, deepstack.rows_of(b, at))
                deepstack.write(b, at[plan.keep], plan.sides)
            alive[at] = False
            alive[at[plan.keep]] = True
            if plan.features is not None or plan.sizes is not None:
                replace.append((b, at[plan.keep], plan.features, plan.sizes))
            if plan.marks is not None:
                marks.append((b, at[plan.keep][plan.marks.to(at.device)]))
            plans_b.append(plan)
        keep.append(alive.nonzero().squeeze(1))
        plans.append(plans_b)
    return keep, replace, plans, marks


def question_embeddings(embeds: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    """Per sample, the ``[q, D]`` rows of ``embeds`` at its real tokens after its last video token."""
    after = layout.after_last_video().to(embeds.device)
    return [embeds[b, after[b]] for b in range(embeds.shape[0])]


def plan_around_marks(
    plan: Callable[[InnerTokens, int], Plan], tokens: InnerTokens, budget: int, marked: torch.Tensor | None
) -> Plan:
    """Run an inner policy's ``plan`` so that the tokens ``marked`` (``[n]`` bool, an earlier stage's
    ``Plan.marks``) survive: they count towards ``budget`` and the policy chooses the rest of it among the unmarked
    tokens. When the marked tokens alone reach the budget, the policy chooses ``budget`` of them.

    Returns:
        A plan over all ``n`` tokens (merged features and sizes of the policy's choice written into their rows;
        the marked tokens unchanged).
    """
    if marked is None or not bool(marked.any()):
        return plan(tokens, budget)
    marked = marked.to(tokens.ordinals.device)
    count = int(marked.sum())
    if count >= budget:  # the key set alone fills the budget: the policy thins it
        pool, fixed, share = marked.nonzero().squeeze(1), marked.new_zeros(0, dtype=torch.long), budget
    else:
        pool, fixed, share = (~marked).nonzero().squeeze(1), marked.nonzero().squeeze(1), budget - count
    sub = check_plan(plan(restrict(tokens, pool), share), share, pool.numel(), "inner policy (around marked tokens)")
    chosen = pool[sub.keep]
    keep = torch.cat([fixed, chosen]).sort().values
    if sub.features is None and sub.sizes is None:
        return Plan(keep)
    rows = torch.searchsorted(keep, chosen)
    features = sizes = None
    if sub.features is not None:
        features = tokens.hidden[keep].to(sub.features.dtype).clone()
        features[rows] = sub.features
    if sub.sizes is not None or tokens.sizes is not None:
        base = tokens.sizes if tokens.sizes is not None else torch.ones(tokens.ordinals.shape[0])
        sizes = base.to(keep.device, torch.float32)[keep].clone()
        if sub.sizes is not None:
            sizes[rows] = sub.sizes.to(sizes.device, torch.float32)
    return Plan(keep, features, sizes)


def restrict(tokens: InnerTokens, rows: torch.Tensor) -> InnerTokens:
    """``tokens`` cut down to the candidates ``rows`` ``[m]`` (sorted), every per-candidate field alike."""
    pick = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
    projections = tokens.projections
    if projections is not None:
        projections = dataclasses.replace(projections, candidates=pick(projections.candidates))
    return dataclasses.replace(
        tokens,
        hidden=pick(tokens.hidden),
        ordinals=pick(tokens.ordinals),
        attention=pick(tokens.attention),
        sizes=pick(tokens.sizes),
        projections=projections,
    )
