"""The contract between tokpress's engine and its policies.

A policy is pure tensor code: it never imports transformers and never sees a model. The engine hands it a
description of one video's tokens (outer) or of one sample's visual tokens inside the decoder (inner) together
with a token budget, and the policy returns a *plan*: which tokens survive, and optionally the features that
replace them (merging methods). The engine applies the plan to embeddings, positions, masks and caches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
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


@dataclass
class VideoTokens:
    """One video's tokens at the LLM input (outer stage).

    Attributes:
        features: ``[N, D]`` projected visual tokens in raster order ``(t, h, w)``, ``N == grid.numel``.
        grid: the token grid.
        sample: index of the sample in the batch.
        video: index of the video within its sample.
    """

    features: torch.Tensor
    grid: Grid
    sample: int = 0
    video: int = 0


@dataclass
class InnerTokens:
    """One sample's visual tokens entering decoder layer ``layer`` (inner stage).

    Attributes:
        hidden: ``[n, D]`` hidden states of the droppable visual tokens, in sequence order.
        ordinals: ``[n]`` index of each token among the sample's original video tokens (all videos, in order).
        attention: ``[n]`` attention the last query gives each token at layer ``layer - 1`` (mean over heads),
            or ``None`` when the policy does not ask for it.
        layer: the decoder layer the tokens are about to enter.
        sample: index of the sample in the batch.
    """

    hidden: torch.Tensor
    ordinals: torch.Tensor
    attention: torch.Tensor | None
    layer: int
    sample: int = 0


@dataclass
class Plan:
    """What survives a stage.

    Attributes:
        keep: ``[k]`` sorted indices into the tokens the policy was given.
        features: ``[k, D]`` replacement features / hidden states for the kept tokens (merging), or ``None``.
        sizes: ``[k]`` how many original tokens each kept token stands for, or ``None`` (all ones).
    """

    keep: torch.Tensor
    features: torch.Tensor | None = None
    sizes: torch.Tensor | None = None


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

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    @abstractmethod
    def plan(self, video: VideoTokens, budget: int) -> Plan:
        """Return a plan keeping exactly ``budget`` of ``video``'s ``grid.numel`` tokens (1 <= budget <= N)."""


class InnerPolicy(ABC):
    """Chooses which visual tokens survive past a decoder layer."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig
    needs_attention: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The layer K the policy prunes at when the user names none (FastV's K=2, capped by the depth)."""
        return max(1, min(2, num_layers - 1))

    @abstractmethod
    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        """Return a plan keeping exactly ``budget`` of the ``n`` tokens (1 <= budget <= n)."""
