"""The hook engine: applies outer and inner plans to any adapted model with forward pre-hooks only.

Hooks (all ``register_forward_pre_hook(with_kwargs=True)``, removed exactly by :meth:`Engine.remove`):

* **base model** — finds the video placeholders of this forward, tells a fresh prompt from a continuation of a
  cache this engine compressed, and repairs what ``generate()`` derives from the (shorter) cache length (P3, P9).
* **language model** (outer stage) — gathers the kept rows of ``inputs_embeds``, ``position_ids`` (original
  positions; Qwen's 4-row text row made compact) and an explicit 2-D mask re-indexed to the physical cache.
* **decoder layers >= K** (inner stages) — at each stage's layer gathers the hidden states; at every such layer
  gathers the shared rotary tables and swaps in one mask rebuilt with ``create_causal_mask(layer_idx=K)``.

Per-prompt facts live in a :class:`Chunk` (one forward) and a :class:`Session` (one KV cache).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

from tokpress.config import TokpressConfig, budget
from tokpress.errors import InputError
from tokpress.patches.attention import ProjectionCapture, apply_rope, last_query_attention
from tokpress.patches.base import Adapter
from tokpress.patches.layout import Layout, gather_seq, pack, shrink
from tokpress.patches.masks import chunk_mask, text_positions
from tokpress.patches.plans import check_plan, outer_keep
from tokpress.policies.base import InnerTokens
from tokpress.registry import get_policy
from tokpress.state import Stats

logger = logging.getLogger("tokpress")


def _has_video_inputs(kwargs: dict) -> bool:
    """Whether this forward carries video features (pixels, or 5.23 ``generate()``'s pre-encoded outputs).

    Placeholder ids without features (e.g. a decode step that sampled the video token id) are plain tokens.
    """
    if kwargs.get("pixel_values_videos") is not None:
        return True
    encoded = kwargs.get("mm_encoder_outputs")
    return isinstance(encoded, dict) and encoded.get("video") is not None


def _sequence_index(position_ids: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, q]`` index of each token in the caller's (uncompressed) sequence, if the positions carry it.

    1-D positions and the text row of Qwen's 4-row form count tokens (less left padding); M-RoPE rows do not.
    """
    if position_ids is None:
        return None
    if position_ids.dim() == 2:
        return position_ids
    return position_ids[0] if position_ids.shape[0] == 4 else None


@dataclass
class Session:
    """State of one KV cache that tokpress has written to."""

    cache: weakref.ref
    masks: list[torch.Tensor | None]  # per segment (decoder input, then each inner stage): full 2-D mask
    logical_len: int = 0  # tokens consumed, counted as the caller counts them (uncompressed)
    next_rope: torch.Tensor | None = None  # [R, B] rotary position of the next token
    next_index: torch.Tensor | None = None  # [B] the caller's sequence index of the next token, where known
    dropped: bool = False  # the outer stage removed tokens, so cache length != logical length

    @property
    def physical_len(self) -> int:
        return 0 if self.masks[0] is None else self.masks[0].shape[1]


@dataclass
class Chunk:
    """State of one forward pass."""

    is_video: torch.Tensor  # [B, q] placeholder positions in the caller's tokens
    continuing: bool
    session: Session | None
    layout: Layout | None = None
    layer_mask: Any = None
    rope: dict = field(default_factory=dict)  # (segment, id(cos)) -> gathered (cos, sin)
    segment: int = 0
    stats: Stats | None = None


class Engine:
    """Installed as ``model.tokpress``: the config, the hooks and the stats of the last prompt (:attr:`last`)."""

    def __init__(self, model: torch.nn.Module, adapter: Adapter, config: TokpressConfig) -> None:
        self.model = model
        self.adapter = adapter
        self.config = config
        self.outer = get_policy("outer", config.outer.policy)(config.outer.options) if config.outer else None
        self.inner = [get_policy("inner", s.policy)(s.options) for s in config.inner]
        self.stage_layers = [s.layer for s in config.inner]
        self.last: Stats | None = None
        self.sync_timing = False  # synchronise CUDA around hook timings (the benchmark turns it on)
        self._captures: dict[int, ProjectionCapture] = {}
        self._handles: list = []
        self._session: Session | None = None
        self._chunk: Chunk | None = None

    def __repr__(self) -> str:
        return f"tokpress.Engine({self.adapter.family}, {self.config})"

    # ---- install / remove ---------------------------------------------------------------------------------------
    def install(self) -> None:
        a = self.adapter
        self._handles += [
            a.base.register_forward_pre_hook(self._on_base, with_kwargs=True),
            a.base.register_forward_hook(self._after_base),
            a.language_model.register_forward_pre_hook(self._on_language_model, with_kwargs=True),
        ]
        if self.inner:
            for i in range(self.stage_layers[0], a.num_layers):
                self._handles.append(
                    a.layers[i].register_forward_pre_hook(partial(self._on_layer, i), with_kwargs=True)
                )
        for s, policy in enumerate(self.inner):
            if policy.needs_attention:
                cap = ProjectionCapture(a.layers[self.stage_layers[s] - 1].self_attn)
                self._handles += cap.install()
                self._captures[s] = cap

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captures.clear()
        self._session = self._chunk = None

    # ---- timing ---------------------------------------------------------------------------------------------------
    def _clock(self, device: torch.device) -> float:
        if self.sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    # ---- base model: what is this forward? --------------------------------------------------------------------------
    def _on_base(self, module, args, kwargs):
        if len(args) > 1:
            logger.warning("tokpress: base model called with %d positional arguments; running uncompressed", len(args))
            self._chunk = None
            return None
        if args:
            kwargs = {**kwargs, "input_ids": args[0]}
        input_ids = kwargs.get("input_ids")
        past = kwargs.get("past_key_values")
        continuing = past is not None and past.get_seq_length() > 0
        session = self._session
        if not continuing:
            session = None
        elif session is None or session.cache() is not past:
            logger.warning("tokpress: a non-empty KV cache it did not fill was passed; running uncompressed")
            self._chunk = None
            return None
        if continuing and session.dropped:
            input_ids = self._continue_session(session, input_ids, kwargs)
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            self._chunk = None
            return None
        if input_ids is None or not _has_video_inputs(kwargs):
            is_video = torch.zeros(ref.shape[:2], dtype=torch.bool, device=ref.device)
        else:
            is_video = input_ids == self.adapter.video_token_id
        self._chunk = Chunk(is_video=is_video, continuing=continuing, session=session)
        return (), kwargs

    def _continue_session(self, session: Session, input_ids, kwargs):
        """Continuation of an outer-compressed cache: undo ``generate()``'s re-feeding (P9), add positions (P3)."""
        if input_ids is None:
            return None
        q_in = input_ids.shape[1]
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        refed = 0
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            refed = session.logical_len - (mask.shape[1] - q_in)
        elif _sequence_index(pos) is not None and session.next_index is not None:
            refed = int(session.next_index[0] - _sequence_index(pos)[0, 0])
        if refed < 0 or refed >= q_in:
            if refed != 0:
                raise InputError(
                    f"cannot continue the compressed cache: {session.logical_len} tokens were consumed but the "
                    f"inputs imply {session.logical_len - refed}; pass the full conversation's attention_mask"
                )
        elif refed:
            for key in ("input_ids", "mm_token_type_ids", "inputs_embeds"):
                if isinstance(kwargs.get(key), torch.Tensor):
                    kwargs[key] = kwargs[key][:, refed:]
            if pos is not None:
                kwargs["position_ids"] = pos[..., refed:]
            input_ids = kwargs["input_ids"]
        if kwargs.get("position_ids") is None and session.next_rope is not None:
            q = input_ids.shape[1]
            rows = session.next_rope[..., None] + torch.arange(q, device=session.next_rope.device)
            kwargs["position_ids"] = self.adapter.positions_for(rows)
        return input_ids

    def _after_base(self, module, args, output) -> None:
        self._chunk = None
        for cap in self._captures.values():
            cap.clear()

    # ---- language model: the outer stage ----------------------------------------------------------------------------
    def _on_language_model(self, module, args, kwargs):
        chunk = self._chunk
        emb = kwargs.get("inputs_embeds")
        if chunk is None or emb is None or chunk.is_video.shape != emb.shape[:2]:
            return None
        t0 = self._clock(emb.device)
        batch, q, _ = emb.shape
        past = kwargs.get("past_key_values")
        use_cache = kwargs.get("use_cache")
        use_cache = self.adapter.text_config.use_cache if use_cache is None else use_cache
        if past is None and use_cache:
            past = kwargs["past_key_values"] = DynamicCache(config=self.adapter.text_config)
        session = chunk.session
        if session is None and past is not None:
            session = chunk.session = Session(weakref.ref(past), [None] * (1 + len(self.inner)))
        self._session = session
        pos = kwargs.get("position_ids")
        given_pos = pos is not None
        if not given_pos:
            start = 0 if past is None else past.get_seq_length()
            pos = torch.arange(start, start + q, device=emb.device).expand(batch, q)
            pos = pos[None].expand(self.adapter.rope_rows, batch, q) if self.adapter.rope_rows > 1 else pos
        rope = self.adapter.rope_view(pos)
        seq_index = _sequence_index(pos) if given_pos else None
        mask = chunk_mask(kwargs.get("attention_mask"), batch, q, chunk.continuing, emb.device)
        layout, spans = self._logical_layout(chunk.is_video, rope if given_pos else None, mask)
        has_video = bool(chunk.is_video.any())
        if has_video:
            chunk.stats = self.last = Stats(num_layers=self.adapter.num_layers, inner_layers=list(self.stage_layers))
            chunk.stats.video_tokens = layout.video_counts()
            chunk.stats.after_inner = [[] for _ in self.inner]
            chunk.stats.seq_tokens = [[] for _ in range(1 + len(self.inner))]
        if has_video and self.outer is not None:
            keep, replace, kept = outer_keep(self.outer, self.config.outer.ratio, emb, spans, layout)
            index, filler = pack(keep)
            emb = shrink(emb, index, filler, replace)
            pos = gather_seq(pos, index, dim=pos.dim() - 1)
            layout = layout.select(index, filler)
            layout.src = torch.arange(index.shape[1], device=emb.device).expand_as(index)
            chunk.stats.kept["outer"] = kept
            if session is not None:
                session.dropped |= index.shape[1] < q or bool(filler.any())
        full = layout.mask if not chunk.continuing else torch.cat([session.masks[0].to(mask.device), layout.mask], 1)
        if pos.dim() == 3 and pos.shape[0] == 4:
            pos = pos.clone()
            pos[0] = text_positions(full)[:, -pos.shape[-1] :]
        kwargs.update(inputs_embeds=emb, position_ids=pos, attention_mask=full)
        if session is not None:
            session.masks[0] = full
            session.logical_len += q
            session.next_rope = rope[:, :, -1] + 1
            session.next_index = None if seq_index is None else seq_index[:, -1] + 1
        chunk.layout = layout
        if has_video:
            chunk.stats.after_outer = layout.video_counts()
            chunk.stats.seq_tokens[0] = layout.real_counts()
            if bool(layout.droppable.any()):
                for cap in self._captures.values():
                    cap.active = True
            chunk.stats.compression_s += self._clock(emb.device) - t0
        return args, kwargs

    def _logical_layout(self, is_video: torch.Tensor, rope: torch.Tensor | None, mask: torch.Tensor):
        """Layout of the caller's tokens: video ordinals and protected positions, per sample."""
        batch, q = is_video.shape
        ordinal = torch.full((batch, q), -1, dtype=torch.long, device=is_video.device)
        protected = torch.zeros(batch, q, dtype=torch.bool, device=is_video.device)
        spans = []
        for b in range(batch):
            found = (
                self.adapter.find_videos(is_video[b], None if rope is None else rope[:, b])
                if is_video[b].any()
                else []
            )
            offset = 0
            for span in found:
                ordinal[b, span.start : span.start + span.length] = torch.arange(
                    offset, offset + span.length, device=is_video.device
                )
                protected[b, span.start + span.grid.numel : span.start + span.length] = True
                offset += span.length
            spans.append(found)
        src = torch.arange(q, device=is_video.device).expand(batch, q)
        filler = torch.zeros(batch, q, dtype=torch.bool, device=is_video.device)
        return Layout(src=src, ordinal=ordinal, protected=protected, filler=filler, mask=mask), spans

    # ---- decoder layers: inner stages -----------------------------------------------------------------------------
    def _stage_of(self, layer: int) -> int:
        return sum(1 for k in self.stage_layers if k <= layer) - 1

    def _rope(self, chunk: Chunk, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared rotary tables gathered to the chunk's current layout (cached per segment)."""
        cos, sin = kwargs["position_embeddings"]
        key = (chunk.segment, id(cos))
        if key not in chunk.rope:
            src = chunk.layout.src
            same = src.shape[1] == cos.shape[1] and chunk.segment == 0
            chunk.rope = {key: (cos, sin) if same else (gather_seq(cos, src), gather_seq(sin, src))}
        return chunk.rope[key]

    def _on_layer(self, layer: int, module, args, kwargs):
        chunk = self._chunk
        if chunk is None or chunk.layout is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        stage = self._stage_of(layer)
        if layer == self.stage_layers[stage]:
            hidden = self._run_stage(stage, layer, hidden, chunk, kwargs)
        kwargs["position_embeddings"] = self._rope(chunk, kwargs)
        kwargs["attention_mask"] = chunk.layer_mask
        kwargs["position_ids"] = None
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _run_stage(self, stage: int, layer: int, hidden: torch.Tensor, chunk: Chunk, kwargs) -> torch.Tensor:
        layout, session, past = chunk.layout, chunk.session, kwargs.get("past_key_values")
        if chunk.stats is not None and bool(layout.droppable.any()):
            t0 = self._clock(hidden.device)
            policy, ratio = self.inner[stage], self.config.inner[stage].ratio
            scores = self._scores(stage, chunk, kwargs, past) if policy.needs_attention else None
            keep, replace, kept = [], [], []
            for b in range(hidden.shape[0]):
                cand = layout.droppable[b].nonzero().squeeze(1)
                alive = ~layout.filler[b]
                if cand.numel():
                    tokens = InnerTokens(
                        hidden[b, cand], layout.ordinal[b, cand], None if scores is None else scores[b, cand], layer, b
                    )
                    plan = check_plan(
                        policy.plan(tokens, budget(ratio, cand.numel())),
                        budget(ratio, cand.numel()),
                        cand.numel(),
                        f"inner stage at layer {layer}",
                    )
                    alive[cand] = False
                    alive[cand[plan.keep]] = True
                    if plan.features is not None:
                        replace.append((b, cand[plan.keep], plan.features))
                    kept.append(layout.ordinal[b, cand[plan.keep]].tolist())
                else:
                    kept.append([])
                keep.append(alive.nonzero().squeeze(1))
            index, filler = pack(keep)
            hidden = shrink(hidden, index, filler, replace)
            chunk.layout = layout = layout.select(index, filler)
            chunk.stats.kept[f"inner{stage}"] = kept
            chunk.stats.after_inner[stage] = layout.video_counts()
            chunk.stats.seq_tokens[stage + 1] = layout.real_counts()
            chunk.stats.compression_s += self._clock(hidden.device) - t0
        chunk.segment = stage + 1
        full = layout.mask
        if session is not None:
            if chunk.continuing and session.masks[stage + 1] is not None:
                full = torch.cat([session.masks[stage + 1].to(full.device), full], 1)
            session.masks[stage + 1] = full
        chunk.layer_mask = create_causal_mask(
            config=self.adapter.text_config,
            inputs_embeds=hidden,
            attention_mask=full,
            past_key_values=past,
            position_ids=None,
            layer_idx=layer,
        )
        return hidden

    def _scores(self, stage: int, chunk: Chunk, kwargs, past) -> torch.Tensor:
        """``[B, L]`` attention of the last query at layer K-1 over the chunk's tokens."""
        cap = self._captures[stage]
        if cap.q_last is None or cap.k is None:
            raise RuntimeError("tokpress: layer K-1 projections were not captured; was the forward interrupted?")
        cos, sin = self._rope(chunk, kwargs)
        q_last = apply_rope(cap.q_last[:, :, None], cos[:, -1:], sin[:, -1:])[:, :, 0]
        keys = apply_rope(cap.k, cos, sin)
        key_mask = chunk.layout.mask.bool()
        session = chunk.session
        if chunk.continuing and past is not None and session is not None:
            prev = self.stage_layers[stage] - 1
            seg_mask = session.masks[self._stage_of(prev) + 1]
            past_len = seg_mask.shape[1] - keys.shape[2]
            cached = past.layers[prev].keys[:, :, :past_len].to(keys.device)
            keys = torch.cat([cached.to(keys.dtype), keys], 2)
            key_mask = torch.cat([seg_mask[:, :past_len].bool().to(key_mask.device), key_mask], 1)
        probs = last_query_attention(q_last.to(keys.device), keys, key_mask, cap.scaling)
        return probs[:, -chunk.layout.mask.shape[1] :]
