"""The shipped full-size architectures and their random-weight models built straight on the target device."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tokpress.errors import ConfigError
from tokpress.eval.bench import archs
from tokpress.eval.tiny import families as tiny

NAMES = [
    "llava-onevision-0.5b",
    "llava-onevision-7b",
    "qwen2-vl-7b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "qwen3-vl-30b-a3b",
    "qwen3-vl-8b",
    "qwen3.5-27b",
]

# Published sizes (model cards / config.json of the public checkpoints).
PUBLISHED = {
    "qwen2.5-vl-7b": dict(
        family="qwen2_5_vl", hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, head_dim=128,
        vocab=152064, tied_embeddings=False, vision_depth=32, vision_width=1280, vision_intermediate=3420,
        vision_heads=16, vision_mlp="gated", out_hidden=3584, window_size=112, fullatt_blocks=[7, 15, 23, 31],
        patch=14, temporal_patch=2, merge=2, merger_width=5120,
    ),
    "qwen2.5-vl-3b": dict(
        family="qwen2_5_vl", hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2, head_dim=128,
        vocab=151936, tied_embeddings=True, vision_depth=32, vision_width=1280, vision_intermediate=3420,
        out_hidden=2048, window_size=112, fullatt_blocks=[7, 15, 23, 31], patch=14, merge=2,
    ),
    "qwen2-vl-7b": dict(
        family="qwen2_vl", hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, head_dim=128,
        vocab=152064, tied_embeddings=False, vision_depth=32, vision_width=1280, vision_intermediate=5120,
        vision_heads=16, vision_mlp="plain", out_hidden=3584, window_size=0, patch=14, temporal_patch=2, merge=2,
    ),
    "llava-onevision-7b": dict(
        family="llava_onevision", hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, head_dim=128,
        vocab=152128, tied_embeddings=False, vision_kind="siglip", vision_depth=26, vision_width=1152,
        vision_intermediate=4304, vision_heads=16, patch=14, image_size=384, vision_head=False,
    ),
    "llava-onevision-0.5b": dict(
        family="llava_onevision", hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, head_dim=64,
        vocab=152000, tied_embeddings=True, vision_kind="siglip", vision_depth=26, vision_width=1152,
        vision_intermediate=4304, patch=14, image_size=384, vision_head=False,
    ),
    "qwen3-vl-8b": dict(
        family="qwen3_vl", hidden=4096, intermediate=12288, layers=36, heads=32, kv_heads=8, head_dim=128,
        vocab=151936, tied_embeddings=False, attn_output_gate=False, mlp_types=["dense"] * 36,
        ffn_active=[12288] * 36, layer_types=["full_attention"] * 36, vision_kind="qwen3_vl", vision_depth=27,
        vision_width=1152, vision_intermediate=4304, vision_heads=16, vision_mlp="plain", out_hidden=4096,
        window_size=0, patch=16, temporal_patch=2, merge=2, merger_width=4608, deepstack_mergers=3,
    ),
    "qwen3-vl-30b-a3b": dict(
        family="qwen3_vl_moe", hidden=2048, layers=48, heads=32, kv_heads=4, head_dim=128, vocab=151936,
        tied_embeddings=False, mlp_types=["moe"] * 48, experts=128, experts_per_token=8, moe_intermediate=768,
        shared_expert_intermediate=0, ffn_active=[8 * 768] * 48, vision_kind="qwen3_vl", vision_depth=27,
        vision_width=1152, out_hidden=2048, patch=16, merge=2, deepstack_mergers=3,
    ),
    "qwen3.5-27b": dict(
        family="qwen3_5", hidden=5120, intermediate=17408, layers=64, heads=24, kv_heads=4, head_dim=256,
        vocab=248320, tied_embeddings=False, attn_output_gate=True,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 16,
        mlp_types=["dense"] * 64, linear_num_key_heads=16, linear_num_value_heads=48, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, vision_kind="qwen3_vl", vision_depth=27,
        vision_width=1152, vision_intermediate=4304, out_hidden=5120, patch=16, temporal_patch=2, merge=2,
        deepstack_mergers=0,
    ),
}  # fmt: skip


def test_arch_names():
    names = archs.arch_names()
    assert names == sorted(names)
    assert set(NAMES) <= set(names)  # other families' files (InternVL, LLaVA-NeXT-Video) may sit beside them


def test_unknown_arch_lists_the_names():
    with pytest.raises(ConfigError, match="qwen2.5-vl-7b"):
        archs.arch_config("qwen9-vl")


@pytest.mark.parametrize("name", NAMES)
def test_json_is_a_trimmed_published_config(name):
    data = json.loads((archs.ARCH_DIR / f"{name}.json").read_text())
    assert data["_source"].startswith("huggingface.co/")
    assert archs.arch_source(name) == data["_source"]
    assert "torch_dtype" not in data and "transformers_version" not in data


def _require_type(model_type: str) -> None:
    """Skip when the installed transformers lacks ``model_type``."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        pytest.skip(f"transformers {__version__} has no {model_type!r} (added in a later release)")


def _require_arch(name: str) -> None:
    """Skip when the installed transformers lacks the architecture's model_type."""
    _require_type(json.loads((archs.ARCH_DIR / f"{name}.json").read_text())["model_type"])


@pytest.mark.parametrize("name", NAMES)
def test_published_sizes(name):
    _require_arch(name)
    config = archs.arch_config(name)
    shape = archs.model_shape(config)
    assert {k: shape[k] for k in PUBLISHED[name]} == PUBLISHED[name]
    assert config.model_type == shape["family"]
    assert "_source" not in config.to_dict()


def test_published_token_ids_and_grids():
    qwen = archs.arch_config("qwen2.5-vl-7b")
    assert (qwen.video_token_id, qwen.image_token_id, qwen.vision_start_token_id) == (151656, 151655, 151652)
    assert qwen.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    llava = archs.arch_config("llava-onevision-7b")
    assert (llava.video_token_id, llava.image_token_id) == (151647, 151646)
    side = llava.vision_config.image_size // llava.vision_config.patch_size
    assert side == 27  # SigLIP so400m at 384 px: 27 x 27 patches per frame
    assert (llava.vision_feature_layer, llava.vision_feature_select_strategy) == (-1, "full")
    assert len(llava.image_grid_pinpoints) == 36


def test_arch_config_returns_fresh_objects():
    first = archs.arch_config("qwen2-vl-7b")
    first.text_config.num_hidden_layers = 1
    assert archs.arch_config("qwen2-vl-7b").text_config.num_hidden_layers == 28


def test_new_arch_token_ids_and_rope():
    _require_arch("qwen3-vl-30b-a3b")
    _require_arch("qwen3.5-27b")
    for name in ("qwen3-vl-8b", "qwen3-vl-30b-a3b"):
        config = archs.arch_config(name)
        assert (config.image_token_id, config.video_token_id) == (151655, 151656)
        assert (config.vision_start_token_id, config.vision_end_token_id) == (151652, 151653)
        rope = config.text_config.rope_parameters
        assert (rope["mrope_section"], rope["mrope_interleaved"], rope["rope_theta"]) == ([24, 20, 20], True, 5e6)
        assert list(config.vision_config.deepstack_visual_indexes) == [8, 16, 24]
    hybrid = archs.arch_config("qwen3.5-27b")
    assert (hybrid.image_token_id, hybrid.video_token_id) == (248056, 248057)
    assert (hybrid.vision_start_token_id, hybrid.vision_end_token_id) == (248053, 248054)
    rope = hybrid.text_config.rope_parameters
    assert (rope["mrope_section"], rope["partial_rotary_factor"], rope["rope_theta"]) == ([11, 11, 10], 0.25, 1e7)


def test_qwen3_vl_8b_parameter_count_matches_the_published_8_77b():
    _require_arch("qwen3-vl-8b")
    s = archs.model_shape(archs.arch_config("qwen3-vl-8b"))
    d, hd, v = s["hidden"], s["head_dim"], s["vocab"]
    layer = d * hd * (2 * s["heads"] + 2 * s["kv_heads"]) + 3 * d * s["intermediate"]  # q, o, k, v; SwiGLU
    text = 2 * v * d + s["layers"] * layer  # untied embedding and lm_head
    w, m = s["vision_width"], s["merger_width"]
    vision = s["vision_depth"] * (4 * w * w + 2 * w * s["vision_intermediate"])  # blocks
    vision += (1 + s["deepstack_mergers"]) * (m * m + m * s["out_hidden"])  # merger + 3 deepstack mergers
    vision += 3 * 2 * 16 * 16 * w + 2304 * w  # Conv3d patch embedding, learned position table
    # matrices only (norms and biases add < 2M): 8.19B decoder + 0.57B vision
    assert 8.75e9 < text + vision < 8.77e9


# ----------------------------------------------------------------------------------------------------------------
# Synthetic inputs: the processors' token layouts, counted by hand


def _count(ids: torch.Tensor, token: int) -> int:
    return int((ids == token).sum())


def test_qwen3_vl_layout_has_timestamped_blocks_per_temporal_patch():
    from tokpress.eval.bench.inputs import synthetic_video_inputs, video_token_layout

    _require_arch("qwen3-vl-8b")
    config = archs.arch_config("qwen3-vl-8b")
    # 9 frames at 448 px: 448 / 32 = 14 merge units -> 28 x 28 patches, 196 tokens a block; the 9th frame is
    # repeated to make 5 temporal patches. Frames at 0, 0.5, ..., 4.0 s (2 fps); patch stamps 0.25, 1.25, 2.25,
    # 3.25 and 4.0 -> "<0.2 seconds>" ... "<4.0 seconds>", 6 tokens each ("<", "0", ".", "2", " seconds", ">").
    layout = video_token_layout(config, 9, 448, 448)
    assert (layout["grid"], layout["tokens"], layout["blocks"], layout["block_tokens"]) == ((5, 28, 28), 980, 5, 196)
    assert layout["texts"] == [6] * 5
    inputs = synthetic_video_inputs(config, 9, 448, 448, batch=2, text_before=16, text_after=32)
    ids = inputs["input_ids"]
    # 16 + 5 x (6 + vision_start + 196 + vision_end) + 32
    assert ids.shape == (2, 16 + 5 * 204 + 32)
    assert _count(ids[0], 151656) == 980 and _count(ids[0], 151652) == _count(ids[0], 151653) == 5
    starts = (ids[0] == 151652).nonzero().flatten().tolist()
    assert [b - a for a, b in zip(starts, starts[1:])] == [204] * 4  # 196 + end + 6 timestamp ids + start
    assert inputs["video_grid_thw"].tolist() == [[5, 28, 28]] * 2  # one row per video
    assert torch.equal(inputs["mm_token_type_ids"], (ids == 151656).long() * 2)
    assert inputs["pixel_values_videos"].shape == (2 * 5 * 28 * 28, 3 * 2 * 16 * 16)
    # 24 frames: 12 patches stamped 0.25 ... 11.25 s; the last two ("<10.2 seconds>", "<11.2 seconds>") take 7
    assert video_token_layout(config, 24, 448, 448)["texts"] == [6] * 10 + [7] * 2
    # sides are rounded to multiples of 32: 450 -> 448, 300 -> 288 (28 x 18 patches, 126 tokens a block)
    assert video_token_layout(config, 2, 450, 300)["grid"] == (1, 28, 18)
    with pytest.raises(ConfigError, match="at least 2 frames"):
        video_token_layout(config, 1, 448, 448)


def test_internvl_and_llava_next_video_layouts():
    _require_type("internvl")
    _require_type("llava_next_video")
    from transformers import InternVLConfig, LlavaNextVideoConfig

    from tokpress.eval.bench.inputs import synthetic_video_inputs, video_token_layout

    internvl = InternVLConfig()  # InternViT 448 px, patch 14, pixel shuffle 0.5: (32 / 2)^2 = 256 per frame
    inputs = synthetic_video_inputs(internvl, 3, text_before=16, text_after=32)
    # "Frame1: <img>" (4 + 1 tokens) + 256 + "</img>", three frames joined by "\n": 3 x 262 + 2
    assert inputs["input_ids"].shape == (1, 16 + 3 * 262 + 2 + 32)
    assert _count(inputs["input_ids"], internvl.image_token_id) == 768
    assert inputs["pixel_values"].shape == (3, 3, 448, 448)
    assert video_token_layout(internvl, 12, 0, 0)["texts"] == [4] * 9 + [5] * 3  # "Frame10: " has 5 tokens
    lnv = LlavaNextVideoConfig()  # CLIP 336 px / 14 = 24 x 24, average-pooled by 2: 144 per frame
    inputs = synthetic_video_inputs(lnv, 4, batch=2, text_before=16, text_after=32)
    assert inputs["input_ids"].shape == (2, 16 + 4 * 144 + 32)
    ids = inputs["input_ids"][1]
    where = (ids == lnv.video_token_id).nonzero().flatten()
    assert len(where) == 576 and where[-1] - where[0] == 575  # one contiguous run
    assert inputs["pixel_values_videos"].shape == (2, 4, 3, 336, 336)


def test_llava_onevision_layout_reports_the_patch_grid():
    from tokpress.eval.bench.flops_exact import video_tokens
    from tokpress.eval.bench.inputs import video_token_layout

    config = archs.arch_config("llava-onevision-7b")
    layout = video_token_layout(config, 32, 720, 1280)
    assert (layout["grid"], layout["tokens"]) == ((32, 27, 27), 32 * 196 + 1)
    assert video_tokens(config, layout["grid"]) == layout["tokens"]


# ----------------------------------------------------------------------------------------------------------------
# random_weight_model on tiny configs: buffers exactly those of a normally built model, working forward


def _buffers(model):
    return {name: b for name, b in model.named_buffers()}


@pytest.mark.parametrize("family", tiny.FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_buffers_equal_a_normally_built_model(family, dtype):
    from transformers import AutoModelForImageTextToText

    config = tiny.tiny_config(family)
    reference = AutoModelForImageTextToText.from_config(tiny.tiny_config(family), dtype=dtype)
    model = archs.random_weight_model(config, "cpu", dtype)
    ours, theirs = _buffers(model), _buffers(reference)
    assert ours.keys() == theirs.keys() and ours
    for name, buffer in theirs.items():
        assert ours[name].dtype == buffer.dtype, name
        assert torch.equal(ours[name], buffer), name
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert config.to_dict() == tiny.tiny_config(family).to_dict()  # the caller's config is not modified


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_random_weights_are_seeded_and_run(family):
    config = tiny.tiny_config(family)
    rng = torch.get_rng_state()
    a = archs.random_weight_model(config, "cpu", torch.float32, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left alone
    b = archs.random_weight_model(config, "cpu", torch.float32, seed=1)
    c = archs.random_weight_model(config, "cpu", torch.float32, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    weight = next(k for k in sa if k.endswith("q_proj.weight"))
    assert not torch.equal(sa[weight], sc[weight])
    assert sa[weight].std().item() == pytest.approx(archs.WEIGHT_STD, rel=0.2)
    assert not a.training
    with torch.no_grad():
        logits = a(**tiny.make_inputs(family)).logits
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------------------------
# The real LLaVA-OneVision-0.5B, built in bfloat16 on the CPU without a float32 copy


class _AllocationLog(TorchDispatchMode):
    """Records every tensor an aten op returns on a real (non-meta) device."""

    def __init__(self) -> None:
        super().__init__()
        self.fp32_elements = 0  # largest float32 tensor seen
        self.empty_bytes = 0  # bytes of storage created by the empty* factories

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                if t.dtype == torch.float32:
                    self.fp32_elements = max(self.fp32_elements, t.numel())
                if func.__name__.startswith("empty"):
                    self.empty_bytes += t.untyped_storage().nbytes()
        return out


@pytest.fixture(scope="module")
def llava_05b():
    log = _AllocationLog()
    with torch.no_grad(), log:
        model = archs.random_weight_model("llava-onevision-0.5b", "cpu", torch.bfloat16)
    return model, log


def test_llava_05b_is_bf16_without_fp32_materialisation(llava_05b):
    model, log = llava_05b
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert {p.device.type for p in params} == {"cpu"}
    n_params = sum(p.numel() for p in params)
    assert 0.85e9 < n_params < 0.95e9  # 0.5B LLM (tied 152000 x 896 embeddings) + 0.4B SigLIP (26 layers)
    # No float32 tensor larger than a rotary table was ever created, and storage was allocated once, in bf16
    # (plus a transient second copy of the tied 152000 x 896 embedding until it is re-tied): far below the
    # 4 bytes per parameter a float32 model would take.
    assert log.fp32_elements < 10_000
    assert log.empty_bytes < 2 * n_params + 2 * 152000 * 896 + 1_000_000
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_llava_05b_buffers_match_a_normal_construction(llava_05b):
    model, _ = llava_05b
    rotary = model.model.language_model.rotary_emb
    reference = type(rotary)(config=model.config.text_config)  # what a normal construction computes
    assert rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, reference.inv_freq)
    assert torch.equal(rotary.original_inv_freq, reference.inv_freq)
    # the published values: theta 1e6, head_dim 64
    expected = 1.0 / (1e6 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    assert torch.allclose(rotary.inv_freq, expected, rtol=1e-6)
    assert torch.equal(model.model.vision_tower.embeddings.position_ids, torch.arange(729).unsqueeze(0))


def test_llava_05b_short_forward_is_finite(llava_05b):
    model, _ = llava_05b
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[151644, 872, 198, 9707, 0, 151645]])).logits
    assert logits.shape == (1, 6, 152000)
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------------------------
# The tiny models of the new families (modules tokpress.eval.tiny.<family>, written beside this work)


def _family_module(family: str):
    import importlib.util

    if importlib.util.find_spec(f"tokpress.eval.tiny.{family}") is None:
        pytest.skip(f"tokpress.eval.tiny.{family} does not exist yet")
    return tiny.family_module(family)


@pytest.mark.parametrize("family", getattr(tiny, "MODULE_FAMILIES", ()))
def test_tiny_family_runs_and_its_placeholders_match_the_count(family):
    from tokpress.eval.bench import flops_exact as fe

    module = _family_module(family)
    config = module.config()
    shape = archs.model_shape(config)
    assert shape["family"] == config.model_type
    model = archs.random_weight_model(config, "cpu", torch.float32, seed=3)
    inputs = module.make_inputs()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    placeholder = config.image_token_id if config.model_type == "internvl" else config.video_token_id
    grid = fe.input_video_grid(config, inputs)
    assert fe.video_tokens(config, grid) == int((inputs["input_ids"][0] == placeholder).sum())


@pytest.mark.parametrize(
    "name, kind, per_frame", [("internvl3.5-8b", "internvit", 256), ("llava-next-video-7b", "clip", 144)]
)
def test_other_families_shipped_configs_have_a_shape(name, kind, per_frame):
    from tokpress.eval.bench import flops_exact as fe

    if name not in archs.arch_names():
        pytest.skip(f"{name}.json is not shipped yet")
    _require_arch(name)
    config = archs.arch_config(name)
    shape = archs.model_shape(config)
    assert (shape["vision_kind"], shape["vision_cls"], shape["layer_types"]) == (
        kind,
        1,
        ["full_attention"] * shape["layers"],
    )
    grid = fe.patch_grid(config, 8, 720, 1280)  # every frame resized to the tower's image_size
    assert fe.video_tokens(config, grid) == 8 * per_frame
