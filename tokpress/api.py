"""``apply`` / ``remove`` / ``compressed``: the whole public surface for patching a model."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from collections.abc import Iterator
from typing import Any

from packaging.version import Version

from tokpress.config import build_config
from tokpress.errors import ConfigError, UnsupportedModelError
from tokpress.registry import adapter_names, get_adapter_class, get_policy

logger = logging.getLogger("tokpress")

#: transformers versions tokpress is tested against (both ends run in CI)
TRANSFORMERS_MIN, TRANSFORMERS_BELOW = Version("5.17.0"), Version("6")


def _check_transformers() -> None:
    installed = Version(importlib.metadata.version("transformers"))
    if not TRANSFORMERS_MIN <= installed < TRANSFORMERS_BELOW:
        raise UnsupportedModelError(
            f"transformers {installed} is installed; tokpress supports >={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}. "
            f'Run: pip install "transformers>={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}"'
        )


def _engine(model):
    from tokpress.patches.engine import Engine

    engine = model.__dict__.get("tokpress")
    return engine if isinstance(engine, Engine) else None


def apply(
    model,
    method: str | None = None,
    *,
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
    **options: Any,
):
    """Compress the video tokens of every later ``model(...)`` / ``model.generate(...)`` call.

    Args:
        model: a Hugging Face ``*ForConditionalGeneration`` video LLM (see ``tokpress.adapter_names()``).
        method: a preset (``tokpress.preset_names()``), e.g. ``"fastv"``; or leave it out and name stages:
        outer: outer-LLM policy (before the first decoder layer), e.g. ``"evs"``.
        inner: inner-LLM policy (inside the decoder at ``inner_layer``), e.g. ``"fastv"``.
        retain_ratio: fraction in (0, 1] of the video tokens each stage keeps (1 keeps everything).
        outer_ratio / inner_ratio: per-stage overrides of ``retain_ratio``; the inner ratio is relative to the
            tokens entering its layer.
        inner_layer: decoder layer K of the inner stage (default: the policy's, FastV's K=2).
        outer_options / inner_options: policy options by stage; plain keyword ``options`` go to whichever
            stage's policy has an option of that name.
        vision: vision-encoder policy. ``"tome"`` (LLaVA-OneVision's SigLIP) merges each frame's patches inside the
            encoder and restores the output grid, so the LLM sees as many video tokens as before. ``"rlt"`` (the Qwen
            families) drops the LLM tokens' patch groups that repeat the previous temporal patch before the encoder
            runs; with no outer policy the LLM receives only the kept tokens. Both stack with outer / inner.
        vision_ratio: ``tome``: fraction of each frame's patches the encoder layers after ``vision_layer`` process;
            ``rlt``: fraction of each video's LLM tokens the encoder runs on (default ``retain_ratio``).
        vision_layer: ``tome`` only: encoder layer after which it merges (default: a third of the way in).
        vision_options: options of the vision policy (``tome``: ``metric="keys"`` or ``"hidden"``; ``rlt``:
            ``metric="l1"`` or ``"cosine"``).

    Returns:
        ``model``, patched in place. Applying again replaces the previous patch; invalid arguments raise a
        :class:`~tokpress.TokpressError` before anything is changed (an existing patch stays as it was).

    Example::

        tokpress.apply(model, outer="uniform", inner="fastv", retain_ratio=0.25)
        tokpress.apply(model, vision="tome", vision_ratio=0.5, outer="holitom", retain_ratio=0.25)  # LLaVA-OV
        tokpress.apply(model, vision="rlt", vision_ratio=0.25)  # Qwen: encoder and LLM run on a quarter
        model.generate(**inputs)
        model.tokpress.last.summary()
    """
    from tokpress.patches.engine import Engine
    from tokpress.patches.vision import check_layers as check_vision_layers

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise UnsupportedModelError(f"{type(model).__name__} is not a transformers model (it has no config)")
    adapter_cls = get_adapter_class(config.model_type)
    _check_transformers()
    adapter_cls.validate(model)
    adapter = adapter_cls(model)
    stages = dict(
        outer=outer,
        inner=inner,
        retain_ratio=retain_ratio,
        outer_ratio=outer_ratio,
        inner_ratio=inner_ratio,
        outer_options=outer_options,
        inner_options=inner_options,
        vision=vision,
        vision_ratio=vision_ratio,
        vision_layer=vision_layer,
        vision_options=vision_options,
        **(_vision_site_facts(adapter) if vision is not None else {}),
    )
    cfg = build_config(method, num_layers=adapter.num_layers, inner_layer=inner_layer, **stages, **options)
    sliding = adapter.sliding_layers()
    if cfg.inner and any(i >= cfg.inner[0].layer for i in sliding):
        raise UnsupportedModelError(
            f"inner stages need full-attention layers, but layers {sliding} use sliding "
            "windows; use an outer policy only"
        )
    if inner_layer is None:  # the policy's default layer has no attention layer before it (Qwen3.5): a later one
        rebuild = lambda k: build_config(method, num_layers=adapter.num_layers, inner_layer=k, **stages, **options)  # noqa: E731
        moved = _default_layer_on_hybrid(adapter, cfg, rebuild)
        if moved is not None:
            logger.info("tokpress: inner stages moved from layer %d to %d (first with attention scores)", *moved[:2])
            cfg = moved[2]
    _check_score_layers(adapter, cfg)
    engine = Engine(model, adapter, cfg)
    if engine.outer is not None and engine.outer.needs_vision_attention and not adapter.supports_vision_attention:
        raise UnsupportedModelError(
            f"outer policy {cfg.outer.policy!r} needs vision-encoder attention, which the "
            f"{adapter.family} adapter cannot supply; choose a policy that does not need it"
        )
    if engine.outer is not None and engine.outer.needs_vision_attention:
        check_vision_layers(adapter, engine.outer.vision_attention_layers)
    remove(model)
    engine.install()
    model.tokpress = engine
    logger.info("tokpress: applied %s", cfg)
    return model


def _vision_site_facts(adapter) -> dict[str, Any]:
    """``vision_depth`` (encoder layers the vision stage can work in) and ``vision_where`` (``"inside"`` or
    ``"before"`` the encoder); :class:`UnsupportedModelError` naming the families that have a vision stage when this
    one has none."""
    if not hasattr(adapter, "vision_stage_site"):
        raise UnsupportedModelError(
            f"the {adapter.family} adapter has no vision stage (vision=); families with one: "
            f"{', '.join(sorted(_vision_families()))}. "
            "Drop vision= (outer= / inner= work on this family)"
        )
    site = adapter.vision_stage_site()
    return {"vision_depth": site.depth, "vision_where": getattr(site, "where", "inside")}


def _vision_families() -> set[str]:
    return {
        get_adapter_class(name).family
        for name in adapter_names()
        if hasattr(get_adapter_class(name), "vision_stage_site")
    }


def _default_layer_on_hybrid(adapter, cfg, rebuild) -> tuple[int, int, Any] | None:
    """``(first stage's default layer, its new layer, the rebuilt config)`` when attention-ranked inner stages sit,
    by default, where no attention layer precedes one of them: the first ``inner_layer`` after the default for which
    ``rebuild(inner_layer)`` places every stage after an attention layer (a multi-stage schedule moves whole);
    ``None`` when nothing needs moving or nothing fits."""

    def scored(c) -> bool:
        return all(
            not get_policy("inner", s.policy).needs_attention or adapter.score_layer(s.layer) is not None
            for s in c.inner
        )

    if not cfg.inner or scored(cfg):
        return None
    first = cfg.inner[0].layer
    for k in range(first + 1, adapter.num_layers):
        try:
            moved = rebuild(k)
        except ConfigError:  # the schedule does not fit from k on
            continue
        if scored(moved):
            return first, moved.inner[0].layer, moved
    return None


def _check_score_layers(adapter, cfg) -> None:
    """Refuse inner stages that rank by attention where no attention layer precedes them (hybrid models)."""
    attention = [i for i in range(adapter.num_layers) if i not in set(adapter.linear_layers())]
    for stage in cfg.inner:
        if not get_policy("inner", stage.policy).needs_attention or adapter.score_layer(stage.layer) is not None:
            continue
        valid = [i + 1 for i in attention if i + 1 < adapter.num_layers]
        fix = f"use inner_layer={valid[0]} or later" if valid else "use an outer policy only"
        raise UnsupportedModelError(
            f"inner policy {stage.policy!r} at layer {stage.layer} ranks tokens by attention, but every layer "
            f"before it is linear attention (no attention scores; full-attention layers: {attention}); {fix}"
        )


def vision_encoder(model) -> Any:
    """The vision encoder of a supported model (``model.model.visual`` on Qwen, ``.vision_tower`` elsewhere), as its
    family's adapter names it; :class:`UnsupportedModelError` for other models."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise UnsupportedModelError(f"{type(model).__name__} is not a transformers model (it has no config)")
    return get_adapter_class(config.model_type)(model).vision_encoder


def remove(model):
    """Remove tokpress's hooks and state; the model computes exactly as before :func:`apply`. No-op if unpatched."""
    engine = _engine(model)
    if engine is not None:
        engine.remove()
        del model.tokpress
    return model


@contextlib.contextmanager
def compressed(model, method: str | None = None, **kwargs: Any) -> Iterator[Any]:
    """Context manager form of :func:`apply`; on exit the previous state (patched or not) is restored.

    Example::

        with tokpress.compressed(model, outer="random", retain_ratio=0.5):
            model.generate(**inputs)
    """
    previous = _engine(model)
    apply(model, method, **kwargs)
    try:
        yield model
    finally:
        remove(model)
        if previous is not None:
            previous.install()
            model.tokpress = previous


__all__ = ["apply", "remove", "compressed", "vision_encoder", "ConfigError"]
