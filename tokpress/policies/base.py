"""The contract between tokpress's engine and its policies.

A policy is pure tensor code: it never imports transformers and never sees a model. The engine hands it a
description of one video's tokens (outer) or of one sample's visual tokens inside the decoder (inner) together
with a token budget, and the policy returns a *plan*: which tokens survive, and optionally the features that
replace them (merging methods). The engine applies the plan to embeddings, positions, masks and caches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch

from tokpress.errors import ConfigError


@dataclass(frozen=True)
class Grid:
    """Token grid of one video as the LLM sees it: ``frames`` x ``height`` x ``width`` tokens, raster order."""

    frames: int
    height: int
    width: int

    @property
    def per_frame(self) -> int:
        return self.height * self.width

    @property
    def numel(self) -> int:
        return self.frames * self.height * self.width


@dataclass(frozen=True)
class VideoSlot:
    """Where one video sits among a sample's video-token ordinals: grid tokens ``offset .. offset + grid.numel``,
    then ``extra`` protected tokens (LLaVA-OneVision's newline)."""

    offset: int
    grid: Grid
    extra: int = 0


@dataclass
class VideoTokens:
    """One video's tokens at the LLM input (outer stage).

    Attributes:
        features: ``[N, D]`` projected visual tokens in raster order ``(t, h, w)``, ``N == grid.numel``.
        grid: the token grid.
        sample: index of the sample in the batch.
        video: index of the video within its sample.
        attention: ``[N]`` attention each token receives in the vision encoder's feature layer (summed over the layers
            the policy's ``vision_attention_layers`` names) within its frame (mean over heads; over queries as the
            policy's ``vision_attention`` says; summed over the patches merged into the token), float32; given only
            to policies with ``needs_vision_attention``.
        family: the model family's adapter name (``"qwen2_vl"``, ``"llava_onevision"``, ...; ``""`` when unknown),
            for methods whose authors ship a different form per family (FastVID).
        vision_kept: ``[N]`` bool, the tokens whose patches a drop-before-the-encoder vision stage (``rlt``) ran
            the encoder on (the others carry a copy of the token they repeat); ``None`` without such a stage.
        question: ``[q, D]`` the LLM-input embeddings of the sample's text after its last video (the question, in
            the chat layouts), given only to policies with ``needs_question`` (``q`` may be 0).
    """

    features: torch.Tensor
    grid: Grid
    sample: int = 0
    video: int = 0
    attention: torch.Tensor | None = None
    family: str = ""
    vision_kept: torch.Tensor | None = None
    question: torch.Tensor | None = None


@dataclass
class Projections:
    """One sample's rotated query / key projections at the score layer (layer ``K - 1``, or the last attention
    layer before K), for inner policies that compute their own attention function (``attention_queries ==
    "projections"``: SparseVLM's raters, AIM's PageRank). Nothing is switched to eager attention: these are the
    projections the layer computes anyway.

    Attributes:
        queries: ``[Q, H, d]`` the queries of the sample's real tokens in this chunk, in sequence order (with the
            policy's ``projection_rows == "question"`` only its text after the last video and its last token).
        query_index: ``[Q]`` long, the key index of each query's own position (it may attend to keys ``<=`` it).
        question: ``[Q]`` bool, True for the text queries after the sample's last video token.
        keys: ``[KV, S, d]`` every key the layer attends to (cached past first); ``H`` is a multiple of ``KV``.
        key_valid: ``[S]`` bool, False at padding.
        candidates: ``[n]`` long, the key index of each candidate token (``InnerTokens.hidden``'s rows).
        scaling: the layer's softmax scale.
    """

    queries: torch.Tensor
    query_index: torch.Tensor
    question: torch.Tensor
    keys: torch.Tensor
    key_valid: torch.Tensor
    candidates: torch.Tensor
    scaling: float


@dataclass
class InnerTokens:
    """One sample's visual tokens entering decoder layer ``layer`` (inner stage).

    Attributes:
        hidden: ``[n, D]`` hidden states of the droppable visual tokens, in sequence order.
        ordinals: ``[n]`` index of each token among the sample's original video tokens (all videos, in order).
        attention: ``[n]`` attention at layer ``layer - 1`` (float32), or ``None`` when the policy does not ask for
            it: with ``attention_queries == "last"`` the last query's (mean over heads); with ``"question"`` the
            maximum over heads and over the text queries after the sample's last video token.
        layer: the decoder layer the tokens are about to enter.
        sample: index of the sample in the batch.
        videos: the sample's videos, to map ordinals to (video, frame, row, column).
        memory: a dict the policy may use to keep per-sample state across the decode steps of one cache
            (decode-time policies only; empty otherwise).
        sizes: ``[n]`` float32 number of original tokens each token stands for after earlier merges (1 for a
            token nothing was merged into); merging policies weight their means by it.
        projections: the score layer's queries and keys (policies with ``attention_queries == "projections"``).
    """

    hidden: torch.Tensor
    ordinals: torch.Tensor
    attention: torch.Tensor | None
    layer: int
    sample: int = 0
    videos: tuple[VideoSlot, ...] = ()
    memory: dict = field(default_factory=dict)
    sizes: torch.Tensor | None = None
    projections: Projections | None = None


@dataclass
class Plan:
    """What survives a stage.

    Attributes:
        keep: ``[k]`` sorted indices into the tokens the policy was given.
        features: ``[k, D]`` replacement features / hidden states for the kept tokens (merging), or ``None``.
        sizes: ``[k]`` how many original tokens each kept token stands for, or ``None`` (all ones).
        sides: per side input of the model that has one row per token (Qwen3-VL's deepstack layers), the ``[k, D']``
            rows of the kept tokens. Policies leave it ``None``: for a merging plan the engine derives it from the
            merge itself and records it here; ``fixed`` passes recorded rows back.
        marks: ``[k]`` bool, kept tokens that every later stage must keep (MustDrop's key set), or ``None``. The
            marks are read-only from then on: the engine carries them through every inner stage (prefill and
            decode) and keeps the marked tokens itself, whatever the later policy is; they count towards each
            stage's budget, and the policy is handed the unmarked tokens with the rest of it (the marked ones with
            the whole budget when they alone exceed it).
    """

    keep: torch.Tensor
    features: torch.Tensor | None = None
    sizes: torch.Tensor | None = None
    sides: list[torch.Tensor] | None = None
    marks: torch.Tensor | None = None


@dataclass(frozen=True)
class PolicyConfig:
    """Base of every policy's options. Subclasses add fields (each with a default) and validate them."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad value; subclasses extend."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @staticmethod
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)


class OuterPolicy(ABC):
    """Chooses which of a video's tokens enter the LLM."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig
    #: ask the engine for ``VideoTokens.attention`` (vision-encoder attention; costs one extra O(N d) pass)
    needs_vision_attention: ClassVar[bool] = False
    #: ``"mean_query"`` (softmax of the mean query; FastVID), ``"full"`` (the attention map averaged over queries) or
    #: ``"cls"`` (the [CLS] query's row where the vision tower has a [CLS] token — CLIP, InternViT — else the mean
    #: query; VTC-CLS)
    vision_attention: ClassVar[str] = "mean_query"
    #: ask the engine for ``VideoTokens.question`` (the text after the sample's last video, embedded)
    needs_question: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    def vision_attention_layers(self, depth: int) -> int | None:
        """How many vision-encoder layers ``VideoTokens.attention`` sums, ending at the *feature layer* (the one
        whose output the LLM reads): ``k`` -> that layer and the ``k - 1`` layers before it, each scored as
        ``vision_attention`` says, their per-patch scores added before the model's pooling; ``None`` (the default)
        -> the feature layer alone. ``depth`` is the number of encoder layers up to and including the feature layer
        (the engine raises :class:`ConfigError` unless ``1 <= k <= depth``). Layers whose queries cannot see their
        whole frame (Qwen2.5-VL's window-attention blocks) are skipped, so fewer than ``k`` may be summed there."""
        return None

    @abstractmethod
    def plan(self, video: VideoTokens, budget: int) -> Plan:
        """Return a plan keeping exactly ``budget`` of ``video``'s ``grid.numel`` tokens (1 <= budget <= N)."""


class InnerPolicy(ABC):
    """Chooses which visual tokens survive past a decoder layer."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig
    #: ask the engine for ``InnerTokens.attention`` computed from layer K-1's projections
    needs_attention: ClassVar[bool] = False
    #: which queries' attention: ``"last"`` (the last token) or ``"question"`` (text after the last video) as
    #: ``InnerTokens.attention``; or ``"projections"``: no reduction, ``InnerTokens.projections`` carries the score
    #: layer's queries and keys for the policy's own attention function (prefill only)
    attention_queries: ClassVar[str] = "last"
    #: with ``attention_queries == "projections"``: which rows ``Projections.queries`` holds — ``"all"`` the sample's
    #: real tokens (AIM's PageRank), ``"question"`` only the text after the last video and the last token (SparseVLM,
    #: MustDrop: the rotation then costs O(q d) instead of O(L d))
    projection_rows: ClassVar[str] = "all"
    #: also cut the KV cache of layers < K down to the kept set (PruneVid); layers < K then store fewer tokens
    prune_earlier_kv: ClassVar[bool] = False
    #: run at every decode step to choose which visual tokens layers >= K may attend to (DyCoke); masks only
    decode: ClassVar[bool] = False
    #: after the last stage of a multi-stage schedule, cut the KV cache of the layers from the first stage on down to
    #: the tokens the last stage left (MustDrop's output-aware cache): decoding then reads, at every layer from the
    #: first stage on, only the tokens the prefill kept to the end
    cut_kv_to_final: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The layer K the policy prunes at when the user names none (FastV's K=2, capped by the depth)."""
        return max(1, min(2, num_layers - 1))

    @classmethod
    def schedule(cls, config: PolicyConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        """The ``(layer, ratio)`` of every stage this policy runs, layers increasing; each ratio is relative to the
        tokens entering that stage. Default: one stage at ``layer``. Multi-stage methods (PyramidDrop) override."""
        return [(layer, ratio)]

    @classmethod
    def decode_stage(
        cls, config: PolicyConfig, num_layers: int, schedule: list[tuple[int, float]]
    ) -> tuple[str, int, float, dict] | None:
        """A decode-time stage to run after this policy's prefill stages (``schedule``, from :meth:`schedule`), as
        ``(inner policy name, layer, ratio, options)`` — the policy must have ``decode`` set and the layer must lie
        above the last scheduled one — or ``None`` (the default). MustDrop's output-aware decoding hands over to
        DyCoke's decode-time selection this way."""
        return None

    @abstractmethod
    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        """Return a plan keeping exactly ``budget`` of the ``n`` tokens (1 <= budget <= n)."""
