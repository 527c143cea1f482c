"""The optimiser of :mod:`tokpress.eval.synth.train`: learning-rate schedule, AdamW groups and one training step.

**Optimiser.** AdamW (β = 0.9 / 0.98, weight decay 0.05 on matrices only), gradient clipping at 1.0, linear warmup
then cosine decay to 10 % of ``--lr``. TF32 matmuls on CUDA; ``--bf16`` autocast optional.

"""

from __future__ import annotations

import math
from typing import Any

import torch

from tokpress.eval.synth.forward import answer_loss
from tokpress.eval.synth.heads import AuxHeads, EvidenceAttention
from tokpress.eval.synth.train_config import TrainConfig


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine from ``lr`` to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    lr: float,
    clip: float = 1.0,
    bf16: bool = False,
    first_weight: float = 1.0,
    aux: AuxHeads | None = None,
    aux_weight: float = 0.0,
    aux_layer: int = 1,
    word_ids: dict[str, torch.Tensor] | None = None,
    evidence: EvidenceAttention | None = None,
    evidence_weight: float = 0.0,
    stats: dict[str, float] | None = None,
) -> tuple[float, torch.Tensor]:
    """One optimiser step on ``batch``; returns the answer loss and the per-row losses.

    With ``aux`` (and ``aux_weight > 0``) the step minimises ``answer + aux_weight * aux`` (the optimizer must
    hold the heads' parameters too); ``stats`` receives the auxiliary losses and accuracies. ``word_ids``
    (``{"color": [8], "shape": [6], "position": [4]}`` token ids of the answer words) adds the word probes of
    :meth:`AuxHeads._word_loss` through the model's own LM head. ``evidence`` (with ``evidence_weight > 0``) adds
    ``evidence_weight *`` :meth:`EvidenceAttention.loss`.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = next(model.parameters()).device
    use_aux = aux is not None and aux_weight > 0
    use_evidence = evidence is not None and evidence_weight > 0
    capture: dict[str, Any] | None = {} if use_aux or use_evidence else None
    if use_aux and word_ids:
        capture["word_ids"] = {k: v.to(device) for k, v in word_ids.items()}
    if use_evidence:
        evidence.capture.active = True
    with torch.enable_grad():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            try:
                loss, per_row = answer_loss(
                    model, batch, positions, first_weight=first_weight, capture=capture, capture_layer=aux_layer
                )
            finally:
                if use_evidence:
                    evidence.capture.active = False
            total = loss
            if use_evidence:
                ev_loss, ev_mass = evidence.loss(batch, capture)
                total = total + evidence_weight * ev_loss
                if stats is not None:
                    stats.update(evidence=float(ev_loss.detach()), evidence_mass=float(ev_mass))
            if use_aux:
                aux_loss, aux_stats = aux(capture, batch["labels"].to(device), batch)
                total = total + aux_weight * aux_loss
                if stats is not None:
                    stats.update({k: float(v.detach()) for k, v in aux_stats.items()}, aux=float(aux_loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip > 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
    return float(loss.detach()), per_row.cpu()
