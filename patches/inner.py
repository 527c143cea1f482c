"""Inner-LLM stages: forward pre-hooks on decoder layers ``>= K``.

At a stage's layer the hook scores and drops (or merges) visual tokens of the hidden states; at every layer from
the first stage on it gathers the shared rotary tables to the surviving tokens, sets ``position_ids=None`` and
swaps in one mask rebuilt with ``create_causal_mask(layer_idx=K)``, so layers ``>= K`` cache fewer tokens by
construction. Decode-time stages (DyCoke) instead choose, at every decode step, which cached visual tokens layers
``>= K`` may attend to (a mask; the cache keeps every token).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import create_causal_mask, create_recurrent_attention_mask

from tokpress.config import budget
from tokpress.errors import InputError
from tokpress.patches.attention import apply_rope, last_query_attention, question_attention
from tokpress.patches.cache_arg import CACHE_KWARG, get_cache
from tokpress.patches.deepstack import merged_side_features
from tokpress.patches.layout import gather_seq, pack, shrink
from tokpress.patches.plans import check_plan, plan_around_marks
from tokpress.patches.session import Chunk, Segment
from tokpress.policies.base import InnerTokens, Projections

if TYPE_CHECKING:
    from tokpress.patches.engine import Engine


class InnerRunner:
    """Runs the engine's inner stages."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.decode_stages = [s for s, p in enumerate(engine.inner) if p.decode]
        self.last_prefill = max((s for s, p in enumerate(engine.inner) if not p.decode), default=-1)
        self.linear = set(engine.adapter.linear_layers())

    def stage_of(self, layer: int) -> int:
        """Index of the last stage at or before ``layer`` (-1 before the first)."""
        return sum(1 for k in self.engine.stage_layers if k <= layer) - 1

    def rope(self, chunk: Chunk, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared rotary tables gathered to the chunk's current layout (cached per segment)."""
        cos, sin = kwargs["position_embeddings"]
        key = (chunk.segment, id(cos))
        if key not in chunk.rope:
            src = chunk.layout.src
            same = src.shape[1] == cos.shape[1] and chunk.segment == 0
            chunk.rope = {key: (cos, sin) if same else (gather_seq(cos, src), gather_seq(sin, src))}
        return chunk.rope[key]

    # ---- the hook -------------------------------------------------------------------------------------------
    def on_layer(self, layer: int, module, args, kwargs):
        chunk = self.engine.chunk
        if chunk is None or chunk.layout is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        stage = self.stage_of(layer)
        if layer == self.engine.stage_layers[stage]:
            hidden = self._run_stage(stage, layer, hidden, chunk, kwargs)
        kwargs["position_embeddings"] = self.rope(chunk, kwargs)
        kwargs["attention_mask"] = chunk.linear_mask if layer in self.linear else chunk.layer_mask
        kwargs["position_ids"] = None
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _run_stage(self, stage: int, layer: int, hidden: torch.Tensor, chunk: Chunk, kwargs) -> torch.Tensor:
        engine, session, past = self.engine, chunk.session, get_cache(kwargs)
        policy = engine.inner[stage]
        pruned, pre_len = None, chunk.layout.mask.shape[1]
        if chunk.stats is not None and not policy.decode and bool(chunk.layout.droppable.any()):
            t0 = engine.clock(hidden.device)
            hidden, pruned = self._prune(stage, layer, hidden, chunk, kwargs, past)
            chunk.stats.compression_s += engine.clock(hidden.device) - t0
        if chunk.stats is not None:
            chunk.stats.after_inner[stage] = chunk.layout.video_counts()
            chunk.stats.seq_tokens[stage + 1] = chunk.layout.real_counts()
        chunk.segment = stage + 1
        segment = Segment.of(chunk.layout)
        if session is not None:
            if chunk.continuing and session.segments[stage + 1] is not None:
                segment = session.segments[stage + 1].extend(chunk.layout)
            session.segments[stage + 1] = segment
            if pruned is not None and policy.prune_earlier_kv:
                self._prune_earlier_kv(stage, layer, pruned, pre_len, segment, chunk, past)
            if policy.cut_kv_to_final and stage == self.last_prefill and chunk.stats is not None and stage > 0:
                self._cut_kv_to_final(stage, chunk, past)
        mask = segment.mask
        if policy.decode and chunk.continuing and chunk.stats is None:
            mask = self._decode_visibility(stage, layer, segment, chunk, kwargs, past)
        mask_args = dict(config=engine.adapter.text_config, inputs_embeds=hidden, attention_mask=mask)
        # sized by the first attention layer from K on (a linear layer's cache has no length to size it by)
        sized_by = next((i for i in range(layer, engine.adapter.num_layers) if i not in self.linear), None)
        chunk.layer_mask = None
        if sized_by is not None:
            chunk.layer_mask = create_causal_mask(
                **mask_args, **{CACHE_KWARG: past}, position_ids=None, layer_idx=sized_by
            )
        if self.linear:  # the 2-D padding mask of the chunk's tokens (None when there is none), as the model makes it
            chunk.linear_mask = create_recurrent_attention_mask(**mask_args, **{CACHE_KWARG: past})
        return hidden

    # ---- prefill: drop or merge -------------------------------------------------------------------------------
    def _prune(self, stage, layer, hidden, chunk, kwargs, past):
        engine, layout = self.engine, chunk.layout
        policy, ratio = engine.inner[stage], engine.config.inner[stage].ratio
        scores = projections = None
        if policy.needs_attention and policy.attention_queries == "projections":
            projections = self.projections(stage, chunk, kwargs, past)
        elif policy.needs_attention:
            source = self.score_layout(stage, chunk)
            scores = self.scores(stage, chunk, kwargs, past)[:, -source.mask.shape[1] :]
            scores = self.to_layout(scores, source, layout)
        keep, replace, kept, plans = [], [], [], []
        deepstack = chunk.deepstack if chunk.deepstack is not None and chunk.deepstack.pending(layer) else None
        for b in range(hidden.shape[0]):
            cand = layout.droppable[b].nonzero().squeeze(1)
            alive = ~layout.filler[b]
            kept_b: list[int] = []
            plan = None
            if cand.numel():
                n, k = cand.numel(), budget(ratio, cand.numel())
                tokens = InnerTokens(
                    hidden[b, cand],
                    layout.ordinal[b, cand],
                    None if scores is None else scores[b, cand],
                    layer,
                    b,
                    videos=chunk.slots[b] if chunk.slots else (),
                    sizes=layout.size[b, cand],
                    projections=None if projections is None else projections(b, cand),
                )
                marked = None if layout.marked is None else layout.marked[b, cand]
                plan = plan_around_marks(policy.plan, tokens, k, marked)
                plan = check_plan(plan, k, n, f"inner policy {policy.name!r} at layer {layer}")
                if deepstack is not None and plan.features is not None:
                    if plan.sides is None:
                        replan = lambda h, t=tokens, k=k, m=marked: plan_around_marks(  # noqa: E731
                            policy.plan, dataclasses.replace(t, hidden=h), k, m
                        )
                        plan.sides = merged_side_features(replan, tokens.hidden, plan, deepstack.rows_of(b, cand))
                    deepstack.write(b, cand[plan.keep], plan.sides)
                alive[cand] = False
                alive[cand[plan.keep]] = True
                if plan.features is not None or plan.sizes is not None:
                    replace.append((b, cand[plan.keep], plan.features, plan.sizes))
                kept_b = layout.ordinal[b, cand[plan.keep]].tolist()
            kept.append(kept_b)
            plans.append(plan)
            keep.append(alive.nonzero().squeeze(1))
        index, filler = pack(keep)
        hidden = shrink(hidden, index, filler, replace)
        chunk.layout = layout.with_sizes(replace).select(index, filler)
        chunk.deepstack = None if deepstack is None else deepstack.select(index, filler)
        chunk.layouts[stage + 1] = chunk.layout
        chunk.indices[stage] = index
        chunk.stats.kept[f"inner{stage}"] = kept
        if engine.record_plans:
            chunk.stats.plans[f"inner{stage}"] = plans
        return hidden, index

    def _prune_earlier_kv(self, stage, layer, index, pre_len, segment, chunk, past) -> None:
        """Cut the cache of layers < K to the kept set too (PruneVid): they then hold what layers >= K hold."""
        if stage != 0:
            raise InputError("earlier-KV pruning is only supported at a policy's first stage")
        linear = self.linear  # a recurrent state has no token axis: those layers keep what they have absorbed
        layers = [cl for i, cl in enumerate(past.layers[:layer]) if i not in linear]
        if not all(type(cl) is DynamicLayer for cl in layers):
            raise InputError(
                "this method cuts the KV cache of the layers before K, which needs the default "
                "DynamicCache; do not pass cache_implementation='static'"
            )
        session = chunk.session
        past_len = session.segments[0].length - pre_len
        for cl in layers:
            cut = self._earlier_index(index, past_len, cl.keys.device)
            at = cut[:, None, :, None].expand(-1, cl.keys.shape[1], -1, cl.keys.shape[3])
            cl.keys, cl.values = cl.keys.gather(2, at), cl.values.gather(2, at)
        session.segments[0] = segment
        session.dropped = True

    def _cut_kv_to_final(self, last: int, chunk, past) -> None:
        """MustDrop's output-aware cache: the layers from the first stage up to the last one (segments ``1 ..
        last``) keep, of this chunk's tokens, only those the last stage left; their past is untouched."""
        session, engine = chunk.session, self.engine
        final = chunk.layout
        index = None  # [B, L_final]: positions of the final tokens in segment s's chunk layout
        for s in range(last, 0, -1):
            step = chunk.indices.get(s)
            if step is not None:
                index = step if index is None else step.gather(1, index.to(step.device))
            if index is None:  # no stage from s on dropped anything
                continue
            layers = [i for i in range(engine.stage_layers[s - 1], engine.stage_layers[s]) if i not in self.linear]
            caches = [past.layers[i] for i in layers]
            if not all(type(cl) is DynamicLayer for cl in caches):
                raise InputError(
                    "this method cuts the KV cache of the layers between its stages, which needs the default "
                    "DynamicCache; do not pass cache_implementation='static'"
                )
            held = session.segments[s]
            past_len = held.length - chunk.layouts[s].mask.shape[1]
            for cl in caches:
                cut = self._earlier_index(index, past_len, cl.keys.device)
                at = cut[:, None, :, None].expand(-1, cl.keys.shape[1], -1, cl.keys.shape[3])
                cl.keys, cl.values = cl.keys.gather(2, at), cl.values.gather(2, at)
            session.segments[s] = held.head(past_len).extend(final)

    @staticmethod
    def _earlier_index(index: torch.Tensor, past_len: int, device) -> torch.Tensor:
        """Cache index ``[B, past + L']``: the past untouched, then the kept chunk positions."""
        past = torch.arange(past_len, device=device).expand(index.shape[0], past_len)
        return torch.cat([past, index.to(device) + past_len], 1)

    # ---- decode: choose what layers >= K may see -----------------------------------------------------------------
    def _decode_visibility(self, stage, layer, segment: Segment, chunk, kwargs, past) -> torch.Tensor:
        engine, session = self.engine, chunk.session
        policy, ratio = engine.inner[stage], engine.config.inner[stage].ratio
        scores = self.scores(stage, chunk, kwargs, past)
        mask = segment.mask.clone()
        for b in range(mask.shape[0]):
            cand = segment.droppable[b].nonzero().squeeze(1)
            if not cand.numel():
                continue
            n, k = cand.numel(), budget(ratio, cand.numel())
            tokens = InnerTokens(
                scores.new_zeros(n, 0),
                segment.ordinal[b, cand],
                scores[b, cand],
                layer,
                b,
                videos=session.slots[b] if session.slots else (),
                memory=session.memory[b],
            )
            marked = None if segment.marked is None else segment.marked[b, cand]
            plan = plan_around_marks(policy.plan, tokens, k, marked)
            plan = check_plan(plan, k, n, f"decode policy {policy.name!r} at layer {layer}")
            hidden = torch.ones(n, dtype=torch.bool, device=mask.device)
            hidden[plan.keep] = False
            mask[b, cand[hidden]] = 0
        return mask

    # ---- attention of layer K-1 -----------------------------------------------------------------------------
    def score_layout(self, stage: int, chunk: Chunk):
        """The layout of the tokens the score layer of ``stage`` saw: on a hybrid model it may lie before an earlier
        stage, whose drops the current layout already reflects."""
        prev = self.engine.adapter.score_layer(self.engine.stage_layers[stage])
        return chunk.layouts.get(self.stage_of(prev) + 1, chunk.layout)

    def _score_inputs(self, stage: int, chunk: Chunk, kwargs, past):
        """The score layer's rotated keys ``[B, KV, S, d]`` (cached past first), their mask ``[B, S]``, the past
        length, the layout of the chunk's tokens it saw and that layout's rotary tables."""
        engine = self.engine
        cap = engine.captures[stage]
        if cap.q is None or cap.k is None:
            raise RuntimeError("tokpress: layer K-1 projections were not captured; was the forward interrupted?")
        layout = self.score_layout(stage, chunk)
        if layout is chunk.layout:
            cos, sin = self.rope(chunk, kwargs)
        else:
            cos, sin = (gather_seq(t, layout.src) for t in kwargs["position_embeddings"])
        keys = apply_rope(cap.k, cos, sin)
        key_mask = layout.mask.bool()
        past_len = 0
        session = chunk.session
        if chunk.continuing and past is not None and session is not None:
            prev = engine.adapter.score_layer(engine.stage_layers[stage])
            seg = session.segments[self.stage_of(prev) + 1]
            past_len = seg.length - keys.shape[2]
            cached = past.layers[prev].keys[:, :, :past_len].to(keys.device)
            keys = torch.cat([cached.to(keys.dtype), keys], 2)
            key_mask = torch.cat([seg.mask[:, :past_len].bool().to(key_mask.device), key_mask], 1)
        return cap, keys, key_mask, past_len, layout, cos, sin

    def scores(self, stage: int, chunk: Chunk, kwargs, past) -> torch.Tensor:
        """``[B, S]`` attention at the score layer (K-1, or the last attention layer before K) over every key it
        sees (the cached past, then this chunk's tokens as :meth:`score_layout` lays them out)."""
        cap, keys, key_mask, past_len, layout, cos, sin = self._score_inputs(stage, chunk, kwargs, past)
        if not cap.all_queries:
            q = apply_rope(cap.q.transpose(1, 2), cos[:, -1:], sin[:, -1:])[:, :, 0]
            return last_query_attention(q.to(keys.device), keys, key_mask, cap.scaling)
        return self._question_scores(cap, layout, cos, sin, keys, key_mask, past_len)

    def projections(self, stage: int, chunk: Chunk, kwargs, past):
        """``projections(b, cand)`` -> the :class:`Projections` of sample ``b`` whose candidates are the tokens at
        ``cand`` (positions in the chunk's current layout)."""
        cap, keys, key_mask, past_len, layout, cos, sin = self._score_inputs(stage, chunk, kwargs, past)
        question = layout.after_last_video()
        real = layout.mask.bool() & ~layout.filler
        if self.engine.inner[stage].projection_rows == "question":  # the text after the video and the last token
            positions = torch.arange(real.shape[1], device=real.device)
            last = torch.where(real, positions, -1).amax(1, keepdim=True)
            real = real & (question | (positions == last))
        where = self._positions_in(layout, chunk.layout)

        def of(b: int, cand: torch.Tensor) -> Projections:
            rows = real[b].nonzero().squeeze(1)
            at = rows.to(cap.q.device)
            q = apply_rope(cap.q[b : b + 1, at].transpose(1, 2), cos[b : b + 1, at], sin[b : b + 1, at])
            return Projections(
                queries=q.transpose(1, 2)[0],
                query_index=rows + past_len,
                question=question[b, rows],
                keys=keys[b],
                key_valid=key_mask[b],
                candidates=where[b, cand] + past_len,
                scaling=cap.scaling,
            )

        return of

    @staticmethod
    def _positions_in(source, target) -> torch.Tensor:
        """``[B, L_t]``: for every token of layout ``target``, its position in layout ``source`` (which holds it)."""
        at = torch.arange(source.src.shape[1], device=source.src.device).expand_as(source.src)
        return InnerRunner.to_layout(at, source, target)

    @staticmethod
    def to_layout(scores: torch.Tensor, source, target) -> torch.Tensor:
        """``scores`` ``[B, L_s]`` of the tokens of layout ``source``, read at the tokens of layout ``target``
        ``[B, L_t]`` (a subset of them; fillers of ``target`` get an arbitrary value)."""
        if source is target:
            return scores
        width = int(max(source.src.max(), target.src.max())) + 1
        where = torch.zeros(scores.shape[0], width, dtype=torch.long, device=scores.device)
        real = ~source.filler
        at = torch.arange(source.src.shape[1], device=scores.device).expand_as(source.src)
        where.scatter_(1, source.src.masked_fill(~real, width - 1), at.masked_fill(~real, 0))
        return scores.gather(1, where.gather(1, target.src.to(scores.device)))

    @staticmethod
    def _question_scores(cap, layout, cos, sin, keys, key_mask, past_len) -> torch.Tensor:
        """Max attention of each sample's question (real text after its last video token) over the keys."""
        q_all = apply_rope(cap.q.transpose(1, 2), cos, sin).transpose(1, 2)  # [B, L, H, d]
        question = layout.after_last_video()
        picks = [row.nonzero().squeeze(1) for row in question]
        width = max(1, max(p.numel() for p in picks))
        index = torch.zeros(len(picks), width, dtype=torch.long, device=question.device)
        valid = torch.zeros(len(picks), width, dtype=torch.bool, device=question.device)
        for b, p in enumerate(picks):
            index[b, : p.numel()], valid[b, : p.numel()] = p, True
        queries = gather_seq(q_all, index)
        return question_attention(queries, valid, index + past_len, keys, key_mask, cap.scaling)
