"""What a trivial method gets on the same splits: the floor every searched loss stands beside.

- `constant`: the train optimum of a constant (BCE: the train positive rate; MSE: the train mean);
- `zero` (regression only): predicting zero in the target's original units (a return of 0);
- `linear`: a linear model on the features of each window's last row, fit on train
  (scikit-learn's LogisticRegression for BCE, Ridge for MSE: standard, well-kept, deterministic);
- `trailing`: the label rate (BCE) or mean target (MSE) of the last `TRAILING_ROWS` labels known
  when the window ends, those whose horizon has passed. It uses no future data, and it follows
  the base rate as it moves between splits, which the train constant cannot: skill over the
  constant alone is partly that move (bundled h1: train rate 0.084, val 0.161).

Per-sample losses, not only means, so the report's block bootstrap can resample them together
with the model's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpod.trial.data import Dataset

EVALUATED = ("val", "test")
TRAILING_ROWS = 250  # about a year of trading days


def sample_losses(outputs: torch.Tensor | np.ndarray, targets: torch.Tensor, task: str) -> np.ndarray:
    """The loss of each sample (float64): BCE with logits, or squared error."""
    outputs = torch.as_tensor(outputs, dtype=torch.float64)
    targets = targets.to(torch.float64)
    if task == "binary":
        losses = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
    else:
        losses = (outputs - targets) ** 2
    return losses.numpy()


def last_rows(dataset: Dataset, split: str) -> np.ndarray:
    return dataset.features[dataset.splits[split]].double().numpy()


def linear_outputs(dataset: Dataset) -> dict[str, np.ndarray]:
    """Logits (BCE) or predictions (MSE) of a linear model of the last row, for val and test."""
    from sklearn.linear_model import LogisticRegression, Ridge

    x, y = last_rows(dataset, "train"), dataset.targets[dataset.splits["train"]].double().numpy()
    if dataset.task == "binary":
        model = LogisticRegression(max_iter=1000).fit(x, y.astype(int))
        return {split: model.decision_function(last_rows(dataset, split)) for split in EVALUATED}
    model = Ridge(alpha=1.0).fit(x, y)
    return {split: model.predict(last_rows(dataset, split)) for split in EVALUATED}


def trailing_outputs(dataset: Dataset, rows: int = TRAILING_ROWS) -> dict[str, np.ndarray]:
    """The trailing baseline's outputs for val and test: at a window ending at row r, the labels
    of rows r − horizon − rows + 1 … r − horizon (known by r), a rate smoothed by half a label
    each way so that a run of one class stays a finite logit."""
    known = np.nan_to_num(dataset.targets.double().numpy(), nan=0.0)
    sums = np.concatenate([[0.0], np.cumsum(known)])
    out = {}
    for split in EVALUATED:
        last = dataset.splits[split].numpy() - dataset.horizon  # the newest label known at the window's end
        first = np.maximum(last - rows + 1, 0)
        count = np.maximum(last - first + 1, 0)
        total = sums[np.maximum(last + 1, 0)] - sums[first]
        if dataset.task == "binary":
            rate = (total + 0.5) / (count + 1.0)
            out[split] = np.log(rate / (1 - rate))
        else:
            out[split] = np.where(count > 0, total / np.maximum(count, 1), dataset.constant_output())
    return out


def baseline_outputs(dataset: Dataset) -> dict[str, dict[str, np.ndarray]]:
    """name -> split -> each sample's output."""
    sizes = dataset.sizes()
    constants = {"constant": dataset.constant_output()}
    if dataset.task == "regression":
        constants["zero"] = -dataset.target_mean / dataset.target_std  # 0 in original units
    out = {name: {s: np.full(sizes[s], value) for s in EVALUATED} for name, value in constants.items()}
    out["linear"] = linear_outputs(dataset)
    out["trailing"] = trailing_outputs(dataset)
    return out


def baseline_losses(dataset: Dataset, outputs: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """name -> split -> per-sample losses (of `outputs`, when they were computed already)."""
    return {
        name: {s: sample_losses(o[s], dataset.targets[dataset.splits[s]], dataset.task) for s in EVALUATED}
        for name, o in (baseline_outputs(dataset) if outputs is None else outputs).items()
    }


def summary(losses: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """name -> {val_loss, test_loss}: what a study stores and `hpod status` shows."""
    return {name: {f"{s}_loss": float(v.mean()) for s, v in splits.items()} for name, splits in losses.items()}
