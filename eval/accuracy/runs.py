"""One method x ratio run of ``tokpress eval`` on a batch: apply the method, time the prefill, count the tokens,
and turn the scores into ``kind="sample"`` records."""

from __future__ import annotations

from typing import Any

import torch

import tokpress
from tokpress.eval.accuracy.config import EvalConfig
from tokpress.eval.accuracy.scoring import Prepared, choose
from tokpress.eval.bench.timing import Clock
from tokpress.eval.methods import parse_method


def apply_method(model: torch.nn.Module, method: str, ratio: float, seed: int) -> None:
    tokpress.remove(model)
    kwargs = parse_method(method)
    if kwargs is None:
        return
    if kwargs.get("method") == "random" or kwargs.get("outer") == "random":
        kwargs["outer_options"] = {"seed": seed}
    tokpress.apply(model, retain_ratio=ratio, **kwargs)


@torch.no_grad()
def timed_prefill(model: torch.nn.Module, batch: dict[str, torch.Tensor], clock: Clock) -> float:
    start = clock.now()
    model(**batch, use_cache=True, logits_to_keep=1)
    return clock.now() - start


def prefill_counts(model: torch.nn.Module, batch: dict[str, torch.Tensor], video_id: int) -> list[dict[str, Any]]:
    """Per sample of the last prefill: video tokens, video tokens entering the LLM, tokens per decoder layer."""
    engine = getattr(model, "tokpress", None)
    stats = engine.last if engine is not None else None
    layers = model.config.get_text_config().num_hidden_layers
    out = []
    for b in range(batch["input_ids"].shape[0]):
        if stats is not None and len(stats.video_tokens) > b:
            video, into, per_layer = stats.video_tokens[b], stats.after_outer[b], list(stats.tokens_per_layer[b])
        else:  # unpatched: every token of the prompt reaches every layer
            video = into = int((batch["input_ids"][b] == video_id).sum())
            per_layer = [int(batch["attention_mask"][b].sum())] * layers
        out.append({"video_tokens": video, "into_llm": into, "per_layer": per_layer})
    return out


def rows_consistent(stats: Any, counts: list[dict[str, Any]], rows: list[int]) -> list[bool]:
    if stats is None:
        return [True] * len(rows)
    per_layer = stats.tokens_per_layer
    out, row = [], 0
    for b, k in enumerate(rows):
        out.append(all(per_layer[row + i] == counts[b]["per_layer"] for i in range(k)))
        row += k
    return out


def sample_record(
    name: str,
    method: str,
    ratio: float,
    p: Prepared,
    config: EvalConfig,
    scored: list[tuple[float, int]] | None,
    generated: tuple[str, int] | None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "sample",
        "model": name,
        "method": method,
        "ratio": ratio,
        "sample_id": p.sample.sample_id,
        "task": p.sample.task,
        "n_options": len(p.sample.options),
        "answer": p.sample.answer,
    }
    if p.sample.groups:
        record["groups"] = dict(p.sample.groups)
    if scored is not None:
        result = choose([lp for lp, _ in scored], [t for _, t in scored], config.normalize)
        record.update(
            chosen=result.chosen, scores=result.scores, logprobs=result.logprobs, option_tokens=result.tokens
        )
        if generated is not None:
            text, chosen = generated
            record.update(generated=text, chosen_generate=chosen, correct_generate=chosen == p.sample.answer)
    else:
        text, chosen = generated
        record.update(chosen=chosen, generated=text)
    record["correct"] = record["chosen"] == p.sample.answer
    return record
