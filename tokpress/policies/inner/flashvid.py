"""``flashvid`` (inner stage) — FlashVID's in-LLM pruning (Fan et al., ICLR 2026, "FlashVID: Efficient Video Large
Language Models via Training-free Tree-based Spatiotemporal Token Merging"); the outer stage is the outer policy of
the same name.

The authors' in-LLM stage is FastV's rule (:class:`~tokpress.policies.inner.fastv.FastVPolicy`): at layer ``K``
keep the visual tokens the last query attends to most at layer ``K - 1`` (mean over heads). What differs is where it
runs: the paper's layer 20 of Qwen2-7B's 28 (``pruning_layer = 20``), scaled to the model's depth by
:meth:`FlashVIDInnerPolicy.default_layer`, and how much it keeps: the ``flashvid`` preset runs it at 0.3
(``llm_retention_ratio``).

Deviation: the reference keeps ``ceil(0.3 n)`` tokens; tokpress's stage budget is ``round(0.3 n)`` (the engine's
one rounding rule for every stage), at most one token fewer.
"""

from __future__ import annotations

from tokpress.policies.inner.fastv import FastVPolicy
from tokpress.registry import register_policy


@register_policy("flashvid", stage="inner")
class FlashVIDInnerPolicy(FastVPolicy):
    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The paper's layer 20 of 28, scaled: ``round(20 L / 28)`` (halves up), clamped to ``[1, L - 1]``."""
        return max(1, min((40 * num_layers + 28) // 56, num_layers - 1))
