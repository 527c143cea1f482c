"""Resolve the arguments of :func:`tokpress.apply` into one validated, immutable :class:`TokpressConfig`.

Budget semantics: a stage's ratio is the fraction of the video tokens *entering that stage* that leave it.
With only one stage that is the fraction of the original video tokens (entering the LLM for an outer stage,
surviving past layer K for an inner one). ``retain_ratio`` is the default of every stage; ``outer_ratio`` and
``inner_ratio`` override it per stage, and a preset may fix its own inner ratio (HoliTom halves at layer k).

A *vision* stage works inside or before the vision encoder; ``vision_ratio`` defaults to ``retain_ratio``.
``vision="tome"`` (SigLIP) merges inside: the ratio is the fraction of each frame's patches that the encoder layers
after ``vision_layer`` process; the encoder's output grid is restored, so the LLM's video token count and the other
stages' budgets are unchanged. ``vision="rlt"`` (Qwen ViTs) drops before: the ratio is the fraction of each video's
LLM tokens whose patches the encoder runs on; with no outer policy the LLM receives exactly those tokens, with one
the outer policy chooses from the whole grid (the dropped tokens carry the features of the tokens they repeat).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

from tokpress.errors import ConfigError
from tokpress.policies.base import PolicyConfig
from tokpress.registry import get_policy, get_preset


@dataclass(frozen=True)
class OuterStage:
    """Outer-LLM stage: ``policy`` keeps ``ratio`` of each video's tokens before the first decoder layer."""

    policy: str
    ratio: float
    options: PolicyConfig


@dataclass(frozen=True)
class InnerStage:
    """Inner-LLM stage: ``policy`` keeps ``ratio`` of the visual tokens entering decoder layer ``layer``."""

    policy: str
    layer: int
    ratio: float
    options: PolicyConfig


@dataclass(frozen=True)
class VisionStage:
    """Vision-encoder stage.

    ``where == "inside"``: ``policy`` merges each frame's patches to ``round(ratio * N)`` after encoder layer
    ``layer``; encoder layers ``layer + 1 .. depth - 1`` run on the merged tokens, and the grid is restored at the
    output of layer ``depth - 1`` (the layer whose output the model uses). ``where == "before"``: ``policy`` keeps
    ``round(ratio * U)`` of each video's ``U`` LLM-token patch groups before layer 0 (``layer`` is ``None``).
    """

    policy: str
    ratio: float
    layer: int | None
    depth: int
    options: PolicyConfig
    where: str = "inside"


@dataclass(frozen=True)
class TokpressConfig:
    """Everything :func:`tokpress.apply` was asked to do, validated."""

    method: str | None
    outer: OuterStage | None
    inner: tuple[InnerStage, ...]
    num_layers: int
    vision: VisionStage | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (for result files)."""
        return asdict(self)

    def kept_fraction(self, layer: int) -> float:
        """Nominal fraction of the original video tokens present at decoder ``layer``."""
        frac = self.outer.ratio if self.outer else 1.0
        if self.outer is None and self.vision is not None and self.vision.where == "before":
            frac = self.vision.ratio  # the LLM receives the kept set
        for stage in self.inner:
            if layer >= stage.layer:
                frac *= stage.ratio
        return frac


def budget(ratio: float, n: int) -> int:
    """Tokens a stage keeps of ``n``: ``round(ratio * n)``, at least 1 (0 when ``n == 0``)."""
    if n == 0:
        return 0
    return min(n, max(1, math.floor(ratio * n + 0.5)))


def _as_ratio(name: str, value: Any) -> float | None:
    """``value`` as a float ratio in (0, 1] (``None`` stays ``None``).

    Any real number is accepted — a Python or NumPy scalar, or a one-element tensor / array (``.item()``).
    """
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (bool, int, float)):
        try:
            value = value.item()  # NumPy scalars, one-element arrays and tensors (more elements raise: kept as is)
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1:
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r} (1 keeps every token)")
    return float(value)


def _make_options(stage: str, policy: str, options: dict[str, Any]) -> PolicyConfig:
    cls = get_policy(stage, policy).config_cls
    unknown = set(options) - set(cls.field_names())
    if unknown:
        valid = ", ".join(cls.field_names()) or "none"
        raise ConfigError(f"{stage} policy {policy!r} has no option(s) {sorted(unknown)}; valid options: {valid}")
    try:
        return cls(**options)
    except TypeError as exc:  # e.g. wrong type passed to a typed field
        raise ConfigError(f"bad options for {stage} policy {policy!r}: {exc}") from None


def _route_options(outer: str | None, inner: str | None, options: dict[str, Any]) -> tuple[dict, dict]:
    """Send each flat keyword option to the one stage whose policy has a field of that name."""
    to_outer, to_inner = {}, {}
    outer_fields = set(get_policy("outer", outer).config_cls.field_names()) if outer else set()
    inner_fields = set(get_policy("inner", inner).config_cls.field_names()) if inner else set()
    for key, value in options.items():
        in_outer, in_inner = key in outer_fields, key in inner_fields
        if in_outer and in_inner:
            raise ConfigError(
                f"option {key!r} exists in both the outer and the inner policy; "
                "pass it in outer_options={...} or inner_options={...}"
            )
        if not (in_outer or in_inner):
            valid = sorted(outer_fields | inner_fields)
            raise ConfigError(f"unknown option {key!r}; valid options here: {', '.join(valid) or 'none'}")
        (to_outer if in_outer else to_inner)[key] = value
    return to_outer, to_inner


def build_config(
    method: str | None = None,
    *,
    num_layers: int,
    outer: str | None = None,
    inner: str | None = None,
    retain_ratio: float | None = None,
    outer_ratio: float | None = None,
    inner_ratio: float | None = None,
    inner_layer: int | None = None,
    outer_options: dict[str, Any] | None = None,
    inner_options: dict[str, Any] | None = None,
    vision: str | None = None,
    vision_ratio: float | None = None,
    vision_layer: int | None = None,
    vision_options: dict[str, Any] | None = None,
    vision_depth: int | None = None,
    vision_where: str = "inside",
    **options: Any,
) -> TokpressConfig:
    """Validate and resolve :func:`tokpress.apply`'s arguments for a decoder of ``num_layers`` layers.

    ``vision_depth`` is the number of vision-encoder layers that run before the model reads the encoder's output
    and ``vision_where`` the kind of vision stage the family offers (``"inside"`` or ``"before"`` the encoder), both
    given by the adapter (``vision_depth`` is ``None`` when the family has no vision stage).
    """
    for name, value in (("method", method), ("outer", outer), ("inner", inner), ("vision", vision)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a policy name (str), got {type(value).__name__}")
    preset = None
    if method is not None:
        if outer is not None or inner is not None:
            raise ConfigError(f"pass either a method ({method!r}) or outer=/inner= policies, not both")
        preset = get_preset(method)
        outer, inner = preset.outer, preset.inner
    if outer is None and inner is None and vision is None:
        raise ConfigError(
            "nothing to do: name a method, e.g. apply(model, 'fastv', retain_ratio=0.25), or outer=/inner=/vision= "
            "policies"
        )
    retain_ratio = _as_ratio("retain_ratio", retain_ratio)
    vision_stage = _vision_stage(
        vision, vision_ratio, retain_ratio, vision_layer, vision_options, vision_depth, vision_where
    )
    outer_ratio = _as_ratio("outer_ratio", outer_ratio)
    inner_ratio = _as_ratio("inner_ratio", inner_ratio)
    if outer is None and (outer_ratio is not None or outer_options):
        raise ConfigError("outer_ratio/outer_options given but no outer policy; pass outer=... or drop them")
    if inner is None and (inner_ratio is not None or inner_layer is not None or inner_options):
        raise ConfigError(
            "inner_ratio/inner_layer/inner_options given but no inner policy; pass inner=... or drop them"
        )
    routed_outer, routed_inner = _route_options(outer, inner, options)
    outer_stage, inner_stages = None, ()
    if outer is not None:
        ratio = outer_ratio if outer_ratio is not None else retain_ratio
        if ratio is None:
            raise ConfigError("pass retain_ratio= (or outer_ratio=): the fraction of video tokens to keep, in (0, 1]")
        opts = {**(preset.outer_options if preset else {}), **(outer_options or {}), **routed_outer}
        outer_stage = OuterStage(outer, float(ratio), _make_options("outer", outer, opts))
    if inner is not None:
        ratio = inner_ratio if inner_ratio is not None else (preset.inner_ratio if preset else None)
        ratio = ratio if ratio is not None else retain_ratio
        if ratio is None:
            raise ConfigError("pass retain_ratio= (or inner_ratio=): the fraction of visual tokens to keep, in (0, 1]")
        policy_cls = get_policy("inner", inner)
        layer = inner_layer if inner_layer is not None else policy_cls.default_layer(num_layers)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer < num_layers:
            raise ConfigError(
                f"inner_layer must be an int in [1, {num_layers - 1}] for this {num_layers}-layer "
                f"decoder, got {layer!r}"
            )
        opts = {**(preset.inner_options if preset else {}), **(inner_options or {}), **routed_inner}
        options_obj = _make_options("inner", inner, opts)
        schedule = policy_cls.schedule(options_obj, num_layers, layer, float(ratio))
        layers = [k for k, _ in schedule]
        if not layers or layers != sorted(set(layers)) or not all(1 <= k < num_layers for k in layers):
            raise ConfigError(
                f"inner policy {inner!r} scheduled layers {layers}; they must increase within "
                f"[1, {num_layers - 1}] — choose another inner_layer"
            )
        inner_stages = tuple(InnerStage(inner, k, float(r), options_obj) for k, r in schedule)
        follow = policy_cls.decode_stage(options_obj, num_layers, schedule)
        if follow is not None:  # a decode-time stage after the prefill stages (MustDrop's output-aware decoding)
            name, k, r, follow_options = follow
            if not get_policy("inner", name).decode or not layers[-1] < k < num_layers:
                raise ConfigError(
                    f"inner policy {inner!r} asks for a decode stage {name!r} at layer {k}: it must be a decode-time "
                    f"policy at a layer in [{layers[-1] + 1}, {num_layers - 1}] — choose an earlier schedule"
                )
            inner_stages += (InnerStage(name, k, float(r), _make_options("inner", name, follow_options)),)
    return TokpressConfig(
        method=method, outer=outer_stage, inner=inner_stages, num_layers=num_layers, vision=vision_stage
    )


def _vision_stage(
    vision: str | None,
    ratio: Any,
    retain_ratio: float | None,
    layer: Any,
    options: dict[str, Any] | None,
    depth: int | None,
    where: str = "inside",
) -> VisionStage | None:
    """The validated vision stage (``None`` without ``vision=``); the merge layer defaults to ``depth // 3``."""
    from tokpress.policies.vision import get_vision_policy, vision_policies_at

    if vision is None:
        if ratio is not None or layer is not None or options:
            raise ConfigError("vision_ratio/vision_layer/vision_options given but no vision policy; pass vision=...")
        return None
    policy_cls = get_vision_policy(vision)
    if policy_cls.where != where:
        raise ConfigError(
            f"vision policy {vision!r} works {policy_cls.where} the vision encoder, but this family's vision stage "
            f"works {where} it; use vision= one of {vision_policies_at(where)}"
        )
    ratio = _as_ratio("vision_ratio", ratio)
    ratio = ratio if ratio is not None else retain_ratio
    if ratio is None:
        raise ConfigError("pass vision_ratio= (or retain_ratio=): the fraction of each frame's patches to keep")
    unknown = set(options or {}) - set(policy_cls.config_cls.field_names())
    if unknown:
        valid = ", ".join(policy_cls.config_cls.field_names())
        raise ConfigError(f"vision policy {vision!r} has no option(s) {sorted(unknown)}; valid options: {valid}")
    if where == "before":
        if layer is not None:
            raise ConfigError(
                f"vision policy {vision!r} drops patches before the encoder's first layer; drop vision_layer="
            )
        return VisionStage(vision, float(ratio), None, depth or 0, policy_cls.config_cls(**(options or {})), where)
    if depth is None or depth < 2:
        raise ConfigError(
            f"the vision stage needs at least 2 encoder layers before the features the model reads, got {depth}"
        )
    if layer is None:  # the policy's own default (MustDrop: the first layer), else a third of the depth
        default = getattr(policy_cls, "default_layer", None)
        layer = default(depth) if default is not None else min(depth // 3, depth - 2)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= depth - 2:
        raise ConfigError(
            f"vision_layer must be an int in [0, {depth - 2}] (a later encoder layer must run on the merged tokens "
            f"before layer {depth - 1}, whose output the model reads), got {layer!r}"
        )
    return VisionStage(vision, float(ratio), layer, depth, policy_cls.config_cls(**(options or {})))
