"""``vtccls`` — keep the visual tokens the vision encoder's [CLS] token attends to most, ensembled over layers.

After VTC-CLS (Wang, Sun, Chen, Lin, Han, Ding, "[CLS] Token Tells Everything Needed for Training-free Efficient
MLLMs", arXiv 2412.05819; code THU-MIG/VTC-CLS, LLaVA-1.5 with CLIP ViT-L/14-336).

**Algorithm** (the authors' ``cls_token_only`` + ``encode_images``): run the vision encoder; at every layer from
``start_layer`` up to the layer whose output the LLM reads (LLaVA-1.5: layer 22 of 24, ``hidden_states[-2]``; the
authors slice ``attentions[start_layer:-1]``), take the attention map averaged over heads, its [CLS] query row and
the patch columns (the softmax runs over all keys, the [CLS] column included); sum these rows over the layers; keep
the ``token_num`` patches with the highest sum in their original order; drop the rest (nothing is merged). Here the
engine supplies the summed row as ``VideoTokens.attention`` (``vision_attention = "cls"`` and
:meth:`VTCCLSPolicy.vision_attention_layers`), scored for each frame on its own and pooled to LLM tokens the way the
model pools the features (LLaVA-NeXT-Video's 2x2 average, InternVL's pixel-shuffle sum of 4 patches, Qwen's sum over
each 2x2 merge unit, LLaVA-OneVision's bilinear pooling); the policy keeps the ``budget`` highest tokens of each video
(stable order: ties go to the earlier token).

**Budget mapping**: the authors' ``token_num`` (64 / 128 / 192 of 576 per image) is ``budget = retain_ratio * N``
tokens per video. Their layer knob ``--layer`` (``start_layer``; argparse default 16, the eval scripts take it as an
argument) is ``start_layer`` here, counted from 0 in the encoder's layers; unset, it is the authors' 16 scaled to the
encoder: ``round(16 * depth / 23)`` (``depth`` = layers up to and including the feature layer; 23 for LLaVA-1.5's
CLIP, where this gives exactly 16), so the last ~30% of the layers before the features are summed.

**Per-family signal** (which towers have a [CLS] token):

* LLaVA-NeXT-Video (CLIP ViT-L/14-336, feature layer -2): the real [CLS] row, position 0 of each frame — the
  authors' signal and tower; the default layers 16..22 are theirs.
* InternVL (InternViT): the real [CLS] row of each tile (InternViT prepends a [CLS] token; the model drops its
  output as CLIP-LLaVA does).
* LLaVA-OneVision (SigLIP), Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 (Qwen ViT): **adaptation** — these towers
  have no [CLS] token, so each layer uses the closest summary query they have: the mean of the frame's (temporal
  patch's) queries, ``softmax(mean_i(q_i) . k_j / sqrt(d))`` (FastVID's proxy). SigLIP's optional attention-pooling
  head has a learned probe query, but it attends once, after the last layer and its post-layernorm, not inside the
  layers VTC-CLS ensembles. Qwen2.5-VL: its window-attention blocks are skipped (their queries see one window, so
  no frame-wide summary exists there); only its full-attention blocks in the range (and the last block) are summed.

**Deviations** from the authors' code, with reasons:

* Video, not one image: the top-``budget`` is taken over the whole video (``per_frame=False``, default), so frames
  whose [CLS] attention is concentrated give more tokens than frames where it is diffuse (each frame's row sums to
  about 1 per layer, so the scores compare across frames). ``per_frame=True`` applies the authors' image form to
  each frame with an even share of the budget (largest remainder, earlier frames first).
* The attention is recomputed in float32 from each layer's own query / key projections (no eager attention, no
  ``output_attentions``); equal to the eager map up to rounding.
* Scores are per LLM token (pooled as above) where LLaVA-1.5 has one token per patch; the layer sum comes first,
  the pooling second.
* The start layer is scaled to the encoder's depth (the authors fix it per run for one 24-layer tower).
* Under a vision stage (``vision="tome"``, ``"rlt"``), a merged token's score goes to each patch it absorbed and a
  dropped patch group takes the score of the group it repeats (the engine's rule for every vision-attention policy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import apportion, top_per_frame, topk_sorted
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy

#: the authors' default start layer and the depth of their encoder up to its feature layer (CLIP ViT-L/14-336,
#: ``hidden_states[-2]``: layers 0..22)
AUTHORS_START, AUTHORS_DEPTH = 16, 23


@dataclass(frozen=True)
class VTCCLSConfig(PolicyConfig):
    """Options of ``vtccls``."""

    #: first encoder layer (0-based) whose [CLS] attention is summed, up to the feature layer; ``None``: the authors'
    #: 16 of 23 scaled to the encoder (:func:`default_start`)
    start_layer: int | None = None
    #: keep each frame's even share of the budget (the authors' image form per frame) instead of a whole-video top-k
    per_frame: bool = False

    def validate(self) -> None:
        start = self.start_layer
        self.check(
            start is None or (isinstance(start, int) and not isinstance(start, bool) and start >= 0),
            f"start_layer must be None or an int >= 0 (a vision-encoder layer index), got {start!r}",
        )
        self.check(isinstance(self.per_frame, bool), f"per_frame must be True or False, got {self.per_frame!r}")


def default_start(depth: int) -> int:
    """The authors' start layer scaled to an encoder of ``depth`` layers up to its feature layer:
    ``round(16 * depth / 23)`` (half up), at most ``depth - 1`` so the feature layer is always summed."""
    return min(math.floor(AUTHORS_START * depth / AUTHORS_DEPTH + 0.5), depth - 1)


def even_top_per_frame(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Sorted flat indices keeping each frame's even share of ``budget`` (largest remainder, earlier frames first)
    of its highest ``scores`` ``[T, P]``; ties go to the earlier token."""
    frames, per_frame = scores.shape
    return top_per_frame(scores, apportion(budget, torch.full((frames,), per_frame, dtype=torch.long)))


@register_policy("vtccls", stage="outer")
class VTCCLSPolicy(OuterPolicy):
    config_cls = VTCCLSConfig
    needs_vision_attention = True
    vision_attention = "cls"  # the [CLS] row where the tower has a [CLS] token, else the frame's mean query

    def vision_attention_layers(self, depth: int) -> int:
        """Layers ``start_layer .. depth - 1`` (the feature layer): ``depth - start_layer`` of them (the engine
        refuses a ``start_layer`` past the feature layer)."""
        start = self.config.start_layer
        return depth - (default_start(depth) if start is None else start)

    def token_scores(self, video: VideoTokens) -> torch.Tensor:
        """``[N]`` the summed [CLS] (or mean-query) attention of each token (``framebudget`` keeps each frame's top
        ones)."""
        g = video.grid
        if video.attention is None or video.attention.shape != (g.numel,):
            got = None if video.attention is None else tuple(video.attention.shape)
            raise InputError(
                f"vtccls needs the vision encoder's attention (VideoTokens.attention, shape ({g.numel},)), got {got}; "
                "use a model family whose adapter captures vision attention, or another outer policy (e.g. 'uniform')"
            )
        return video.attention.to(video.features.device)

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        scores = self.token_scores(video)
        if self.config.per_frame:
            return Plan(even_top_per_frame(scores.view(video.grid.frames, video.grid.per_frame), budget))
        return Plan(topk_sorted(scores, budget))
