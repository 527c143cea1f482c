"""The training forward pass of :mod:`tokpress.eval.synth.train`: one vision pass per video, video tokens dropped
per row, and the answer loss.

**Video-token drop augmentation (equivalent on the inputs, not through the tokpress hooks).** From step
``--drop-start`` on, each row is, with probability ``--token-drop``, given a random keep ratio
``r ~ U[--min-keep, 1)`` and keeps ``round(r * 128)`` of its video tokens, chosen by one of ``--drop-patterns``:
``random`` (a uniform subset: what ``tokpress.apply(model, outer="random")`` keeps), ``frames`` (whole temporal
grids) or ``cells`` (the same spatial cells in every temporal grid). The drop is applied the way tokpress's outer
stage applies it: the kept rows of ``inputs_embeds`` and of the 3-row M-RoPE ``position_ids`` are gathered, so
kept tokens keep their original positions, and the sequence is shortened (the LLM never sees the dropped tokens).
It is done in this script's forward rather than through ``tokpress.apply`` because the augmentation needs a
different ratio and subset per row inside one batch (a tokpress patch has one ratio and re-seeds its ``random``
policy identically for every video), and because tokpress's hooks are written for inference.
``tests/test_train_synth.py`` checks that this path gives the same logits as ``model(...)`` unpatched and as the
model patched with ``tokpress.apply(outer="random")`` for the same kept set.

"""

from __future__ import annotations

from typing import Any

import torch


class RopeCache:
    """M-RoPE position ids of a row, from the model's own ``get_rope_index``, cached by row layout."""

    def __init__(self, model: Any) -> None:
        self.model, self.cache = model, {}

    def positions(self, batch: dict[str, torch.Tensor], video_id: int) -> torch.Tensor:
        """``[3, R, L]`` position ids of the (right-padded) rows of ``batch`` (padding: 0)."""
        ids, lengths = batch["input_ids"], batch["lengths"]
        out = torch.zeros((3, *ids.shape), dtype=torch.long)
        for r in range(ids.shape[0]):
            n = int(lengths[r])
            row = ids[r, :n]
            is_video = row == video_id
            first = int(is_video.nonzero()[0, 0])
            v = int(batch["row_video"][r])
            grid = batch["video_grid_thw"][v]
            spg = float(batch["second_per_grid_ts"][v])
            key = (n, first, int(is_video.sum()), tuple(grid.tolist()), spg)
            if key not in self.cache:
                types = is_video.long()[None] * 2
                pos, _ = self.model.model.get_rope_index(
                    row[None], types, video_grid_thw=grid[None], second_per_grid_ts=torch.tensor([spg])
                )
                self.cache[key] = pos[:, 0]
            out[:, r, :n] = self.cache[key]
        return out


def forward_rows(
    model: Any,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    capture: dict[str, Any] | None = None,
    capture_layer: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the rows of ``batch`` through the model with one vision pass per video and video tokens dropped.

    Equivalent to ``model(input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
    second_per_grid_ts)`` per row, except that the tokens where ``keep`` is False are removed before the first
    decoder layer, kept tokens keeping their original M-RoPE positions (what tokpress's outer stage does).

    Returns:
        ``hidden`` [R, K, D] (final-norm hidden states of the kept tokens, right-padded), ``index`` [R, K] (the
        original position of each kept token) and ``valid`` [R, K]. A ``capture`` dict receives what
        :class:`AuxHeads` reads: ``video_features`` [V * N, D], ``layer_hidden`` [R, K, D] (output of decoder layer
        ``capture_layer``), ``video_ordinal`` [R, K] (which video token each kept token is; -1: text),
        ``video_kept`` [R, K] and ``row_video`` [R].
    """
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    keep = (batch["keep"] if keep is None else keep).to(device)
    video_id = model.config.video_token_id
    embeds = model.get_input_embeddings()(ids)
    pixels = batch["pixel_values_videos"].to(device, model.model.visual.dtype)
    grid = batch["video_grid_thw"].to(device)
    feats = model.model.get_video_features(pixels, grid, return_dict=True).pooler_output
    row_video = batch["row_video"].tolist()
    row_feats = torch.cat([feats[v] for v in row_video]).to(embeds.dtype)
    embeds = embeds.masked_scatter((ids == video_id)[..., None], row_feats)
    counts = keep.sum(1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    width = int(counts.max())
    index = order[:, :width]
    valid = torch.arange(width, device=device)[None] < counts[:, None]
    embeds = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
    pos = positions.to(device).gather(2, index[None].expand(3, -1, -1))
    out = model.model.language_model(
        inputs_embeds=embeds,
        attention_mask=valid.long(),
        position_ids=pos,
        use_cache=False,
        output_hidden_states=capture is not None,
    )
    if capture is not None:
        is_video = ids == video_id
        ordinal = torch.where(is_video, is_video.long().cumsum(1) - 1, -1).gather(1, index)
        capture.update(
            video_features=torch.cat(list(feats)),
            layer_hidden=out.hidden_states[capture_layer + 1],
            layer_hidden_next=out.hidden_states[capture_layer + 2]
            if capture_layer + 2 < len(out.hidden_states)
            else None,
            video_ordinal=ordinal,
            video_kept=(ordinal >= 0) & valid,
            row_video=batch["row_video"].to(device),
            index=index,
            valid=valid,
        )
    return out.last_hidden_state, index, valid


def answer_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    first_weight: float = 1.0,
    capture: dict[str, Any] | None = None,
    capture_layer: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over rows of the per-row weighted mean cross-entropy of the answer tokens (the first answer token
    weighted ``first_weight``, the rest 1); also the per-row losses (detached).

    With character-level answers the first token carries the decision and the rest are nearly free: a CPU trial
    (eval/results/train-synth-cpu-trial) saw the plain mean fall to 0.29 with option accuracy at chance.
    """
    hidden, index, valid = forward_rows(
        model, batch, positions, keep=keep, capture=capture, capture_layer=capture_layer
    )
    if capture is not None and "word_ids" in capture:  # answer-word logits at the kept video tokens
        video = hidden[capture["video_kept"]]
        weight = model.lm_head.weight
        capture["word_logits"] = {name: video @ weight[ids].T for name, ids in capture["word_ids"].items()}
    device = hidden.device
    ids = batch["input_ids"].to(device).gather(1, index)
    is_answer = batch["answer_mask"].to(device).gather(1, index) & valid
    target = is_answer[:, 1:]  # token j + 1 is predicted from hidden state j
    logits = model.lm_head(hidden[:, :-1][target]).float()
    ce = torch.nn.functional.cross_entropy(logits, ids[:, 1:][target], reduction="none")
    rows = torch.arange(ids.shape[0], device=device)[:, None].expand_as(target)[target]
    first = batch["answer_first"].to(device).gather(1, index)[:, 1:][target]
    weight = torch.where(first, torch.full_like(ce, first_weight), torch.ones_like(ce))
    per_row = torch.zeros(ids.shape[0], device=device).index_add(0, rows, ce * weight)
    per_row = per_row / torch.zeros(ids.shape[0], device=device).index_add(0, rows, weight).clamp(min=1e-6)
    return per_row.mean(), per_row.detach()
