"""``samples.jsonl``: per-sample records of ``tokpress eval`` streamed as they are made, and resumed from."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tokpress.errors import InputError
from tokpress.eval.accuracy.config import EvalConfig
from tokpress.eval.bench.report import _jsonable

logger = logging.getLogger("tokpress")

#: per-sample records of an eval, streamed as they are made (``evaluate`` writes it into the output folder)
STREAM_FILE = "samples.jsonl"


def stream_key(config: EvalConfig, work_name: str) -> dict[str, Any]:
    """What a streamed file must match to be resumed: the model and every setting that changes a record."""
    fields = asdict(config)
    for name in ("n_boot", "alpha", "exact_below"):  # summary statistics only, recomputed from the records
        fields.pop(name)
    return {"kind": "header", "model": work_name, "config": _jsonable(fields)}


def open_stream(path: Path, key: dict[str, Any], resume: bool) -> dict[tuple[str, float, str], dict[str, Any]]:
    """The records of ``path`` by ``(method, ratio, sample_id)`` when ``resume`` and it was made with ``key``;
    otherwise start ``path`` afresh with ``key`` as its first line.

    Raises:
        InputError: ``path`` holds records of another configuration (``resume`` is on).
    """
    done: dict[tuple[str, float, str], dict[str, Any]] = {}
    if resume and path.is_file() and path.stat().st_size:
        with path.open(encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if not lines or lines[0] != key:
            raise InputError(
                f"{path} holds per-sample records of another model or configuration; pass a new --out, or "
                "--no-resume to start over"
            )
        done = {(r["method"], float(r["ratio"]), r["sample_id"]): r for r in lines[1:]}
        logger.info("tokpress eval: resuming %s (%d sample records done)", path, len(done))
        return done
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return done


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append ``records`` to ``path`` as JSON lines and flush them to disk (a kill loses at most one batch)."""
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(_jsonable(r)) + "\n")
        f.flush()
        os.fsync(f.fileno())
