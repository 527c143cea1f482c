"""``aim`` (inner stage) — AIM (Zhong et al., ICCV 2025, "AIM: Adaptive Inference of Multi-Modal LLMs via Token
Merging and Pruning"), progressive pruning inside the LLM.

Algorithm: from a middle layer on, after every layer the visual tokens are ranked by a PageRank importance and the
least important are removed, so the kept fraction falls linearly with depth; text tokens are never removed. The
importance of a token at layer ``l``: ``M = softmax(QK^T * scaling / tau)`` over every token of the sequence (causal,
temperature ``tau = 0.1``; rows are queries, columns keys), ``p <- p M`` five times from the uniform ``p``
(mass flows from each query to the keys it attends to), and the root mean square of ``p`` over the heads. The
authors (Qwen2-7B, 28 layers) score with layer 14's attention and keep ``max(0, 1 - (l - 13) * 0.125)`` of the
original visual tokens after layer ``l >= 14``: 87.5 % enter layer 15, 75 % layer 16, ..., 12.5 % layer 21, none
from layer 22.

Stages: one tokpress inner stage per layer, ``K, K + 1, ..., K + S - 1`` (:meth:`AIMInnerPolicy.schedule`); the
stage at layer ``k`` ranks with layer ``k - 1``'s attention (the authors' "prune after layer ``k - 1``"). ``K``
defaults to ``L // 2 + 1`` (15 of 28). Each stage's ratio is relative to the tokens entering it, chosen so the
cumulative keep follows a line: stage ``i`` (1-based) leaves ``c_i = 1 - i (1 - r) / S`` of the tokens entering
the first stage, ratio ``c_i / c_{i-1}``.

Budget mapping: ``retain_ratio`` (``inner_ratio``) ``r`` is the fraction kept after the *last* stage.
``S = round((1 - r) / step)`` stages (``step = 0.125``, the authors' slope; at least 1, at most ``L - K``), so
``r = 0.125`` on 28 layers gives exactly the authors' 87.5 %, 75 %, ..., 12.5 % at layers 15 .. 21; other ``r``
keep about the authors' slope and stop at ``r``; on shallow decoders the line steepens to reach ``r`` in the layers
there are. Each stage keeps ``round(ratio * n)`` of the ``n`` tokens entering it (at least 1), within ``S / 2``
tokens of ``c_i`` times the first stage's input.

Scores without eager attention: the engine hands the score layer's rotated queries (the chunk's real tokens) and
keys (``attention_queries = "projections"``); :func:`pagerank_importance` recomputes ``M`` in float32, a block of
``query_chunk`` query rows at a time against the keys up to the block's last query (memory ``O(query_chunk * S)``
per head, never the full ``[H, S, S]``; the causal upper triangle is mostly skipped), once per iteration: five
iterations cost about five ``Q K^T`` products. Restricting ``M`` to the chunk's own queries is exact for the
candidates: a cached earlier token's query row attends only to keys before the chunk, so it never sends mass to a
candidate.

Deviations from the reference code (LaVi-Lab/AIM, patched ``transformers/models/qwen2/modeling_qwen2.py``):

- Removal: the reference only masks pruned tokens out of later layers' attention (no compute saved); tokpress drops
  them from the hidden states, the KV cache of later layers and the mask. In the reference a masked token keeps its
  query row, so its ``1/N`` of the initial mass still flows to the keys it attends to in the first PageRank
  iteration; here the token is gone, and ``p`` starts uniform over the tokens still present (that ``1/N`` vs
  ``1/N'`` is a global scale and changes no ranking). At the first stage nothing is masked yet: identical.
- Last stage: the reference drops every visual token from layer 22 (retain rate 0); a tokpress stage keeps at least
  one token, and ``r`` sets the last kept fraction (the preset keeps 12.5 % from layer 21 on).
- Counts: the reference keeps ``int(c_i N)`` of the original ``N``; tokpress rounds per stage (see above).
- Candidates: tokpress ranks only the engine's droppable video tokens (LLaVA-OneVision's newline is protected; the
  reference may prune it, and any text between its boundaries); padding is no node of the graph (the reference ran
  one sample at a time). Ties keep the earlier token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import ConfigError, InputError
from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig, Projections
from tokpress.registry import register_policy


@dataclass(frozen=True)
class AIMInnerConfig(PolicyConfig):
    temperature: float = 0.1
    """Softmax temperature of the PageRank transition matrix (the authors' ``tau_imp = 0.1``)."""
    iterations: int = 5
    """PageRank iterations ``p <- p M`` from the uniform ``p`` (the authors' 5)."""
    damping: float = 0.0
    """Teleport probability ``d`` (``p <- (1 - d) p M + d / N``; the authors' 0)."""
    step: float = 0.125
    """Fraction of the visual tokens removed per layer (the authors' 12.5 %): sets the number of stages."""
    query_chunk: int = 256
    """Query rows per block of the PageRank matrix (memory ``query_chunk * S`` floats per head)."""

    def validate(self) -> None:
        t, it, d, s, q = self.temperature, self.iterations, self.damping, self.step, self.query_chunk
        real = (int, float)
        self.check(
            isinstance(t, real) and not isinstance(t, bool) and t > 0,
            f"temperature must be > 0 (the authors' 0.1), got {t!r}",
        )
        self.check(
            isinstance(it, int) and not isinstance(it, bool) and it >= 1,
            f"iterations must be an int >= 1 (the authors' 5), got {it!r}",
        )
        self.check(
            isinstance(d, real) and not isinstance(d, bool) and 0 <= d < 1,
            f"damping must be in [0, 1) (the authors' 0), got {d!r}",
        )
        self.check(
            isinstance(s, real) and not isinstance(s, bool) and 0 < s <= 1,
            f"step must be in (0, 1] (the authors' 0.125 per layer), got {s!r}",
        )
        self.check(
            isinstance(q, int) and not isinstance(q, bool) and q >= 1,
            f"query_chunk must be an int >= 1 (query rows per block, e.g. 256), got {q!r}",
        )


def linear_schedule(num_layers: int, layer: int, ratio: float, step: float = 0.125) -> list[tuple[int, float]]:
    """``(layer, ratio)`` of one stage per layer from ``layer`` on, the cumulative keep falling linearly to ``ratio``.

    Example: ``linear_schedule(28, 15, 0.125)`` -> layers 15 .. 21 with cumulative keeps 0.875, 0.75, ..., 0.125
    (ratios 0.875, 0.857, 0.833, 0.8, 0.75, 0.667, 0.5).
    """
    stages = int(min(max(1, int((1.0 - ratio) / step + 0.5 + 1e-9)), num_layers - layer))
    cumulative = [1.0 - i * (1.0 - ratio) / stages for i in range(stages)] + [ratio]
    return [(layer + i, cumulative[i + 1] / cumulative[i]) for i in range(stages)]


def transition_rows(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_index: torch.Tensor,
    key_valid: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Rows of the PageRank transition matrix: ``softmax(q k^T * scale)`` over the keys each query may see.

    Args:
        queries: ``[c, H, d]`` float32 rotated queries.
        keys: ``[KV, S, d]`` float32 rotated keys; query head ``h`` reads key head ``h // (H / KV)``.
        query_index: ``[c]`` key index of each query (it sees keys ``<=`` it).
        key_valid: ``[S]`` bool, False at padding.
        scale: the layer's scaling divided by the temperature.

    Returns:
        ``[H, c, S]`` float32, rows summing to 1.
    """
    c, heads, dim = queries.shape
    kv, length, _ = keys.shape
    q = queries.reshape(c, kv, heads // kv, dim)
    logits = torch.einsum("ckgd,ksd->kgcs", q, keys).reshape(heads, c, length) * scale
    allowed = key_valid[None] & (torch.arange(length, device=keys.device)[None] <= query_index[:, None])
    return logits.masked_fill(~allowed[None], float("-inf")).softmax(-1)


def pagerank_importance(
    p: Projections, temperature: float = 0.1, iterations: int = 5, damping: float = 0.0, query_chunk: int = 256
) -> torch.Tensor:
    """AIM's importance of each candidate: PageRank over the attention among all the sample's tokens.

    ``p <- (1 - damping) p M + damping / N`` from ``p = 1 / N`` on the ``N`` valid tokens, ``M`` rebuilt per
    iteration from blocks of ``query_chunk`` query rows; the root mean square of ``p`` over the heads.

    Returns:
        ``[n]`` float32, one score per candidate (``p.candidates``).
    """
    queries, keys = p.queries.float(), p.keys.float()
    heads, length = queries.shape[1], keys.shape[1]
    valid = p.key_valid.to(keys.device)
    index = p.query_index.to(keys.device)
    base = valid.float() / valid.sum().clamp_min(1)  # [S]
    dist = base.expand(heads, length)
    scale = p.scaling / temperature
    # causal: a block of queries sees keys up to its last query only (one host copy of the indices, no sync per block)
    seen = p.query_index.cpu()
    blocks = [(s, int(seen[s : s + query_chunk].max()) + 1) for s in range(0, queries.shape[0], query_chunk)]
    for _ in range(iterations):
        flow = torch.zeros(heads, length, device=keys.device)
        for start, width in blocks:
            rows = slice(start, start + query_chunk)
            m = transition_rows(queries[rows], keys[:, :width], index[rows], valid[:width], scale)  # [H, c, width]
            flow[:, :width] += torch.einsum("hc,hcs->hs", dist[:, index[rows]], m)
        dist = flow * (1.0 - damping) + damping * base
    return dist[:, p.candidates.to(keys.device)].pow(2).mean(0).sqrt()


@register_policy("aim", stage="inner")
class AIMInnerPolicy(InnerPolicy):
    config_cls = AIMInnerConfig
    needs_attention = True
    attention_queries = "projections"

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The first stage after the middle layer (scores from layer 14 of 28, first pruned layer 15)."""
        return max(1, min(num_layers - 1, num_layers // 2 + 1))

    @classmethod
    def schedule(cls, config: PolicyConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        if not 1 <= layer < num_layers:
            raise ConfigError(
                f"aim's first pruned layer must be in [1, {num_layers - 1}] for a {num_layers}-layer decoder, "
                f"got {layer!r}"
            )
        step = config.step if isinstance(config, AIMInnerConfig) else AIMInnerConfig().step
        return linear_schedule(num_layers, layer, ratio, step)

    def importance(self, tokens: InnerTokens) -> torch.Tensor:
        """``[n]`` float32 PageRank importance of the candidate tokens (from ``tokens.projections``)."""
        if tokens.projections is None:
            raise InputError(
                "inner policy 'aim' needs InnerTokens.projections (the score layer's queries and keys); the engine "
                "gives them to policies with attention_queries='projections'"
            )
        c = self.config if isinstance(self.config, AIMInnerConfig) else AIMInnerConfig()
        return pagerank_importance(tokens.projections, c.temperature, c.iterations, c.damping, c.query_chunk)

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        if budget >= tokens.hidden.shape[0]:
            return Plan(torch.arange(tokens.hidden.shape[0], device=tokens.hidden.device))
        return Plan(topk_sorted(self.importance(tokens), budget).to(tokens.hidden.device))
