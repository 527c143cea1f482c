"""The engine's FastV scores equal the model's true last-query attention at layer K-1 (mean over heads).

A recording inner policy captures what the engine hands to attention-based policies; the reference is the
unpatched model's own eager attention probabilities (``output_attentions=True``).
"""

from __future__ import annotations

import pytest
import torch

import tokpress
from tokpress import registry
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.tiny.families import ALL_FAMILIES, make_inputs, tiny_config, tiny_model
from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan
from tokpress.registry import register_policy

NAME = "record_scores_test"
PROMPTS = [(5, 7), (3, 4)]  # different lengths: the second sample is left-padded


class RecordScores(InnerPolicy):
    """FastV-like: keeps the top-budget tokens by attention, recording what it was given."""

    needs_attention = True
    records: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        assert tokens.attention is not None
        RecordScores.records.append((tokens.sample, tokens.attention.clone(), tokens.ordinals.clone()))
        return Plan(topk_sorted(tokens.attention, budget))


@pytest.fixture(scope="module", autouse=True)
def record_policy():
    """Register the recording policy for this module only, so other tests never see it among the policies."""
    if NAME not in tokpress.policy_names("inner"):
        register_policy(NAME, stage="inner")(RecordScores)
    yield
    registry._POLICIES.pop(("inner", NAME), None)


_REFERENCE: dict[str, tuple[dict, tuple[torch.Tensor, ...]]] = {}


def reference(family: str) -> tuple[dict, tuple[torch.Tensor, ...]]:
    """Inputs and per-layer eager attention probabilities of the unpatched model (cached per family)."""
    if family not in _REFERENCE:
        model = tiny_model(family, attn="eager", seed=0)
        assert getattr(model, "tokpress", None) is None
        inputs = make_inputs(family, prompts=PROMPTS)
        with torch.no_grad():
            out = model(**inputs, output_attentions=True)
        types = getattr(model.config.text_config, "layer_types", None) or []
        assert len(out.attentions) == model.config.text_config.num_hidden_layers - types.count("linear_attention")
        _REFERENCE[family] = (inputs, out.attentions)
    return _REFERENCE[family]


def recorded_scores(family: str, attn: str, layer: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    model = tiny_model(family, attn=attn, seed=0)
    tokpress.apply(model, inner=NAME, inner_layer=layer, retain_ratio=0.5)
    inputs = make_inputs(family, prompts=PROMPTS)
    RecordScores.records.clear()
    with torch.no_grad():
        model(**inputs)
    records = list(RecordScores.records)
    RecordScores.records.clear()
    assert sorted(s for s, _, _ in records) == list(range(len(PROMPTS))), "one plan per sample"
    return {s: (att, ords) for s, att, ords in records}


def check_against_reference(family: str, layer: int, got: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    inputs, attentions = reference(family)
    ids = inputs["input_ids"]
    # the score layer: K-1, or on a hybrid model the last attention layer before K; `attentions` holds only the
    # attention layers' maps
    config = tiny_config(family).get_text_config()
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    attention_layers = [i for i, t in enumerate(types) if t != "linear_attention"]
    score_layer = max(i for i in attention_layers if i < layer)
    probs = attentions[attention_layers.index(score_layer)][:, :, -1, :].double().mean(1)  # [B, L]: last query
    placeholder = video_placeholder_id(tiny_config(family))
    for b in range(ids.shape[0]):
        video_pos = (ids[b] == placeholder).nonzero().squeeze(1)
        scores, ordinals = got[b]
        # droppable video tokens: all of them for Qwen, all but the one trailing newline for LLaVA-OneVision
        n = video_pos.numel() - (1 if family == "llava_onevision" else 0)
        assert ordinals.tolist() == list(range(n))
        assert scores.shape == (n,) and scores.dtype == torch.float32
        want = probs[b, video_pos[ordinals]]
        # the reference must be informative: not (near-)uniform, so a wrong order or position would show
        assert (want.max() - want.min()) > 1e-3 * want.mean()
        torch.testing.assert_close(scores.double(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [1, 2, 3])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_scores_match_eager_attention(family, layer):
    check_against_reference(family, layer, recorded_scores(family, "eager", layer))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_scores_under_sdpa_match_eager_reference(family):
    eager, sdpa = tiny_model(family, attn="eager", seed=0), tiny_model(family, attn="sdpa", seed=0)
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    for (name, a), (_, b) in zip(eager.state_dict().items(), sdpa.state_dict().items()):
        assert torch.equal(a, b), name  # same weights: only the attention implementation differs
    check_against_reference(family, 2, recorded_scores(family, "sdpa", 2))


PROJ_NAME = "record_projections_test"


class RecordProjections(InnerPolicy):
    """Keeps the first tokens, recording the attention map it computes from ``InnerTokens.projections``."""

    needs_attention = True
    attention_queries = "projections"
    records: list = []

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        p = tokens.projections
        heads, kv = p.queries.shape[1], p.keys.shape[0]
        keys = p.keys.float().repeat_interleave(heads // kv, dim=0)  # [H, S, d]
        logits = torch.einsum("qhd,hsd->hqs", p.queries.float(), keys) * p.scaling
        allowed = p.key_valid[None] & (torch.arange(keys.shape[1])[None] <= p.query_index[:, None])
        probs = logits.masked_fill(~allowed[None], float("-inf")).softmax(-1).mean(0)  # [Q, S]
        RecordProjections.records.append((tokens.sample, probs[:, p.candidates], p.query_index - p.query_index[0], p))
        return Plan(torch.arange(budget))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision", "qwen3_5", "internvl"])
def test_projections_give_the_eager_attention_map(family):
    """Every real query's attention over the candidates, computed by a policy from the projections the engine hands
    it (SDPA model), equals the eager model's attention probabilities; the question rows are the text after the
    video."""
    if PROJ_NAME not in tokpress.policy_names("inner"):
        register_policy(PROJ_NAME, stage="inner")(RecordProjections)
    try:
        model = tiny_model(family, attn="sdpa", seed=0)
        tokpress.apply(model, inner=PROJ_NAME, inner_layer=2, retain_ratio=0.5)
        inputs = make_inputs(family, prompts=PROMPTS)
        RecordProjections.records.clear()
        with torch.no_grad():
            model(**inputs)
        records = sorted(RecordProjections.records, key=lambda r: r[0])
    finally:
        registry._POLICIES.pop(("inner", PROJ_NAME), None)
    _, attentions = reference(family)
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    config = tiny_config(family).get_text_config()
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    attention_layers = [i for i, t in enumerate(types) if t != "linear_attention"]
    probs = attentions[attention_layers.index(max(i for i in attention_layers if i < 2))].double().mean(1)
    placeholder = video_placeholder_id(tiny_config(family))
    assert [r[0] for r in records] == [0, 1]
    for b, got, offsets, p in records:
        real = mask[b].nonzero().squeeze(1)
        video = (ids[b] == placeholder).nonzero().squeeze(1)
        n = video.numel() - (1 if family == "llava_onevision" else 0)
        assert got.shape == (real.numel(), n)
        want = probs[b][real][:, video[:n]]
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        assert torch.equal(offsets, real - real[0])
        assert p.question.tolist() == (real > video.max()).tolist()
