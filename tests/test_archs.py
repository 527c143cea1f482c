"""The shipped full-size architectures and their random-weight models built straight on the target device."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tokpress.errors import ConfigError
from tokpress.eval import archs, tiny

NAMES = ["llava-onevision-0.5b", "llava-onevision-7b", "qwen2-vl-7b", "qwen2.5-vl-3b", "qwen2.5-vl-7b"]

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
}  # fmt: skip


def test_arch_names():
    assert archs.arch_names() == NAMES


def test_unknown_arch_lists_the_names():
    with pytest.raises(ConfigError, match="qwen2.5-vl-7b"):
        archs.arch_config("qwen9-vl")


@pytest.mark.parametrize("name", NAMES)
def test_json_is_a_trimmed_published_config(name):
    data = json.loads((archs.ARCH_DIR / f"{name}.json").read_text())
    assert data["_source"].startswith("huggingface.co/")
    assert archs.arch_source(name) == data["_source"]
    assert "torch_dtype" not in data and "transformers_version" not in data


@pytest.mark.parametrize("name", NAMES)
def test_published_sizes(name):
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
