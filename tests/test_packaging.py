"""Packaging: every package directory is listed in ``setup.py``, so a wheel (not only an editable install) has it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_kwargs() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def test_every_package_directory_is_listed() -> None:
    kwargs = _setup_kwargs()
    listed = set(kwargs["packages"])
    found = set()
    for name, folder in kwargs["package_dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            # a nested package_dir entry maps its own folder; skip what another entry owns
            owner = max((n for n in kwargs["package_dir"] if dotted == n or dotted.startswith(n + ".")), key=len)
            if owner == name:
                found.add(dotted)
    assert found - listed == set(), f"add these to setup.py's packages: {sorted(found - listed)}"
