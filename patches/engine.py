"""The hook engine: applies outer and inner plans to any adapted model with forward pre-hooks only.

Hooks (all ``register_forward_pre_hook(with_kwargs=True)``, removed exactly by :meth:`Engine.remove`):

* **base model** — finds the video placeholders of this forward, tells a fresh prompt from a continuation of a
  cache this engine compressed, and repairs what ``generate()`` derives from the (shorter) cache length (P3, P9).
* **language model** (outer stage) — gathers the kept rows of ``inputs_embeds``, ``position_ids`` (original
  positions; Qwen's 4-row text row made compact) and an explicit 2-D mask re-indexed to the physical cache.
* **decoder layers >= K** (inner stages) — see :mod:`tokpress.patches.inner`.

Per-prompt facts live in a :class:`~tokpress.patches.session.Chunk` (one forward) and a
:class:`~tokpress.patches.session.Session` (one KV cache).
"""

from __future__ import annotations

import collections
import functools
import logging
import time
import weakref
from functools import partial

import torch
from transformers import DynamicCache

from tokpress.config import TokpressConfig
from tokpress.errors import InputError
from tokpress.patches.attention import ProjectionCapture
from tokpress.patches.base import Adapter
from tokpress.patches.cache_arg import get_cache, set_cache
from tokpress.patches.deepstack import EMBEDS_KWARG, MASK_KWARG, Deepstack
from tokpress.patches.inner import InnerRunner
from tokpress.patches.layout import Layout, gather_seq, pack, shrink
from tokpress.patches.masks import chunk_mask, text_positions
from tokpress.patches.plans import outer_keep
from tokpress.patches.session import SESSION_ATTR, Chunk, Segment, Session, has_video_inputs, sequence_index
from tokpress.patches.vision import VisionAttention, split_per_video
from tokpress.patches.vision_drop import PatchDropStage, PatchSequenceSite
from tokpress.patches.vision_stage import VisionEncoderStage
from tokpress.policies.base import PolicyConfig, VideoSlot
from tokpress.policies.vision.kept import VisionKeptPolicy
from tokpress.registry import get_policy
from tokpress.state import Stats

logger = logging.getLogger("tokpress")


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
        self.record_plans = False  # keep every stage's Plan (with merged features) in ``last.plans``
        self.captures: dict[int, ProjectionCapture] = {}
        self.vision: VisionAttention | None = None
        self.vision_stage = _vision_stage(adapter, config, self.clock)
        self._follow_vision = VisionKeptPolicy(PolicyConfig())  # the outer plan of a vision stage used alone
        self.runner = InnerRunner(self)
        self._handles: list = []
        self._generate = None  # the model's generate(), wrapped to refuse assisted decoding
        self.chunk: Chunk | None = None

    def __repr__(self) -> str:
        return f"tokpress.Engine({self.adapter.family}, {self.config})"

    # ---- install / remove -------------------------------------------------------------------------------------
    def install(self) -> None:
        a = self.adapter
        self._wrap_generate()
        self._handles += [
            self.model.register_forward_pre_hook(self._refuse_labels, with_kwargs=True),
            a.base.register_forward_pre_hook(self._on_base, with_kwargs=True),
            a.base.register_forward_hook(self._after_base),
            a.language_model.register_forward_pre_hook(self._on_language_model, with_kwargs=True),
        ]
        first_stage = self.stage_layers[0] if self.inner else a.num_layers
        for i in range(first_stage):  # flash-attention reads gapped positions as packed sequences: hide them
            self._handles.append(a.layers[i].register_forward_pre_hook(self._drop_layer_positions, with_kwargs=True))
        for i in range(first_stage, a.num_layers):
            hook = partial(self.runner.on_layer, i)
            self._handles.append(a.layers[i].register_forward_pre_hook(hook, with_kwargs=True))
        for s, policy in enumerate(self.inner):
            if policy.needs_attention:
                attn = a.layers[a.score_layer(self.stage_layers[s])].self_attn
                cap = ProjectionCapture(attn, all_queries=policy.attention_queries in ("question", "projections"))
                self._handles += cap.install()
                self.captures[s] = cap
        for i in range(min(a.deepstack_layers, a.num_layers)):
            self._handles.append(a.layers[i].register_forward_hook(partial(self._add_deepstack, i)))
        if self.vision_stage is not None:
            self.vision_stage.install()
        if self.outer is not None and self.outer.needs_vision_attention:
            self.vision = VisionAttention(a, self.outer.vision_attention, self.outer.vision_attention_layers)
            self.vision.install()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.captures.clear()
        if self.vision is not None:
            self.vision.remove()
            self.vision = None
        if self.vision_stage is not None:
            self.vision_stage.remove()
        if self.model.__dict__.get("generate") is self._generate:
            del self.model.generate
        self.chunk = None

    #: ``generate()`` arguments that draft and verify several tokens per step and crop the cache back
    ASSISTED = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")

    def _wrap_generate(self) -> None:
        """Refuse assisted decoding up front: it crops the KV cache to the verified tokens, which a compressed cache
        (shorter than the conversation) cannot follow."""
        original = self.model.generate

        @functools.wraps(original)
        def generate(*args, **kwargs):
            given = [k for k in self.ASSISTED if kwargs.get(k) is not None]
            if given:
                raise InputError(
                    f"tokpress does not support assisted decoding ({', '.join(given)}) on a compressed cache; "
                    "tokpress.remove(model) first, or generate without it"
                )
            return original(*args, **kwargs)

        self._generate = self.model.generate = generate

    def _refuse_labels(self, module, args, kwargs):
        """Refuse a loss on compressed inputs: the logits are shorter than ``labels``."""
        if kwargs.get("labels") is not None and (
            has_video_inputs(kwargs, self.adapter.frames_modality) or kwargs.get("mm_encoder_outputs") is not None
        ):
            raise InputError(
                "tokpress drops video tokens, so the logits no longer line up with `labels`: it is for inference; "
                "tokpress.remove(model) (or `with tokpress.compressed(...)` around inference only) before training"
            )
        return None

    def _drop_layer_positions(self, module, args, kwargs):
        """Decoder layers use ``position_ids`` only for flash-attention's packed-sequence detection; after
        compression they are gapped (original positions kept), which that detection would misread."""
        if self.chunk is None or self.chunk.layout is None or kwargs.get("position_ids") is None:
            return None
        kwargs["position_ids"] = None
        return args, kwargs

    def _add_deepstack(self, layer: int, module, args, output):
        """Deepstack rows added to layer ``layer``'s output at the kept tokens (:mod:`tokpress.patches.deepstack`)."""
        chunk = self.chunk
        if chunk is None or chunk.deepstack is None or not chunk.deepstack.pending(layer):
            return None
        return chunk.deepstack.add_to(output, layer)

    def clock(self, device: torch.device) -> float:
        """``perf_counter()``, after a CUDA synchronisation when :attr:`sync_timing` is on."""
        if self.sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    # ---- base model: what is this forward? ----------------------------------------------------------------------
    def _on_base(self, module, args, kwargs):
        self.chunk = None
        if len(args) > 1:
            logger.warning("tokpress: base model called with %d positional arguments; running uncompressed", len(args))
            return None
        if args:
            kwargs = {**kwargs, "input_ids": args[0]}
        input_ids = kwargs.get("input_ids")
        past = get_cache(kwargs)
        continuing = past is not None and past.get_seq_length() > 0
        session = self._session_of(past) if continuing else None
        if continuing and session is None:
            logger.warning("tokpress: a non-empty KV cache it did not fill was passed; running uncompressed")
            return None
        if continuing and session.dropped:
            input_ids = self._continue_session(session, input_ids, kwargs)
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            return None
        if input_ids is None or not has_video_inputs(kwargs, self.adapter.frames_modality):  # decode: no sync
            is_video, has_video = torch.zeros(ref.shape[:2], dtype=torch.bool, device=ref.device), False
        else:
            is_video = input_ids == self.adapter.video_token_id
            has_video = bool(is_video.any())
        self.chunk = Chunk(is_video=is_video, has_video=has_video, continuing=continuing, session=session)
        if has_video and self.adapter.wants_video_counts:
            counts = self.adapter.video_token_counts(kwargs)
            if counts is not None and sum(counts) != int(is_video.sum()):  # e.g. beams repeat samples: not per row
                logger.debug("tokpress: per-video token counts do not cover the batch; reading videos from gaps")
                counts = None
            self.chunk.video_counts = counts
        if has_video and self.adapter.wants_ids:
            self.chunk.ids = input_ids
        return (), kwargs

    def _session_of(self, past) -> Session | None:
        """The session of a cache this engine filled, or of a copy of one (``copy.deepcopy`` copies the session with
        the cache: a query-agnostic plan then serves every question asked on a copy of the same video prefix)."""
        session = getattr(past, SESSION_ATTR, None)
        if not isinstance(session, Session) or session.owner is None or session.owner() is not self:
            return None
        if session.cache() is not past:  # the copy's own session still points at the original cache
            session.cache = weakref.ref(past)
        return session

    def _continue_session(self, session: Session, input_ids, kwargs):
        """Continuation of a cache shorter than what the caller fed: undo ``generate()``'s re-feeding (P9) and
        supply the positions a manual loop leaves to the model (P3)."""
        if input_ids is None:
            return None
        q_in = input_ids.shape[1]
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        refed = 0
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            refed = session.logical_len - (mask.shape[1] - q_in)
        elif sequence_index(pos) is not None and session.next_index is not None:
            refed = int(session.next_index[0] - sequence_index(pos)[0, 0])
        if refed != 0 and not 0 < refed < q_in:
            raise InputError(
                f"cannot continue the compressed cache: {session.logical_len} tokens were consumed but the "
                f"inputs imply {session.logical_len - refed}; pass the full conversation's attention_mask"
            )
        if refed:
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
        self.chunk = None
        if self.vision is not None:  # image-only forwards of families that encode frames as images
            self.vision.collected.clear()
        for cap in self.captures.values():
            cap.clear()

    # ---- language model: the outer stage ------------------------------------------------------------------------
    def _on_language_model(self, module, args, kwargs):
        chunk = self.chunk
        emb = kwargs.get("inputs_embeds")
        if chunk is None or emb is None or chunk.is_video.shape != emb.shape[:2]:
            return None
        t0 = self.clock(emb.device)
        batch, q, _ = emb.shape
        past = get_cache(kwargs)
        use_cache = kwargs.get("use_cache")
        use_cache = self.adapter.text_config.use_cache if use_cache is None else use_cache
        if past is None and use_cache:
            past = DynamicCache(config=self.adapter.text_config)
            set_cache(kwargs, past)
        session = chunk.session
        if session is None and past is not None:
            session = chunk.session = Session(
                weakref.ref(past),
                [None] * (1 + len(self.inner)),
                owner=weakref.ref(self),
                memory=[{} for _ in range(batch)],
            )
            setattr(past, SESSION_ATTR, session)
        pos = kwargs.get("position_ids")
        given_pos = pos is not None
        if not given_pos:
            start = 0 if past is None else past.get_seq_length()
            pos = torch.arange(start, start + q, device=emb.device).expand(batch, q)
            pos = pos[None].expand(self.adapter.rope_rows, batch, q) if self.adapter.rope_rows > 1 else pos
        rope = self.adapter.rope_view(pos)
        seq_index = sequence_index(pos) if given_pos else None
        mask = chunk_mask(kwargs.get("attention_mask"), batch, q, chunk.continuing, emb.device)
        layout, spans = self._logical_layout(chunk, rope if given_pos else None, mask)
        has_video = chunk.has_video
        deepstack = None
        if has_video and kwargs.get(EMBEDS_KWARG) is not None and kwargs.get(MASK_KWARG) is not None:
            deepstack = Deepstack.from_kwargs(kwargs[MASK_KWARG], kwargs[EMBEDS_KWARG])
            kwargs[MASK_KWARG] = kwargs[EMBEDS_KWARG] = None  # added by _add_deepstack, to the kept tokens
        if has_video:
            chunk.stats = self.last = Stats(num_layers=self.adapter.num_layers, inner_layers=list(self.stage_layers))
            chunk.stats.video_tokens = layout.video_counts()
            chunk.stats.after_inner = [[] for _ in self.inner]
            chunk.stats.seq_tokens = [[] for _ in range(1 + len(self.inner))]
            if self.vision_stage is not None:
                self.vision_stage.report(chunk.stats)
            if session is not None:
                session.slots = chunk.slots
        outer, ratio, kept = self._outer_plan(has_video, spans)
        if kept is not None:
            chunk.stats.kept["vision"] = [[m.nonzero().squeeze(1).tolist() for m in videos] for videos in kept]
        if has_video and outer is not None:
            attention = self.vision.take(spans, chunk.is_video) if self.vision is not None else None
            keep, replace, plans, marks = outer_keep(
                outer, ratio, emb, spans, layout, attention, self.adapter.family, deepstack, kept
            )
            index, filler = pack(keep)
            deepstack = None if deepstack is None else deepstack.select(index, filler)
            emb = shrink(emb, index, filler, replace)
            pos = gather_seq(pos, index, dim=pos.dim() - 1)
            layout = layout.with_sizes(replace).with_marks(marks).select(index, filler)
            layout.src = torch.arange(index.shape[1], device=emb.device).expand_as(index)
            chunk.stats.kept["outer"] = [[p.keep.tolist() for p in videos] for videos in plans]
            if self.record_plans:
                chunk.stats.plans["outer"] = plans
            if session is not None:
                session.dropped |= index.shape[1] < q or bool(filler.any())
        segment = Segment.of(layout)
        if chunk.continuing:
            segment = session.segments[0].extend(layout)
        if pos.dim() == 3 and pos.shape[0] == 4:
            pos = pos.clone()
            pos[0] = text_positions(segment.mask)[:, -pos.shape[-1] :]
        kwargs.update(inputs_embeds=emb, position_ids=pos, attention_mask=segment.mask)
        if session is not None:
            session.segments[0] = segment
            session.logical_len += q
            session.next_rope = rope[:, :, -1] + 1
            session.next_index = None if seq_index is None else seq_index[:, -1] + 1
        chunk.layout = chunk.layouts[0] = layout
        chunk.deepstack = deepstack
        if has_video:
            chunk.stats.after_outer = layout.video_counts()
            chunk.stats.seq_tokens[0] = layout.real_counts()
            chunk.stats.compression_s += self.clock(emb.device) - t0
        if has_video and bool(layout.droppable.any()) or self.runner.decode_stages:
            for cap in self.captures.values():
                cap.active = True
        return args, kwargs

    def _outer_plan(self, has_video: bool, spans) -> tuple:
        """``(policy, ratio, vision_kept)`` of this chunk's outer stage: the outer policy, or with none the kept set
        of a drop-before-the-encoder vision stage (``None`` policy: no outer stage)."""
        stage = self.vision_stage
        follows = has_video and getattr(stage, "passes_kept", False)
        kept = split_per_video(stage.take_kept(), spans) if follows else None
        if self.outer is not None:
            return self.outer, self.config.outer.ratio, kept
        if kept is None:
            return None, None, None
        return self._follow_vision, self.config.vision.ratio, kept

    def _logical_layout(self, chunk: Chunk, rope: torch.Tensor | None, mask: torch.Tensor):
        """Layout of the caller's tokens: video ordinals and protected positions, per sample; the videos."""
        is_video = chunk.is_video
        batch, q = is_video.shape
        device = is_video.device
        ordinal = torch.full((batch, q), -1, dtype=torch.long, device=device)
        protected = torch.zeros(batch, q, dtype=torch.bool, device=device)
        spans, slots = [[] for _ in range(batch)], [() for _ in range(batch)]
        extra = {}
        if self.adapter.wants_video_counts:
            counts = chunk.video_counts
            extra["counts"] = None if counts is None else collections.deque(counts)
        for b in range(batch if chunk.has_video else 0):
            if self.adapter.wants_ids:
                extra["ids"] = chunk.ids[b]
            found = (
                self.adapter.find_videos(is_video[b], None if rope is None else rope[:, b], **extra)
                if is_video[b].any()
                else []
            )
            offset, sample_slots = 0, []
            for span in found:
                at = span.index(device)
                ordinal[b, at] = torch.arange(offset, offset + span.length, device=device)
                protected[b, at[span.grid.numel :]] = True
                sample_slots.append(VideoSlot(offset, span.grid, span.extra))
                offset += span.length
            spans[b], slots[b] = found, tuple(sample_slots)
        chunk.slots = slots
        chunk.has_video = chunk.has_video and any(spans)  # placeholders of images only are no video chunk
        src = torch.arange(q, device=device).expand(batch, q)
        filler = torch.zeros(batch, q, dtype=torch.bool, device=device)
        size = torch.ones(batch, q, device=device)
        return Layout(src=src, ordinal=ordinal, protected=protected, filler=filler, mask=mask, size=size), spans


def _vision_stage(adapter: Adapter, config: TokpressConfig, clock):
    """The vision stage the adapter's site takes: dropping before a variable-length encoder or merging inside."""
    if config.vision is None:
        return None
    if isinstance(adapter.vision_stage_site(), PatchSequenceSite):
        return PatchDropStage(adapter, config.vision, clock)
    return VisionEncoderStage(adapter, config.vision, clock)
