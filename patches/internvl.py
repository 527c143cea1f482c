"""InternVL (``InternVLForConditionalGeneration``: the InternVL3 / InternVL3.5 ``-hf`` checkpoints).

Tokens: every tile the model encodes — an image tile or a video frame — is an InternViT patch grid
(``S = image_size / patch_size``, 32 at 448 px; the CLS token dropped by the ``"default"`` feature strategy) folded
by pixel shuffle (``downsample_ratio`` 0.5) into ``s x s`` LLM tokens, ``s = S * 0.5`` (16 x 16 = 256 at 448 px),
raster order. The model sees only ``input_ids`` (``image_token_id`` — ``<IMG_CONTEXT>`` — at every visual token)
and one ``pixel_values`` tensor of all tiles in order; positions are 1-D. ``InternVLProcessor`` writes

* an image of ``k`` tiles (crops plus a thumbnail) as one block ``<img>`` + ``k * s * s`` ``<IMG_CONTEXT>`` +
  ``</img>``, followed by ``"\\n"`` in the chat template;
* a video of ``T`` frames as ``"\\n".join("Frame{i}: <img>" + s * s <IMG_CONTEXT> + "</img>")`` — one single-tile
  block per frame, each behind a text label.

So a video's grid tokens are **not contiguous**: its span lists their ``positions`` (frame after frame, each frame's
``s * s`` tokens in raster order) and the labels between the frames stay text.

How a video is told from images (token ids only; nothing else reaches the model):

1. every run of ``<IMG_CONTEXT>`` must sit between one opening and one closing token (``<img>`` / ``</img>``,
   read from the first block of the sample: the model config does not carry their ids) and hold a multiple of
   ``s * s`` tokens, else :class:`~tokpress.errors.InputError`;
2. a *frame gap* is the text between the closing token of one single-tile block and the opening token of the next
   (``"\\nFrame2: "``): at least 3 tokens — a separator, the label, the label's last token;
3. a video is a chain of ``>= 2`` consecutive single-tile blocks whose gaps are frame gaps with the same separator
   (first token), the same first label token and the same last token, whose labels are pairwise distinct, and whose
   first block is itself behind a label: the ``len(gap) - 1`` tokens before its opening token start and end like
   the other labels (``"Frame1: "``).

What this keeps apart: two single-tile images next to each other (gap ``"\\n"``: too short), multi-tile images
(never frames), an image right before a video (the text before the image is not a label, so the chain starts at
``Frame1``), two videos in a row (``"Frame1: "`` repeats a label, so a new chain starts).

Limits: a video of one frame is one labelled single-tile block, which the layout cannot tell from an image: it is
left alone. Single-tile images that the *user* labels in the same style (``"Image-1: <image>\\nImage-2: <image>"``)
are indistinguishable from a video at the token level and are compressed as one. A video whose first label is
tokenized differently from the later ones (only possible when the prompt puts ``<video>`` right after a
character that merges with ``"Frame"``; the chat template puts it after ``"\\n"``) is not found and is left
uncompressed, as are frames whose labels do not follow the processor's ``"FrameN: "`` form.

Vision attention: hooks on the InternViT layer whose output the model reads (``vision_feature_layer``), per tile
over its whole sequence (CLS included, as the layer computes it), the CLS column then dropped as the model drops it,
and the ``S x S`` map folded to ``s x s`` by the model's own ``pixel_shuffle`` — each LLM token gets the sum of the
4 patches merged into it. Images and frames are encoded in one call, so the scores cover every ``<IMG_CONTEXT>``
token of the batch; the engine reads each video's from its positions (``frames_modality = "image"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from tokpress.errors import UnsupportedModelError
from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.vision import LayerSum, scored_layers, single_layer
from tokpress.policies.base import Grid

#: fewest tokens of a frame gap: a separator, at least one label token, the label's last token
MIN_GAP = 3


@dataclass(frozen=True)
class Block:
    """One ``<img> ... </img>`` block: its ``<IMG_CONTEXT>`` tokens are ``start .. start + length``."""

    start: int
    length: int
    tiles: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def _feature_layer(config) -> int:
    """The InternViT layer whose output the model reads, as an index into ``encoder.layer``: the model takes
    ``last_hidden_state`` for -1 and ``hidden_states[i]`` (the output of layer ``i - 1``; 0 is the embeddings)
    otherwise."""
    index = config.vision_feature_layer
    index = index[-1] if isinstance(index, (list, tuple)) else index
    return int(index) if index < 0 else int(index) - 1


class InternVLAdapter(Adapter):
    family = "internvl"
    rope_rows = 1
    wants_ids = True
    frames_modality = "image"

    @classmethod
    def validate(cls, model: nn.Module) -> None:
        """Besides the base checks: square tiles that pixel shuffle folds into a whole grid, and an InternViT whose
        feature layer has the projections the vision-attention capture hooks."""
        super().validate(model)
        config = model.config
        vision = config.vision_config
        (height, width), (ph, pw) = _pair(vision.image_size), _pair(vision.patch_size)
        side, ratio = height // ph, config.downsample_ratio
        if height != width or ph != pw or height % ph:
            raise UnsupportedModelError(
                f"InternVL tiles must be square and a whole number of patches (image_size {vision.image_size}, "
                f"patch_size {vision.patch_size})"
            )
        if side * ratio != int(side * ratio) or int(side * ratio) < 1 or (1 / ratio) != int(1 / ratio):
            raise UnsupportedModelError(
                f"downsample_ratio {ratio} does not fold the {side}x{side} patch grid into a whole grid; "
                "tokpress supports the released 0.5"
            )
        layers = getattr(getattr(getattr(model.model, "vision_tower", None), "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise UnsupportedModelError(
                "InternVL model without `model.vision_tower.encoder.layer`; load the -hf checkpoint with "
                "AutoModelForImageTextToText"
            )
        index = _feature_layer(config)
        if not -len(layers) <= index < len(layers):
            raise UnsupportedModelError(
                f"vision_feature_layer {config.vision_feature_layer!r} does not name one of InternViT's "
                f"{len(layers)} layers (0, the embeddings, has no attention)"
            )
        attn = getattr(layers[index], "attention", None)
        if not all(hasattr(attn, name) for name in ("q_norm", "k_norm", "num_heads", "scale")):
            raise UnsupportedModelError(
                f"InternViT layer {index} has no attention with q_norm / k_norm / num_heads / scale; "
                "tokpress supports the InternViT of transformers' InternVL"
            )

    @property
    def video_token_id(self) -> int:
        """``image_token_id`` (``<IMG_CONTEXT>``): frames use the image placeholder; there is no video id."""
        return int(self.model.config.image_token_id)

    @property
    def patch_side(self) -> int:
        """``S``: InternViT patches per tile side."""
        vision = self.model.config.vision_config
        return _pair(vision.image_size)[0] // _pair(vision.patch_size)[0]

    @property
    def frame_side(self) -> int:
        """``s``: LLM tokens per tile side after pixel shuffle."""
        return int(self.patch_side * self.model.config.downsample_ratio)

    # ---- vision attention -----------------------------------------------------------------------------------
    def fold(self, scores: torch.Tensor) -> torch.Tensor:
        """``[tiles, S * S]`` per-patch scores -> ``[tiles * s * s]`` per LLM token: the model's ``pixel_shuffle``
        on the score map, summed over the ``(1 / ratio)^2`` patches it stacks into each token."""
        tiles, side = scores.shape[0], self.patch_side
        folded = self.base.pixel_shuffle(scores.reshape(tiles, side, side, 1), self.model.config.downsample_ratio)
        return folded.sum(-1).flatten()

    def vision_attention_depth(self) -> int:
        """InternViT layers up to and including the one whose output the model reads."""
        layers = self.base.vision_tower.encoder.layer
        return _feature_layer(self.model.config) % len(layers) + 1

    def install_vision_capture(
        self, active: Callable[[], bool], sink: Callable, score: Callable, span: Callable = single_layer
    ) -> list:
        """Hooks on the feature layer's (identity or RMS) q / k norms, whose outputs are the projected queries and
        keys the layer attends with (and on the ``span(depth) - 1`` layers before it; their scores are summed).
        ``cls`` reads the real [CLS] row: InternViT prepends a [CLS] token to every tile. Passes ``sink``
        ``[tiles * s * s]`` per encoding call (images too)."""
        encoder_layers = self.base.vision_tower.encoder.layer
        feature = _feature_layer(self.model.config) % len(encoder_layers)
        layers = scored_layers(feature, span(feature + 1))
        total = LayerSum(layers)
        state: dict = {}

        def on_q(i, module, args, out):
            if active():
                state[i] = out

        def on_k(i, attn, module, args, out):
            if not active():
                return
            tiles, n, _ = out.shape  # [tiles, 1 + S * S, H * d]
            q = state.pop(i).reshape(tiles * n, attn.num_heads, -1)
            k = out.reshape(tiles * n, attn.num_heads, -1)
            groups = torch.arange(tiles, device=out.device).repeat_interleave(n)
            scores = total.add(i, score(q, k, groups, attn.scale))
            if scores is not None:
                sink(self.fold(scores.view(tiles, n)[:, 1:]))  # the CLS token is dropped

        handles = []
        for i in layers:
            attn = encoder_layers[i].attention
            handles.append(attn.q_norm.register_forward_hook(partial(on_q, i)))
            handles.append(attn.k_norm.register_forward_hook(partial(on_k, i, attn)))
        return handles

    # ---- videos -----------------------------------------------------------------------------------------------
    def find_videos(
        self, is_video: torch.Tensor, rope: torch.Tensor | None, ids: torch.Tensor | None = None
    ) -> list[VideoSpan]:
        """The videos of one sample (see the module docstring for the rules).

        Args:
            is_video: ``[q]`` bool, True at ``<IMG_CONTEXT>`` tokens (images and frames alike).
            rope: unused (1-D positions).
            ids: ``[q]`` token ids of the sample; needed to read blocks and labels.
        """
        if not bool(is_video.any()):
            return []
        if ids is None:
            raise self.layout_error(
                "InternVL frames are told from images by their <img> / </img> blocks and 'FrameN: ' labels, "
                "so the token ids are needed (the engine passes them to adapters with `wants_ids`)"
            )
        tokens = ids.tolist()
        blocks = self._blocks(is_video, tokens)
        side, out = self.frame_side, []
        for chain in self._chains(blocks, tokens):
            positions = torch.cat([torch.arange(b.start, b.end, device=is_video.device) for b in chain])
            out.append(VideoSpan(chain[0].start, Grid(len(chain), side, side), positions=positions))
        return out

    def _blocks(self, is_video: torch.Tensor, tokens: list[int]) -> list[Block]:
        """The ``<img> ... </img>`` blocks of a sample, checked: bracketed alike, whole tiles."""
        per = self.frame_side**2
        blocks, brackets = [], None
        for start, length in runs(is_video):
            tiles, rest = divmod(length, per)
            if rest:
                raise self.layout_error(
                    f"a block of {length} <IMG_CONTEXT> tokens at position {start} is not a whole number of "
                    f"{per}-token tiles ({self.frame_side}x{self.frame_side} after pixel shuffle)"
                )
            end = start + length
            pair = (tokens[start - 1] if start else None, tokens[end] if end < len(tokens) else None)
            brackets = brackets or pair
            if None in pair or pair != brackets or pair[0] == pair[1]:
                raise self.layout_error(
                    f"the <IMG_CONTEXT> tokens at {start}..{end} are not between the same <img> / </img> tokens as "
                    "the sample's first block"
                )
            blocks.append(Block(start, length, tiles))
        return blocks

    @staticmethod
    def _gap(a: Block, b: Block, tokens: list[int]) -> tuple[int, ...]:
        """Tokens strictly between ``a``'s closing token and ``b``'s opening token."""
        return tuple(tokens[a.end + 1 : b.start - 1])

    def _chains(self, blocks: list[Block], tokens: list[int]) -> list[list[Block]]:
        """Maximal chains of single-tile blocks linked by frame gaps, each at least two frames long."""
        chains, i = [], 0
        while i < len(blocks):
            chain = self._chain_from(i, blocks, tokens)
            if chain:
                chains.append(chain)
                i += len(chain)
            else:
                i += 1
        return chains

    def _chain_from(self, i: int, blocks: list[Block], tokens: list[int]) -> list[Block]:
        """The video starting at block ``i``, or ``[]`` if no video starts there."""
        if i + 1 >= len(blocks) or blocks[i].tiles != 1 or blocks[i + 1].tiles != 1:
            return []
        first = self._gap(blocks[i], blocks[i + 1], tokens)
        if len(first) < MIN_GAP:
            return []
        pattern = (first[0], first[1], first[-1])  # separator, label head, label tail
        opening = blocks[i].start - 1
        label0 = tuple(tokens[opening - (len(first) - 1) : opening]) if opening >= len(first) - 1 else ()
        if len(label0) != len(first) - 1 or (label0[0], label0[-1]) != pattern[1:] or label0 == first[1:]:
            return []
        chain, labels = [blocks[i], blocks[i + 1]], {label0, first[1:]}
        for nxt in blocks[i + 2 :]:
            gap = self._gap(chain[-1], nxt, tokens)
            if nxt.tiles != 1 or len(gap) < MIN_GAP or (gap[0], gap[1], gap[-1]) != pattern or gap[1:] in labels:
                break
            chain.append(nxt)
            labels.add(gap[1:])
        return chain
