"""Registries of policies, presets and model adapters: plain dicts with duplicate checks.

Policies register themselves with :func:`register_policy` in their own module; :mod:`tokpress.policies`
imports every built-in policy module. Adapters are looked up lazily by ``config.model_type`` so that importing
tokpress never imports model code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from tokpress.errors import ConfigError, UnsupportedModelError
from tokpress.policies.base import InnerPolicy, OuterPolicy

Stage = Literal["outer", "inner"]
_POLICIES: dict[tuple[str, str], type[OuterPolicy] | type[InnerPolicy]] = {}
_PRESETS: dict[str, Preset] = {}
_ADAPTERS: dict[str, str] = {}


@dataclass(frozen=True)
class Preset:
    """A named method: an outer policy, an inner policy or both, with default options for each."""

    name: str
    outer: str | None = None
    inner: str | None = None
    outer_options: dict[str, Any] = field(default_factory=dict)
    inner_options: dict[str, Any] = field(default_factory=dict)
    inner_ratio: float | None = None
    description: str = ""


def register_policy(name: str, stage: Stage):
    """Class decorator registering an :class:`OuterPolicy` / :class:`InnerPolicy` under ``(stage, name)``."""
    base = OuterPolicy if stage == "outer" else InnerPolicy

    def wrap(cls):
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__name__} to register as an {stage} policy")
        if (stage, name) in _POLICIES:
            raise ValueError(f"{stage} policy {name!r} is already registered by {_POLICIES[stage, name].__name__}")
        cls.name = name
        _POLICIES[stage, name] = cls
        return cls

    return wrap


def register_preset(preset: Preset) -> Preset:
    """Register a preset; the name must be new."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    if preset.outer is None and preset.inner is None:
        raise ValueError(f"preset {preset.name!r} names neither an outer nor an inner policy")
    _PRESETS[preset.name] = preset
    return preset


def register_adapter(model_type: str, target: str) -> None:
    """Map ``config.model_type`` to an adapter class given as ``"module.path:ClassName"`` (imported on use)."""
    if model_type in _ADAPTERS:
        raise ValueError(f"an adapter for model_type {model_type!r} is already registered")
    _ADAPTERS[model_type] = target


def _load_builtins() -> None:
    importlib.import_module("tokpress.policies")
    importlib.import_module("tokpress.patches")


def get_policy(stage: Stage, name: str):
    _load_builtins()
    try:
        return _POLICIES[stage, name]
    except KeyError:
        known = ", ".join(policy_names(stage)) or "none"
        raise ConfigError(f"unknown {stage} policy {name!r}; choose one of: {known}") from None


def policy_names(stage: Stage) -> list[str]:
    _load_builtins()
    return sorted(n for s, n in _POLICIES if s == stage)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; every policy also acts as a preset of its own name."""
    _load_builtins()
    if name in _PRESETS:
        return _PRESETS[name]
    outer, inner = ("outer", name) in _POLICIES, ("inner", name) in _POLICIES
    if outer or inner:
        return Preset(name, outer=name if outer else None, inner=name if inner else None)
    raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(preset_names())}")


def preset_names() -> list[str]:
    _load_builtins()
    return sorted(set(_PRESETS) | {n for _, n in _POLICIES})


def get_adapter_class(model_type: str):
    _load_builtins()
    if model_type not in _ADAPTERS:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(_ADAPTERS))}. "
            "To add a family, write an adapter in tokpress/patches/ (see CONTRIBUTING.md)."
        )
    module, cls = _ADAPTERS[model_type].split(":")
    return getattr(importlib.import_module(module), cls)


def adapter_names() -> list[str]:
    _load_builtins()
    return sorted(_ADAPTERS)
