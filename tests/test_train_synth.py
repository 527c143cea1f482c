"""``tokpress.eval.synth.train`` on a micro config: the training rows are exactly the eval prompt and answer, the
shared-vision / token-drop forward equals ``model(...)`` unpatched and under ``tokpress.apply(outer="random")``,
a 3-step run writes a checkpoint that the Auto classes load offline and that generates, the curve has its fields,
runs are deterministic, ``--resume`` continues, and one batch is overfit (loss falls)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import tokpress
from tokpress.config import budget
from tokpress.eval.accuracy.data import chat_prompt, encode_answers, format_prompt
from tokpress.eval.synth import batches as sb
from tokpress.eval.synth import forward as fw
from tokpress.eval.synth import heads as sh
from tokpress.eval.synth import train as ts
from tokpress.eval.synth.tasks import LAYOUT_COLORS, SHAPES, SYNTH_FPS, make_questions, quadrant
from tokpress.eval.synth.train_config import DROP_PATTERNS
from tokpress.eval.video import video_metadata_kwargs


@pytest.fixture(scope="module")
def processor():
    return ts.build_processor()


def _spec(step: int = 0, drop: float = 0.0, videos=(("position", 0, False), ("needle", 1, False))) -> sb.BatchSpec:
    return sb.BatchSpec(step, 0, tuple(videos), drop, 0.1, DROP_PATTERNS)


def test_rows_are_the_eval_prompt_and_answer(processor):
    samples = make_questions("position", 3)
    video, rows = sb.encode_rows(processor, samples[0].frames, samples)
    assert len(rows) == len(samples) == 3
    for s, (ids, spans) in zip(samples, rows):
        ((start, stop),) = spans
        ref = _single(processor, s)  # the eval prompt, with the synth frame rate as video metadata
        assert ids[:start] == ref["input_ids"][0].tolist()
        assert ids[start:] == encode_answers(processor.tokenizer, [s.answer_word], True)[0] and stop == len(ids)
        assert ids[-1] == processor.tokenizer.eos_token_id
        assert torch.equal(video["pixel_values_videos"], ref["pixel_values_videos"])
        assert torch.equal(video["video_grid_thw"], ref["video_grid_thw"])
    batch = sb.build_batch(_spec())
    assert float(batch["second_per_grid_ts"][0]) == pytest.approx(float(ref["second_per_grid_ts"][0]))
    assert batch["input_ids"].shape[0] == 3 + 2  # three position questions, needle shape and colour
    assert batch["row_video"].tolist() == [0, 0, 0, 1, 1]
    assert bool(batch["keep"].sum(1).eq(batch["lengths"]).all())  # no drop requested
    assert batch["answer_mask"].sum(1).tolist() == [2] * 5  # the one-token word and <|im_end|>


def test_packed_row_starts_with_the_eval_prompt_and_targets_every_answer(processor):
    samples = make_questions("position", 3)
    _, rows = sb.encode_rows(processor, samples[0].frames, samples, pack=True)
    ((ids, spans),) = rows
    assert len(spans) == 3
    first = chat_prompt(processor, format_prompt(samples[0].question, samples[0].options, "word"))
    ref = processor(text=[first], videos=[samples[0].frames], return_tensors="pt")["input_ids"][0].tolist()
    assert ids[: spans[0][0]] == ref  # the first turn is exactly the eval prompt
    tok = processor.tokenizer
    for s, (start, stop) in zip(samples, spans):
        assert ids[start:stop] == encode_answers(tok, [s.answer_word], True)[0]
        assert tok.convert_ids_to_tokens(ids[start - 2 : start]) == ["<|im_start|>", "assistant"]
    assert ids.count(tok.convert_tokens_to_ids("<|video_pad|>")) == 128  # one video, later turns are text only
    batch = sb.build_batch(dataclasses.replace(_spec(), pack=True))
    assert batch["input_ids"].shape[0] == 2 and batch["row_video"].tolist() == [0, 1]
    assert batch["answer_first"].sum(1).tolist() == [3, 2]
    assert bool((batch["answer_first"] <= batch["answer_mask"]).all())


def test_token_labels_follow_the_scene():
    sample = make_questions("needle", 5)[0]
    labels = sb.token_labels(sample.layout)
    assert labels.shape == (128, len(sb.LABELS))
    row, col = sample.metadata["cell"]
    slot = sample.metadata["frames"][0] // 2
    needle = labels[slot * 16 + row * 4 + col]
    assert needle.tolist() == [
        LAYOUT_COLORS.index(sample.metadata["color"]),
        1 + SHAPES.index(sample.metadata["shape"]),
        slot,
        row,
        col,
        1,  # changed: nothing was on that cell at slot 0
    ]
    assert labels[(slot + 1) * 16 + row * 4 + col, :2].tolist() == [0, 0]  # gone again a slot later
    for d in sample.metadata["distractors"]:  # static: present in every slot, never "changed"
        r, c = d["cell"]
        static = labels[torch.arange(8) * 16 + r * 4 + c]
        assert static[:, 0].eq(LAYOUT_COLORS.index(d["color"])).all() and static[:, 5].eq(0).all()
    assert labels[:, 2].tolist() == [i // 16 for i in range(128)]  # Qwen's order: slot, row, col


def test_aux_heads_read_the_kept_video_tokens():
    """With the probes as identity-like readers on a crafted capture, the loss and accuracies are what the labels
    and the kept tokens make them (text tokens and dropped tokens are ignored)."""
    heads = sh.AuxHeads(hidden=8, slots=8, grid=4)
    labels = sb.token_labels(make_questions("flash_count", 2)[0].layout)[None]  # [1, 128, 6]
    feats = torch.zeros(128, 8)
    kept_tokens = torch.tensor([0, 5, 17, 127])
    capture = {
        "video_features": feats,
        "layer_hidden": torch.zeros(1, 6, 8),
        "video_ordinal": torch.tensor([[-1, *kept_tokens.tolist(), -1]]),
        "video_kept": torch.tensor([[False, True, True, True, True, False]]),
        "row_video": torch.tensor([0]),
    }
    with torch.no_grad():
        for lin in (heads.vision, heads.llm):
            lin.weight.zero_()
            lin.bias.zero_()
        loss, stats = heads(capture, labels)
    n_color = len(LAYOUT_COLORS)
    expected = [np.log(n) for n in (n_color, 1 + len(SHAPES))] * 2 + [np.log(n) for n in (8, 4, 4, 2)]
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)  # uniform logits: log(classes) each
    assert stats["slot_acc"] == pytest.approx(float((labels[0, kept_tokens, 2] == 0).float().mean()))
    assert stats["v_color_acc"] == pytest.approx(float((labels[0, :, 0] == 0).float().mean()))


def test_word_tokenizer_round_trips_every_prompt(processor):
    tok = processor.tokenizer
    for task in ("color_extremes", "direction", "flash_count", "needle", "position"):
        for s in make_questions(task, 11):
            text = format_prompt(s.question, s.options, "word")
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, text
            assert len(encode_answers(tok, list(s.options), False)[0]) == 1  # every option is one token
    assert tok("Top-Left")["input_ids"] == tok("top-left")["input_ids"]
    assert tok.unk_token_id in tok("zebra")["input_ids"]


def test_temporal_positions_are_distinct(processor):
    """tokens_per_second=1 with the synth frame rate (2 fps -> 1 s per temporal grid): temporal M-RoPE ids 0..7 in
    training and in the eval path (``prepare`` passes the metadata) on every supported transformers version;
    without metadata the processor assumes 24 fps and the ids collapse."""
    from tokpress.eval.accuracy.data import synth_samples
    from tokpress.eval.accuracy.scoring import prepare

    model = ts.build_model(ts.MICRO)
    batch = sb.build_batch(_spec(videos=(("direction", 0, False),)))
    pos = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    video = batch["input_ids"][0] == model.config.video_token_id
    t = pos[0, 0, video]
    assert (t - t.min()).unique().tolist() == list(range(8))
    sample = synth_samples(1)[0]
    for inputs, distinct in ((prepare(model, processor, sample).inputs, 8), (_single(processor, sample, False), 1)):
        ids = inputs["input_ids"]
        rope, _ = model.model.get_rope_index(
            ids,
            inputs["mm_token_type_ids"],
            video_grid_thw=inputs["video_grid_thw"],
            second_per_grid_ts=inputs["second_per_grid_ts"],
        )
        assert rope[0, 0, ids[0] == model.config.video_token_id].unique().numel() == distinct


def test_drop_patterns_keep_the_budget():
    batch = sb.build_batch(_spec(drop=1.0, videos=(("position", 5, False),) * 3))
    video = batch["input_ids"] == 251
    kept = (batch["keep"] & video).sum(1)
    assert bool((kept < video.sum(1)).all()) and bool((kept >= 1).all())
    assert bool((batch["keep"] | video)[:, : batch["lengths"].min()].all())  # text is never dropped


def _single(processor, sample, metadata: bool = True):
    text = chat_prompt(processor, format_prompt(sample.question, sample.options, "word"))
    meta = video_metadata_kwargs(processor, len(sample.frames), SYNTH_FPS) if metadata else {}
    return processor(text=[text], videos=[sample.frames], return_tensors="pt", **meta)


def test_forward_matches_model_and_tokpress_random(processor):
    model = ts.build_model(ts.MICRO, seed=1).eval()
    batch = sb.build_batch(_spec(videos=(("color_extremes", 2, False),)))
    rope = ts.RopeCache(model)
    positions = rope.positions(batch, model.config.video_token_id)
    sample = make_questions("color_extremes", 2)[0]
    inputs = _single(processor, sample)
    n = int(batch["answer_start"][0])
    row = {k: (v[:1] if k != "pixel_values_videos" else v) for k, v in batch.items()}
    keep = row["keep"].clone()
    keep[0, n:] = False  # score the prompt only
    with torch.no_grad():
        hidden, index, valid = fw.forward_rows(model, row, positions[:, :1], keep=keep)
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
        hidden, index, valid = fw.forward_rows(model, row, positions[:, :1], keep=keep)
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
    kinds = {"color_extremes/start", "color_extremes/end", "direction/direction", "flash_count/count"}
    kinds |= {"needle/shape", "needle/color", "position/colour", "mean"}
    assert set(summary["test_accuracy_by_question"]) == kinds  # the 5 test videos carry every kind of question
    assert "| needle/color | needle/shape |" in readme

    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(out, local_files_only=True).eval()
    proc = AutoProcessor.from_pretrained(out, local_files_only=True)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert model.config.vision_config.tokens_per_second == 1
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
    batch = sb.build_batch(_spec(videos=(("color_extremes", 0, False), ("flash_count", 1, False))))
    positions = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    losses = [ts.train_step(model, optimizer, batch, positions, lr=cfg.lr)[0] for _ in range(30)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


def test_worker_batches_equal_inline():
    cfg = ts.TrainConfig(batch=2, seed=4, token_drop=0.5)
    specs = ts.block_specs(cfg, 10, 12, ts.task_weights(cfg.tasks, None, "uniform"))
    inline = list(sb.iterate_batches(specs, ts.SynthConfig(), 0, 2))
    pooled = list(sb.iterate_batches(specs, ts.SynthConfig(), 2, 2))
    assert len(inline) == len(pooled) == 2
    for a, b in zip(inline, pooled):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_first_answer_token_weight():
    """loss(w) = (w * ce_first + rest) / (w + n_rest) per row: three weights on one batch must agree on ce_first and
    rest, and a huge weight leaves the first token's cross-entropy alone."""
    model = ts.build_model(ts.MICRO, seed=0).eval()
    batch = sb.build_batch(_spec(videos=(("direction", 0, False),)))
    positions = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    with torch.no_grad():
        rows = [fw.answer_loss(model, batch, positions, first_weight=w)[1].double() for w in (1.0, 3.0, 1e6)]
    n_rest = (batch["lengths"] - batch["answer_start"] - 1).double()  # answer tokens after the first
    first = rows[2]
    rest = rows[0] * (1 + n_rest) - first
    torch.testing.assert_close(rows[1] * (3 + n_rest), 3 * first + rest, rtol=1e-4, atol=1e-4)
    assert bool((rows[1] != rows[0]).any())


def test_evidence_tokens_hold_the_answer():
    for task, seed in (("color_extremes", 4), ("direction", 4), ("flash_count", 4), ("needle", 4), ("position", 4)):
        for q in make_questions(task, seed):
            labels = sb.token_labels(q.layout)
            ev = sb.evidence_tokens(q, labels)
            assert 1 <= int(ev.sum()) <= 16, (task, q.metadata["variant"])
            colors = {LAYOUT_COLORS[c] for c in labels[ev, 0].tolist()}
            if task == "needle":
                assert colors == {q.metadata["color"]} and set(labels[ev, 1].tolist()) == {
                    1 + SHAPES.index(q.metadata["shape"])
                }
            elif task == "position":
                assert colors == {q.metadata["variant"]}
                assert {quadrant(r, c, 4) for r, c in labels[ev, 3:5].tolist()} == {q.answer_word}
            elif task == "color_extremes":
                assert colors == {q.answer_word}
            elif task == "flash_count":
                assert colors == {"lamp-on"}


def test_evidence_head_equals_the_layers_attention_weights():
    """The evidence mass computed from the captured projections equals the eager attention weights of that head."""
    spec = dataclasses.replace(
        _spec(drop=0.5, videos=(("needle", 1, False), ("position", 2, False), ("color_extremes", 3, False))),
        pack=True,
    )
    batch = sb.build_batch(spec)
    model = ts.build_model(ts.MICRO, seed=2, attn="eager").eval()
    positions = ts.RopeCache(model).positions(batch, model.config.video_token_id)
    evidence = sh.EvidenceAttention(model, layer=1, head=1)
    weights = {}
    hook = model.model.language_model.layers[1].self_attn.register_forward_hook(
        lambda m, a, out: weights.update(w=out[1])
    )
    capture: dict = {}
    evidence.capture.active = True
    with torch.no_grad():
        fw.forward_rows(model, batch, positions, capture=capture)
    evidence.capture.active = False
    hook.remove()
    loss, mass = evidence.loss(batch, capture)
    evidence.remove()
    w = weights["w"][:, 1]  # [R, K, K], head 1
    index, valid, ordinal = capture["index"], capture["valid"], capture["video_ordinal"]
    masses = []
    for r in range(index.shape[0]):
        for a in range(batch["answer_query"].shape[1]):
            query = int(batch["answer_query"][r, a])
            if query < 0:
                continue
            j = int((index[r] == query).nonzero()[0, 0])
            keys = [
                k
                for k in range(index.shape[1])
                if valid[r, k] and ordinal[r, k] >= 0 and batch["answer_evidence"][r, a, ordinal[r, k]]
            ]
            if keys:
                masses.append(float(w[r, j, keys].sum()))
    assert len(masses) >= 4
    assert float(mass) == pytest.approx(np.mean(masses), rel=1e-4)
    assert float(loss) == pytest.approx(float(-torch.log(torch.tensor(masses) + 1e-6).mean()), rel=1e-4)


def test_init_from_starts_at_the_checkpoint(tmp_path):
    first = _run(tmp_path, "a")
    _run(tmp_path, "c", "--init-from", str(tmp_path / "a"))
    evals = [json.loads(x) for x in (tmp_path / "c" / ts.CURVE_FILE).read_text().splitlines() if "val_accuracy" in x]
    assert evals[0]["step"] == 0 and evals[0]["val_accuracy"] == first["best_val_accuracy"]
    assert "trained from scratch" in (tmp_path / "a" / "README.md").read_text()
    assert f"initialised from `{tmp_path / 'a'}`" in (tmp_path / "c" / "README.md").read_text()
