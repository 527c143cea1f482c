"""``tokpress demo``: one tiny built-in video LLM, real RGB frames through its real processor, each method once.

It shows what tokpress does — tokens before and after each stage, FLOPs, wall times, whether the greedy answer
changed — with nothing downloaded. The model has random weights, so answers are noise and CPU timings of a model
this small are dominated by Python overhead: use ``tokpress bench`` on a real model for speed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

import tokpress
from tokpress.eval.accuracy.data import first_answer
from tokpress.eval.bench.flops_exact import fastv_prefill_flops
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.methods import parse_method
from tokpress.eval.tiny.families import VideoSpec, moving_square_video, tiny_model
from tokpress.eval.tiny.processor import tiny_processor
from tokpress.eval.video import video_metadata_kwargs

#: frame rate of the demo's generated clip (the bench's generated clip uses the same)
DEMO_FPS = 8.0
DEFAULT_METHODS = ("none", "uniform", "random", "frames", "evs", "fastv", "evs+fastv")


def _prefill_ms(model, inputs, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**inputs, use_cache=True)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def run_demo(
    family: str = "qwen2_5_vl",
    methods: tuple[str, ...] = DEFAULT_METHODS,
    ratio: float = 0.25,
    frames: int = 16,
    repeats: int = 3,
    new_tokens: int = 8,
) -> list[dict[str, Any]]:
    """Run each method on the built-in model; one record per method (see the keys of the returned dicts)."""
    model, processor = tiny_model(family), tiny_processor(family)
    spec = VideoSpec(frames=frames, height=112, width=112)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where does it go?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    metadata = video_metadata_kwargs(processor, frames, DEMO_FPS)
    inputs = processor(text=[prompt], videos=[moving_square_video(spec)], return_tensors="pt", **metadata)
    n_video = int((inputs["input_ids"] == video_placeholder_id(model.config)).sum())
    text_cfg = model.model.language_model.config
    full_flops = fastv_prefill_flops(model.config, [inputs["input_ids"].shape[1]] * text_cfg.num_hidden_layers)
    records, reference = [], None
    text = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    for spec_name in methods:
        kwargs = parse_method(spec_name)
        tokpress.remove(model)
        if kwargs is not None:
            tokpress.apply(model, retain_ratio=ratio, **kwargs)
        prefill = _prefill_ms(model, inputs, repeats)
        start = time.perf_counter()
        answer = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)[
            0, inputs["input_ids"].shape[1] :
        ]
        generate_ms = (time.perf_counter() - start) * 1e3
        reference = answer if reference is None else reference
        last = model.tokpress.last if kwargs is not None else None
        per_layer = last.tokens_per_layer[0] if last else [inputs["input_ids"].shape[1]] * text_cfg.num_hidden_layers
        records.append(
            {
                "method": spec_name,
                "ratio": ratio if kwargs is not None else 1.0,
                "video_tokens": n_video,
                "into_llm": last.after_outer[0] if last else n_video,
                "after_inner": [c[0] for c in last.after_inner] if last else [],
                "prefill_tokens_last_layer": per_layer[-1],
                "flops_fraction": fastv_prefill_flops(model.config, per_layer) / full_flops,
                "prefill_ms": prefill,
                "generate_ms": generate_ms,
                "compression_ms": last.compression_s * 1e3 if last else 0.0,
                "same_answer": first_answer(text(answer)) == first_answer(text(reference)),
            }
        )
    tokpress.remove(model)
    return records
