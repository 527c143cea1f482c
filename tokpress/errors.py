"""Exceptions raised by tokpress. Every message names the fix."""

from __future__ import annotations


class TokpressError(Exception):
    """Base class of every error tokpress raises on purpose."""


class ConfigError(TokpressError, ValueError):
    """A method name, ratio, layer or option is invalid or contradicts another one."""


class UnsupportedModelError(TokpressError, NotImplementedError):
    """The model family, attention implementation or transformers version is not supported."""


class InputError(TokpressError, ValueError):
    """The inputs of a forward call cannot be compressed as given (e.g. positions missing)."""
