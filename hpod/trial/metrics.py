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
    """ROC AUC by the rank-sum statistic, tied scores at their average rank (a constant scores
    0.5, a trailing rate's few distinct values are not ordered by chance); None when one class
    is absent."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    n_pos = int((labels > 0.5).sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    ranks = (last - (counts.double() - 1) / 2)[inverse]
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
