"""The README's quickstart runs as written: its Python blocks are extracted and executed offline in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SECTION = "## Quickstart"

pytest.importorskip("av")


def quickstart_code(text: str) -> str:
    """Every ```python block between ``## Quickstart`` and the next ``## `` heading, joined in order."""
    start = text.index(SECTION + "\n")
    rest = text[start + len(SECTION) :]
    end = re.search(r"^## ", rest, flags=re.M)
    section = rest[: end.start()] if end else rest
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)
    return "\n".join(blocks)


def test_extraction_reads_only_the_quickstart_python_blocks():
    fence = "```"
    text = f"# t\n## Quickstart\n{fence}python\na = 1\n{fence}\n{fence}text\nno\n{fence}\n"
    text += f"{fence}python\nb = a\n{fence}\n"
    text += f"## Next\n{fence}python\nc\n{fence}\n"
    assert quickstart_code(text) == "a = 1\n\nb = a\n"


def test_quickstart_is_a_complete_program():
    code = quickstart_code(README.read_text())
    for needed in ("messages = ", "VideoMetadata(", "import av", "tokpress.apply(", ".generate(", ".summary()"):
        assert needed in code, f"the quickstart lost {needed!r}"
    compile(code, "quickstart.py", "exec")


def test_quickstart_runs_offline(tmp_path):
    """Exit 0; one of the four direction words as the answer; 16 frames of 112x112 = 8 x 16 = 128 video tokens,
    of which round(0.25 * 128) = 32 enter the LLM."""
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_code(README.read_text()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKPRESS_REPO": str(REPO)}
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answer = re.search(r"^answer: (.*)$", run.stdout, flags=re.M)
    assert answer, run.stdout
    assert answer.group(1).strip() in {"up", "down", "left", "right"}
    assert re.search(r"^sample 0: video 128 -> outer 32\b", run.stdout, flags=re.M), run.stdout
    assert (tmp_path / "clip.mp4").is_file()  # the program wrote and read a real video file
