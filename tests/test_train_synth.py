"""``tokpress.eval.train_synth`` on a micro config: the training rows are exactly the eval prompt and answer, the
shared-vision / token-drop forward equals ``model(...)`` unpatched and under ``tokpress.apply(outer="random")``,
a 3-step run writes a checkpoint that the Auto classes load offline and that generates, the curve has its fields,
runs are deterministic, ``--resume`` continues, and one batch is overfit (loss falls)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from packaging.version import Version

import tokpress
from tokpress.config import budget
from tokpress.eval import train_synth as ts
from tokpress.eval.eval_data import chat_prompt, encode_answers, format_prompt
from tokpress.eval.synth import make_questions


@pytest.fixture(scope="module")
def processor():
    return ts.build_processor()


def _spec(step: int = 0, drop: float = 0.0, videos=(("position", 0, False), ("needle", 1, False))) -> ts.BatchSpec:
    return ts.BatchSpec(step, 0, tuple(videos), drop, 0.1, ts.DROP_PATTERNS)


def test_rows_are_the_eval_prompt_and_answer(processor):
    samples = make_questions("position", 3)
    video, rows = ts.encode_rows(processor, samples[0].frames, samples)
    assert len(rows) == len(samples) == 3
    for s, (ids, start) in zip(samples, rows):
        text = chat_prompt(processor, format_prompt(s.question, s.options, "word"))
        ref = processor(text=[text], videos=[s.frames], return_tensors="pt")
        assert ids[:start] == ref["input_ids"][0].tolist()
        assert ids[start:] == encode_answers(processor.tokenizer, [s.answer_word], True)[0]
        assert ids[-1] == processor.tokenizer.eos_token_id
        assert torch.equal(video["pixel_values_videos"], ref["pixel_values_videos"])
        assert torch.equal(video["video_grid_thw"], ref["video_grid_thw"])
    batch = ts.build_batch(_spec())
    assert float(batch["second_per_grid_ts"][0]) == pytest.approx(float(ref["second_per_grid_ts"][0]))
    assert batch["input_ids"].shape[0] == 3 + 2  # three position questions, needle shape and colour
    assert batch["row_video"].tolist() == [0, 0, 0, 1, 1]
    assert bool(batch["keep"].sum(1).eq(batch["lengths"]).all())  # no drop requested


@pytest.mark.skipif(
    Version(transformers.__version__) < Version("5.23"),
    reason="transformers < 5.23 truncates second_per_grid_ts to an int (2/24 -> 0): every temporal id is 0 there",
)
def test_temporal_positions_are_distinct(processor):
    """tokens_per_second=12 with the processor's 2/24 s per grid: temporal M-RoPE ids 0..7 (not all 0)."""
    model = ts.build_model(ts.MICRO)
    batch = ts.build_batch(_spec(videos=(("direction", 0, False),)))
    pos = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    video = batch["input_ids"][0] == model.config.video_token_id
    t = pos[0, 0, video]
    assert (t - t.min()).unique().tolist() == list(range(8))


def test_drop_patterns_keep_the_budget():
    batch = ts.build_batch(_spec(drop=1.0, videos=(("position", 5, False),) * 3))
    video = batch["input_ids"] == 251
    kept = (batch["keep"] & video).sum(1)
    assert bool((kept < video.sum(1)).all()) and bool((kept >= 1).all())
    assert bool((batch["keep"] | video)[:, : batch["lengths"].min()].all())  # text is never dropped


def _single(processor, sample):
    text = chat_prompt(processor, format_prompt(sample.question, sample.options, "word"))
    return processor(text=[text], videos=[sample.frames], return_tensors="pt")


def test_forward_matches_model_and_tokpress_random(processor):
    model = ts.build_model(ts.MICRO, seed=1).eval()
    batch = ts.build_batch(_spec(videos=(("color_extremes", 2, False),)))
    rope = ts.RopeCache(model)
    positions = rope.positions(batch, model.config.video_token_id)
    sample = make_questions("color_extremes", 2)[0]
    inputs = _single(processor, sample)
    n = int(batch["answer_start"][0])
    row = {k: (v[:1] if k != "pixel_values_videos" else v) for k, v in batch.items()}
    keep = row["keep"].clone()
    keep[0, n:] = False  # score the prompt only
    with torch.no_grad():
        hidden, index, valid = ts.forward_rows(model, row, positions[:, :1], keep=keep)
        last = model.lm_head(hidden[0, int(valid[0].sum()) - 1])
        ref = model(**inputs).logits[0, -1]
        torch.testing.assert_close(last, ref, atol=1e-5, rtol=1e-5)
        # the same kept set as tokpress's ``random`` outer policy (seeded generator, sorted subset)
        ratio, seed = 0.4, 3
        chosen = torch.randperm(128, generator=torch.Generator().manual_seed(seed))[: budget(ratio, 128)].sort().values
        where = (row["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
        dropped = torch.ones(128, dtype=torch.bool)
        dropped[chosen] = False
        keep[0, where[dropped]] = False
        hidden, index, valid = ts.forward_rows(model, row, positions[:, :1], keep=keep)
        last = model.lm_head(hidden[0, int(valid[0].sum()) - 1])
        with tokpress.compressed(model, outer="random", retain_ratio=ratio, outer_options={"seed": seed}):
            ref = model(**inputs).logits[0, -1]
            assert model.tokpress.last.kept["outer"][0][0] == chosen.tolist()
    torch.testing.assert_close(last, ref, atol=1e-5, rtol=1e-5)


def _run(tmp_path, name, *extra):
    args = ["--out", str(tmp_path / name), "--micro", "--steps", "3", "--batch", "2", "--val-n", "5", "--test-n", "5"]
    args += [
        "--eval-every",
        "3",
        "--log-every",
        "1",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--token-drop",
        "0.5",
        *extra,
    ]
    return ts.train(ts.parse_args(args))


def test_smoke_run_checkpoint_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary = _run(tmp_path, "a")
    out = tmp_path / "a"
    assert summary["status"] == "finished" and summary["steps_done"] == 3
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md"):
        assert (out / name).is_file(), name
    readme = (out / "README.md").read_text()
    assert "--steps 3" in readme and "seed 0" in readme and "| test | 5 |" in readme
    lines = [json.loads(x) for x in (out / ts.CURVE_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines if "val_accuracy" not in r] == [1, 2, 3]
    for r in lines:
        assert {"step", "loss", "lr", "elapsed_s", "videos_seen"} <= set(r)
    evals = [r for r in lines if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3]
    assert set(evals[-1]["val_accuracy"]) == {*ts.TASKS, "mean"}

    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(out, local_files_only=True).eval()
    proc = AutoProcessor.from_pretrained(out, local_files_only=True)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert model.config.vision_config.tokens_per_second == 12
    sample = make_questions("needle", 0)[0]
    inputs = _single(proc, sample)
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert generated.shape[0] == 1 and prompt_len < generated.shape[1] <= prompt_len + 3

    # same arguments, same run; then --resume of a finished run only re-reports
    again = _run(tmp_path, "b")
    assert [json.loads(x)["loss"] for x in (tmp_path / "b" / ts.CURVE_FILE).read_text().splitlines()] == [
        r["loss"] for r in lines
    ]
    a = torch.load(tmp_path / "a.state" / ts.STATE_FILE, weights_only=False)["model"]
    b = torch.load(tmp_path / "b.state" / ts.STATE_FILE, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["best_val"] == summary["best_val"]


def test_time_limit_then_resume(tmp_path):
    stopped = _run(tmp_path, "r", "--time-limit", "0")
    assert stopped["steps_done"] == 1 and "resume" in stopped["status"] and "test_accuracy" not in stopped
    resumed = _run(tmp_path, "r", "--time-limit", "600", "--resume")
    assert resumed["status"] == "finished" and resumed["steps_done"] == 3 and "test_accuracy" in resumed
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / ts.CURVE_FILE).read_text().splitlines()]
    assert steps == [0, 1, 1, 2, 3, 3]  # eval at 0, log 1, eval at the stop, then the rest of the block


def test_overfits_one_batch():
    cfg = ts.TrainConfig(lr=3e-3, size=ts.MICRO)
    model = ts.build_model(ts.MICRO, seed=0)
    optimizer = ts.make_optimizer(model, cfg)
    batch = ts.build_batch(_spec(videos=(("color_extremes", 0, False), ("flash_count", 1, False))))
    positions = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    losses = [ts.train_step(model, optimizer, batch, positions, lr=cfg.lr)[0] for _ in range(30)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


def test_worker_batches_equal_inline():
    cfg = ts.TrainConfig(batch=2, seed=4, token_drop=0.5)
    specs = ts.block_specs(cfg, 10, 12, ts.task_weights(cfg.tasks, None, "uniform"))
    inline = list(ts.iterate_batches(specs, ts.SynthConfig(), 0, 2))
    pooled = list(ts.iterate_batches(specs, ts.SynthConfig(), 2, 2))
    assert len(inline) == len(pooled) == 2
    for a, b in zip(inline, pooled):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_first_answer_token_weight():
    """loss(w) = (w * ce_first + rest) / (w + n_rest) per row: three weights on one batch must agree on ce_first and
    rest, and a huge weight leaves the first token's cross-entropy alone."""
    model = ts.build_model(ts.MICRO, seed=0).eval()
    batch = ts.build_batch(_spec(videos=(("direction", 0, False),)))
    positions = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    with torch.no_grad():
        rows = [ts.answer_loss(model, batch, positions, first_weight=w)[1].double() for w in (1.0, 3.0, 1e6)]
    n_rest = (batch["lengths"] - batch["answer_start"] - 1).double()  # answer tokens after the first
    first = rows[2]
    rest = rows[0] * (1 + n_rest) - first
    torch.testing.assert_close(rows[1] * (3 + n_rest), 3 * first + rest, rtol=1e-4, atol=1e-4)
    assert bool((rows[1] != rows[0]).any())
