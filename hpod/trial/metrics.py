"""Losses and scores of a model's outputs: the training loss, a constant predictor's loss, ROC
AUC, and a whole split evaluated in batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpod.trial.data import Dataset
from hpod.trial.device import autocast

EVAL_BATCH = 1024


def loss_sum(logits: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
    return F.mse_loss(logits.float(), targets, reduction="sum")


def baseline_loss(dataset: Dataset) -> float:
    """Val loss of predicting the train split's mean target for every sample."""
    val_y = dataset.targets[dataset.splits["val"]]
    constant = torch.full_like(val_y, dataset.constant_output())
    return loss_sum(constant, val_y, dataset.task).item() / len(val_y)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """ROC AUC by the rank-sum statistic; None when one class is absent."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return float((ranks[labels > 0.5].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def evaluate(model, dataset: Dataset, split: str, device: str) -> tuple[float, torch.Tensor]:
    """Mean loss over a whole split, and the model's outputs for it."""
    model.eval()
    ends = dataset.splits[split]
    outputs = []
    for chunk in ends.split(EVAL_BATCH):
        with autocast(device):
            outputs.append(model(dataset.windows(chunk).to(device)).float().cpu())
    scores = torch.cat(outputs)
    return loss_sum(scores, dataset.targets[ends], dataset.task).item() / len(ends), scores
