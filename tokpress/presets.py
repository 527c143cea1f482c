"""Methods that pair an outer and an inner policy, with the papers' default inner settings.

Every policy is also a method of its own name (outer-only or inner-only); the presets here replace that default
where the paper runs both stages. ``retain_ratio`` then sets the outer stage (the fraction of video tokens
entering the LLM, the number the papers label their rows with); the inner ratio is the paper's.
"""

from tokpress.registry import Preset, register_preset

register_preset(
    Preset(
        "holitom",
        outer="holitom",
        inner="holitom",
        inner_ratio=0.5,
        description="HoliTom (NeurIPS 2025): DP temporal segmentation + DPC-kNN merging outside; at layer k "
        "(18 of 28) keep half by attention and merge the rest into their most similar kept token",
    )
)
register_preset(
    Preset(
        "dycoke",
        outer="dycoke",
        inner="dycoke",
        inner_ratio=0.3,
        description="DyCoke (CVPR 2025): temporal token merging in 4-frame windows; during decoding layers >= L "
        "attend to the 30 % of visual tokens the new token attends to most (P = 0.7)",
    )
)
register_preset(
    Preset(
        "prunevid",
        outer="prunevid",
        inner="prunevid",
        inner_ratio=0.4,
        description="PruneVid (ACL 2025): static/dynamic merging outside; question-guided pruning inside "
        "(alpha = 0.4) that also cuts the KV cache of the earlier layers",
    )
)
register_preset(
    Preset(
        "flashvid",
        outer="flashvid",
        inner="flashvid",
        inner_ratio=0.3,
        description="FlashVID (ICLR 2026): DySeg + attention/diversity selection + tree-based spatio-temporal "
        "merging outside; at layer 20 of 28 keep the 30 % of visual tokens the last query attends to most. "
        "retain_ratio enters the LLM: the paper's layer-averaged r is retain_ratio / 1.25",
    )
)
register_preset(
    Preset(
        "aim",
        outer="aim",
        inner="aim",
        inner_ratio=0.125,
        description="AIM (ICCV 2025): iterative bipartite (ToMe) merging within each frame outside; from the middle "
        "layer on, PageRank over the attention removes 12.5 % of the visual tokens per layer, down to 12.5 %",
    )
)
register_preset(
    Preset(
        "mustdrop",
        outer="mustdrop",
        inner="mustdrop",
        inner_ratio=0.5,
        description="MustDrop (arXiv 2411.10803): merges the most similar 2x2 windows of each frame and marks a key "
        "set (8 %) no later stage drops; dual-attention (global + individual) filters at 4 layers keep half of "
        "what enters the LLM; the cache of those layers is then cut to the final set",
    )
)

register_preset(
    Preset(
        "quota",
        outer="framebudget",
        outer_options={"scorer": "lvlm"},
        description="QuoTA (AAAI 2026): an LVLM judges each frame's relevance to the question (one batched pre-pass, "
        "tokpress.score_frames); per-frame budgets ~ p^2, each frame filled evenly (uniform)",
    )
)
