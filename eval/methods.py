"""Method specs as written on the command line: ``none``, a preset (``fastv``) or ``outer+inner`` (``evs+fastv``)."""

from __future__ import annotations

from typing import Any

from tokpress.errors import ConfigError
from tokpress.registry import get_preset, policy_names


def parse_method(spec: str) -> dict[str, Any] | None:
    """Keyword arguments of :func:`tokpress.apply` for ``spec`` (``None`` for ``"none"``, the uncompressed model).

    Example: ``parse_method("evs+fastv") -> {"outer": "evs", "inner": "fastv"}``.
    """
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    if "+" in spec:
        outer, inner = (part.strip() for part in spec.split("+", 1))
        if outer not in policy_names("outer") or inner not in policy_names("inner"):
            raise ConfigError(
                f"{spec!r}: write outer+inner with an outer policy ({', '.join(policy_names('outer'))}) "
                f"and an inner one ({', '.join(policy_names('inner'))})"
            )
        return {"outer": outer, "inner": inner}
    get_preset(spec)  # raises with the list of methods
    return {"method": spec}


def parse_list(text: str) -> list[str]:
    """Split a comma-separated option value."""
    return [part.strip() for part in text.split(",") if part.strip()]
