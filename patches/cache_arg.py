"""The name of the KV-cache argument: ``past_key_values`` up to transformers 5.23, ``cache`` from 5.24.

transformers 5.24 renamed the argument of every model, decoder layer and ``create_causal_mask`` to ``cache``; the
old name is still accepted at the top of a ``forward`` (deprecated until 5.40), but a pre-hook sees the keyword
the caller used, and a forward given both names keeps ``cache`` even when it is ``None``. The hooks therefore read
either name and write the one this transformers takes.
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers.masking_utils import create_causal_mask

#: The keyword the installed transformers takes for the KV cache.
CACHE_KWARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
_OLD = "past_key_values"


def get_cache(kwargs: dict[str, Any]) -> Any:
    """The cache passed in a forward's ``kwargs`` under either name (``None`` if none)."""
    cache = kwargs.get(CACHE_KWARG)
    return kwargs.get(_OLD) if cache is None else cache


def set_cache(kwargs: dict[str, Any], cache: Any) -> None:
    """Pass ``cache`` under the current name, dropping the deprecated one so the forward sees one argument."""
    if CACHE_KWARG != _OLD:
        kwargs.pop(_OLD, None)
    kwargs[CACHE_KWARG] = cache


def output_cache(output: Any) -> Any:
    """The cache a model output returns (``output.cache`` from 5.24, ``output.past_key_values`` before)."""
    return getattr(output, CACHE_KWARG)
