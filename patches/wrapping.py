"""Switching hooks on around one method call of a model (the vision stages and the vision-attention capture wrap
``get_video_features`` so that their hooks act only while videos are encoded)."""

from __future__ import annotations

import functools
from collections.abc import Callable


def wrap_call(owner: object, name: str, start: Callable[[], None], end: Callable[[], None]) -> Callable:
    """Set ``owner.<name>`` (an instance attribute shadowing the bound method) to a wrapper that calls ``start()``
    before the original and ``end()`` after it, also when it raises. ``functools.wraps`` keeps the signature, which
    ``generate()`` inspects (pitfall P8). Returns the wrapper, for :func:`unwrap_call`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start()
        try:
            return original(*args, **kwargs)
        finally:
            end()

    setattr(owner, name, wrapper)
    return wrapper


def unwrap_call(owner: object, name: str, wrapper: Callable | None) -> None:
    """Undo :func:`wrap_call` if ``wrapper`` is still the one in place (nothing otherwise)."""
    if wrapper is not None and owner.__dict__.get(name) is wrapper:
        delattr(owner, name)
