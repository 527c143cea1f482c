"""Training-only heads of :mod:`tokpress.eval.synth.train`: per-token probes and the evidence head.

:class:`AuxHeads` are linear probes on every video token (colour, shape, slot, row, column, "changed"; the colour,
shape and quadrant *words* through the model's own LM head; the asked colour at a position question's query
token). :class:`EvidenceAttention` supervises one attention head's mass, from each answer's query token, onto the
video tokens that hold the answer. Neither is saved with the checkpoint.

**Auxiliary per-token targets (``--aux-weight``, ``--aux-layer``, ``--no-aux-words``).** :class:`AuxHeads`
puts linear probes on every video token: colour and shape from the vision tower's merged features; slot, row,
column, colour, shape and "changed since slot 0" from decoder layer ``aux_layer``'s output; and (word probes)
the colour and shape *words* from the final hidden state through the model's own LM head. The probes are
training-only (not saved); the model must make these facts linearly readable, which is exactly what the
questions need. Without them the first trial saw position, direction, counting and the needle stay at chance for
2,500 steps; with the position probes direction and counting were learned within 750-1,000 steps here.

**Evidence head (``--evidence-weight``, ``--evidence-layer``).** :class:`EvidenceAttention` asks head 0 of one
decoder layer (default: the last) to put its attention, from the token that predicts each answer, on the video
tokens that hold the answer (:func:`evidence_tokens`: the asked phase of the square, the needle, the lit lamp, the
square in the asked colour); the loss is ``-log`` of that attention mass. Questions that need *one* token out of 128
(the needle, a colour at a place) stayed at chance for 2,750 steps with the probes alone: the answer's gradient
through a softmax over 128 near-identical tokens is tiny until the selection exists. Side effect, for readers of
the benchmark: one head of the last layer attends to the evidence by construction. No method in tokpress reads
that layer: every attention-scored cut (FastV, PyramidDrop, FrameFusion, HoliTom, PruneVid, DyCoke's decode stage)
uses the layer before its cut, at most layer 2 of the 4, whose attention is not supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tokpress.errors import ConfigError
from tokpress.eval.synth.batches import LABELS
from tokpress.eval.synth.tasks import LAYOUT_COLORS, SHAPES

#: Loss weight of the "changed" class of the ``changed`` probe (the other class weighs 1).
CHANGED_WEIGHT = 10.0


class AuxHeads(torch.nn.Module):
    """Training-only linear probes that give the model dense targets on every video token (never saved with it).

    ``vision``: colour and shape of each token from the vision tower's merged features (the LLM's video
    embeddings). ``llm``: slot, row, col, colour, shape and ``changed`` from decoder layer ``aux_layer``'s output
    at each kept video token. The question answers need exactly these facts (which colour where and when, what
    appeared or changed); without help a tiny model finds them only after long plateaus (the CPU trial:
    position, direction, counting and the needle stayed at chance for 2,500 steps). The probes are linear, so
    the features must become linearly readable in the model itself.
    """

    def __init__(self, hidden: int, slots: int, grid: int) -> None:
        super().__init__()
        self.sizes = {"color": len(LAYOUT_COLORS), "shape": 1 + len(SHAPES), "slot": slots, "row": grid, "col": grid}
        self.sizes["changed"] = 2
        self.vision = torch.nn.Linear(hidden, self.sizes["color"] + self.sizes["shape"])
        self.llm = torch.nn.Linear(hidden, sum(self.sizes.values()))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name in names:
            n = self.sizes[name]
            part, target = logits[:, start : start + n].float(), labels[:, LABELS.index(name)]
            weight = None
            if name == "changed":  # ~3 % of the tokens change: weigh them up so the probe cannot ignore them
                weight = torch.tensor([1.0, CHANGED_WEIGHT], device=part.device)
            out[name] = torch.nn.functional.cross_entropy(part, target, weight=weight)
            out[f"{name}_acc"] = (part.argmax(-1) == target).float().mean().detach()
            start += n
        return out

    def forward(
        self, capture: dict[str, torch.Tensor], labels: torch.Tensor, batch: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Mean cross-entropy of all probes and per-probe ``{name: loss, name_acc: accuracy}`` (vision: ``v_``).

        With ``layer_hidden_next`` in ``capture`` the same LLM probe also reads the next layer's output (``l2_``),
        and with ``batch`` its colour section reads the *asked* colour at each answer's query token there
        (``asked``: position questions), so the query that looks for a colour and the video tokens that show it
        use one code.
        """
        feats = capture["video_features"]
        vision = self._loss(self.vision(feats), labels.reshape(-1, labels.shape[-1]), ("color", "shape"))
        rows = labels[capture["row_video"]]  # [R, N, 6]
        ordinal, kept = capture["video_ordinal"], capture["video_kept"]
        llm_labels = rows.gather(1, ordinal.clamp(min=0)[..., None].expand(-1, -1, rows.shape[-1]))[kept]
        llm = self._loss(self.llm(capture["layer_hidden"][kept]), llm_labels, tuple(self.sizes))
        stats = {f"v_{k}": v for k, v in vision.items()} | llm
        nxt = capture.get("layer_hidden_next")
        if nxt is not None:
            stats |= {f"l2_{k}": v for k, v in self._loss(self.llm(nxt[kept]), llm_labels, tuple(self.sizes)).items()}
            if batch is not None:
                stats |= self._asked_loss(nxt, capture, batch)
        if "word_logits" in capture:
            stats |= self._word_loss(capture["word_logits"], llm_labels)
        losses = [v for k, v in stats.items() if not k.endswith("_acc")]
        return torch.stack(losses).mean(), stats

    def _asked_loss(
        self, hidden: torch.Tensor, capture: dict[str, Any], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        asked = batch["answer_asked"].to(hidden.device)  # [R, A] colour code or -1
        qpos, has = query_positions(capture["index"], batch["answer_query"].to(hidden.device))
        use = has & (asked >= 0)
        if not bool(use.any()):
            return {}
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(qpos)
        logits = self.llm(hidden[rows[use], qpos[use]])[:, : self.sizes["color"]].float()
        return {
            "asked": torch.nn.functional.cross_entropy(logits, asked[use]),
            "asked_acc": (logits.argmax(-1) == asked[use]).float().mean().detach(),
        }

    def _word_loss(self, word_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name each kept video token's colour, shape and quadrant with the answer words' logits of the LM head (a
        softmax over the 8 colour words, one over the 6 shape words and one over the 4 quadrant words, on the
        tokens that hold a coloured shape)."""
        out = {}
        half = self.sizes["row"] // 2
        quadrant = 2 * (labels[:, 3] >= half).long() + (labels[:, 4] >= half).long() + 1  # POSITIONS order, 1-based
        colored = (labels[:, 0] >= 1) & (labels[:, 0] < LAYOUT_COLORS.index("lamp-off"))
        for name, code in (("color", labels[:, 0]), ("shape", labels[:, 1]), ("position", quadrant)):
            if name not in word_logits:
                continue
            logits = word_logits[name].float()  # [kept, n words]
            code = code - 1  # colour codes 1..8 are the COLORS words, shape codes 1..6 the SHAPES, quadrants 1..4
            use = colored & (code >= 0) & (code < logits.shape[1])
            if bool(use.any()):
                out[f"word_{name}"] = torch.nn.functional.cross_entropy(logits[use], code[use])
                out[f"word_{name}_acc"] = (logits[use].argmax(-1) == code[use]).float().mean().detach()
        return out


def query_positions(index: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept-sequence index of each answer's query token and whether it has one.

    Args:
        index: ``[R, K]`` original position of each kept token (:func:`forward_rows`).
        query: ``[R, A]`` original position of each answer's query token (-1: no answer).
    """
    hit = index[:, None, :] == query[..., None]  # [R, A, K]
    return hit.float().argmax(-1), (query >= 0) & hit.any(-1)


class EvidenceAttention:
    """Head ``head`` of decoder layer ``layer`` as an *evidence head*: its attention from the token that predicts each
    answer should fall on the video tokens that hold the answer (:func:`evidence_tokens`).

    The layer's queries and keys are kept by :class:`tokpress.patches.attention.ProjectionCapture` hooks and its
    rotary tables by a pre-hook, so the scores are the ones the layer computes (any attention implementation).
    :meth:`loss` is ``-log`` of the attention mass on the evidence, averaged over the answers that kept at least
    one evidence token. Training-only: the hooks are removed with :meth:`remove`.
    """

    def __init__(self, model: Any, layer: int, head: int = 0) -> None:
        from tokpress.patches.attention import ProjectionCapture

        block = model.model.language_model.layers[layer]
        self.capture = ProjectionCapture(block.self_attn, all_queries=True)
        self.head, self.tables = head, None
        self.handles = [*self.capture.install(), block.register_forward_pre_hook(self._on_layer, with_kwargs=True)]

    def _on_layer(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if self.capture.active:
            self.tables = kwargs["position_embeddings"]

    def loss(self, batch: dict[str, torch.Tensor], capture: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, mean evidence mass)`` of the last forward (``capture`` from :func:`forward_rows`)."""
        from tokpress.patches.attention import rotate_half

        index, valid, ordinal = capture["index"], capture["valid"], capture["video_ordinal"]
        device = index.device
        qpos, has_query = query_positions(index, batch["answer_query"].to(device))
        cos, sin = self.tables
        q, k = self.capture.q, self.capture.k  # [R, K, H, d], [R, KV, K, d] before rotation
        group = q.shape[2] // k.shape[1]
        rows = torch.arange(q.shape[0], device=device)[:, None]
        qh = q[rows, qpos, self.head].float()  # [R, A, d]
        qc, qs = cos[rows, qpos].float(), sin[rows, qpos].float()
        qh = qh * qc + rotate_half(qh) * qs
        kh = k[:, self.head // group].float()
        kh = kh * cos.float() + rotate_half(kh) * sin.float()  # [R, K, d]
        logits = torch.einsum("rad,rkd->rak", qh, kh) * self.capture.scaling
        keys = torch.arange(index.shape[1], device=device)
        allowed = valid[:, None, :] & (keys[None, None, :] <= qpos[..., None])
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
        evidence = batch["answer_evidence"].to(device)  # [R, A, N]
        on = evidence.gather(2, ordinal.clamp(min=0)[:, None, :].expand(-1, evidence.shape[1], -1))
        on = on & (ordinal >= 0)[:, None, :] & allowed
        use = has_query & on.any(-1)
        mass = (probs * on).sum(-1)[use]
        if not bool(use.any()):
            zero = probs.sum() * 0.0
            return zero, zero.detach()
        return -torch.log(mass + 1e-6).mean(), mass.mean().detach()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.capture.clear()


def answer_word_ids(processor: Any) -> dict[str, torch.Tensor]:
    """Token ids of the colour words (in :data:`~tokpress.eval.synth.tasks.COLORS` order), shape words (``SHAPES``) and
    quadrant words (``POSITIONS``);
    each word must be one token (the word-level tokenizer of :mod:`tokpress.eval.synth.model`)."""
    from tokpress.eval.synth.tasks import COLORS, POSITIONS

    out = {}
    for name, words in (("color", list(COLORS)), ("shape", list(SHAPES)), ("position", list(POSITIONS))):
        ids = [processor.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        if any(len(i) != 1 for i in ids):
            raise ConfigError(f"the {name} words must be single tokens for the word probes (use --no-aux-words)")
        out[name] = torch.tensor([i[0] for i in ids])
    return out
