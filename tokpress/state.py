"""What happened on the last compressed prompt: ``model.tokpress.last``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    """Token accounting of the last forward that contained video (the prefill of the last prompt).

    All counts are per sample and exclude padding. ``video_*`` counts include protected tokens (LLaVA-OneVision's
    newline). Layer ``l`` sees the tokens of the last stage whose layer is ``<= l``.

    Attributes:
        num_layers: decoder depth.
        video_tokens: video tokens in the prompt.
        after_outer: video tokens entering the decoder.
        inner_layers: the layer of each inner stage.
        after_inner: ``[stage][sample]`` video tokens past each inner stage.
        seq_tokens: ``[segment][sample]`` sequence tokens (text + video) entering the decoder (segment 0) and past
            each inner stage.
        kept: the selection of each stage, replayable with the ``fixed`` policy: ``kept["outer"][sample][video]``
            are grid indices, ``kept["inner0"][sample]`` ordinals among the sample's video tokens;
            ``kept["vision"][sample][video]`` the grid indices whose patches a ``vision="rlt"`` stage encoded.
        plans: with ``model.tokpress.record_plans = True``, every stage's :class:`~tokpress.policies.base.Plan`
            (``plans["outer"][sample][video]``, ``plans["inner0"][sample]``), merged features included.
        compression_s: wall time spent in tokpress's hooks (selection and gathers).
        vision_tokens: with a vision stage, ``[encoder layer]`` tokens per frame each vision-encoder layer processed
            in the prompt's video encoding (measured at each layer's input; empty without a vision stage).
        vision_patches: with a vision stage that drops patches before the encoder (``rlt``), ``[encoder layer]``
            patch rows each layer processed in the prompt's video encoding, all frames together (empty otherwise).
        vision_patches_in: with such a stage, the patch rows of the prompt's videos before the drop.
        vision_frames: frames (temporal patches on Qwen) the vision encoder encoded for it (all videos of the batch).
        vision_s: wall time spent in the vision stage's hooks (matching, merging, unmerging, gathering).
    """

    num_layers: int
    video_tokens: list[int] = field(default_factory=list)
    after_outer: list[int] = field(default_factory=list)
    inner_layers: list[int] = field(default_factory=list)
    after_inner: list[list[int]] = field(default_factory=list)
    seq_tokens: list[list[int]] = field(default_factory=list)
    kept: dict[str, list] = field(default_factory=dict)
    plans: dict[str, list] = field(default_factory=dict)
    compression_s: float = 0.0
    vision_tokens: list[int] = field(default_factory=list)
    vision_patches: list[int] = field(default_factory=list)
    vision_patches_in: int = 0
    vision_frames: int = 0
    vision_s: float = 0.0

    def _per_layer(self, per_segment: list[list[int]]) -> list[list[int]]:
        out = []
        for b in range(len(per_segment[0]) if per_segment else 0):
            row, seg = [], 0
            for layer in range(self.num_layers):
                while seg < len(self.inner_layers) and layer >= self.inner_layers[seg]:
                    seg += 1
                row.append(per_segment[seg][b])
            out.append(row)
        return out

    @property
    def tokens_per_layer(self) -> list[list[int]]:
        """``[sample][layer]`` sequence tokens each decoder layer processes in the prefill."""
        return self._per_layer(self.seq_tokens)

    @property
    def video_tokens_per_layer(self) -> list[list[int]]:
        """``[sample][layer]`` video tokens each decoder layer processes in the prefill."""
        return self._per_layer([self.after_outer, *self.after_inner])

    def summary(self) -> str:
        """One line per sample, e.g. ``sample 0: video 64 -> outer 16 -> L2 8``."""
        lines = []
        for b, n in enumerate(self.video_tokens):
            parts = [f"video {n}", f"outer {self.after_outer[b]}"]
            parts += [f"L{layer} {counts[b]}" for layer, counts in zip(self.inner_layers, self.after_inner)]
            lines.append(f"sample {b}: " + " -> ".join(parts))
        if self.vision_tokens:
            first, fewest = self.vision_tokens[0], min(self.vision_tokens)
            lines.append(f"vision encoder: {first} -> {fewest} tokens per frame ({self.vision_frames} frames)")
        if self.vision_patches:
            lines.append(
                f"vision encoder: {self.vision_patches_in} -> {min(self.vision_patches)} patches "
                f"({self.vision_frames} temporal patches)"
            )
        return "\n".join(lines)
