"""An lmms-eval task over tokpress's synthetic benchmark, written to a folder for ``--include_path``.

    python -m tokpress.integrations.lmms_eval.synth_task /tmp/tp-task --n 40
    python -m lmms_eval --include_path /tmp/tp-task --tasks tokpress_synth --model tokpress_qwen2_5_vl \\
        --model_args pretrained=<tokpress>/eval/models/tokpress-synth-qwen2.5-vl,device=cpu,device_map=cpu,\\
max_pixels=12544,min_pixels=3136,max_num_frames=16,method=holitom,retain_ratio=0.25

The folder holds the synth test split's first ``n`` videos (``data/videos/*.mp4``, 16 frames at 2 fps, 112 x 112:
128 video tokens for the shipped model with those pixel limits), ``data/lmms.jsonl`` (one question per line), the
task YAML and a two-line ``tokpress_synth_utils.py`` that imports the document functions below. The prompt is
``tokpress eval``'s word prompt, the metric the fraction of generations naming the right option word (the same
matching as ``tokpress eval --scoring generate``), so an lmms-eval run and a ``tokpress eval`` run of the shipped
model can be set side by side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASK = "tokpress_synth"
DATA_FILE = "lmms.jsonl"

_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function tokpress_synth_utils.doc_to_visual
doc_to_text: !function tokpress_synth_utils.doc_to_text
doc_to_target: answer_text
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
process_results: !function tokpress_synth_utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""

_UTILS = """\
# written by tokpress.integrations.lmms_eval.synth_task: the document functions of the tokpress_synth task
from tokpress.integrations.lmms_eval.synth_task import doc_to_text, doc_to_visual, process_results  # noqa: F401
"""


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The video file of a document (an absolute path)."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """``tokpress eval``'s word prompt: the question, the option words, "one word only"."""
    from tokpress.eval.accuracy.data import format_prompt

    return format_prompt(doc["question"], doc["candidates"], "word")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``{"accuracy": 1.0}`` when the generation names the right option word, else 0.0."""
    from tokpress.eval.accuracy.data import match_answer

    return {"accuracy": float(match_answer(results[0], doc["candidates"], "word") == doc["answer_index"])}


def write_task(out_dir: str | Path, n: int = 8) -> Path:
    """Write the task folder (see the module doc) with the synth test split's first ``n`` videos.

    Returns:
        ``out_dir`` (pass it to lmms-eval's ``--include_path``).
    """
    from tokpress.eval.synth.tasks import export_split, make_split

    out = Path(out_dir).resolve()
    data = out / "data"
    export_split(make_split("test", n), data)
    with (data / "annotations.jsonl").open() as f:
        records = [json.loads(line) for line in f if line.strip()]
    with (data / DATA_FILE).open("w") as f:
        for r in records:
            doc = {k: r[k] for k in ("question_id", "task", "question", "candidates", "answer_index", "answer_text")}
            f.write(json.dumps({**doc, "video": str(data / r["video"])}) + "\n")
    (out / f"{TASK}.yaml").write_text(_YAML.format(task=TASK, data=json.dumps(str(data / DATA_FILE))))
    (out / "tokpress_synth_utils.py").write_text(_UTILS)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tokpress_synth lmms-eval task folder.")
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=40, help="videos of the synth test split (default 40)")
    args = parser.parse_args(argv)
    write_task(args.out_dir, args.n)


if __name__ == "__main__":
    main()
