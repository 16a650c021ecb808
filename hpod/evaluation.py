"""The held-out test split, touched once per study: at its end, the best trial's best-epoch
weights are evaluated on it and the result is stored with the study, so a report shows test
loss beside the val loss the search chose by, and nothing is tuned on it."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import torch

from hpod import checkpoint as checkpoint_io
from hpod.data import Dataset
from hpod.grid import Arch
from hpod.model import PatchTST
from hpod.search import StudyPlan, best_trial
from hpod.train import TrainConfig, auc, evaluate, pick_device

log = logging.getLogger(__name__)
TEST_ATTR = "test_evaluation"  # study user attr


def evaluate_best(plan: StudyPlan, study: optuna.Study, dataset: Dataset, checkpoints: Path) -> dict | None:
    """Evaluate the study's best trial on the test split, once; returns what is stored (None
    when there is no complete trial or its weights are gone)."""
    best = best_trial(study)
    if best is None:
        return None
    stored = study.user_attrs.get(TEST_ATTR)
    if stored is not None and stored["trial"] == best.number:
        return stored
    weights = checkpoint_io.load(checkpoint_io.best_path(checkpoints, study.study_name, best.number))
    if weights is None:
        log.warning("%s: the best trial %d has no saved weights; no test evaluation", study.study_name, best.number)
        return None
    result = {"trial": best.number, "epoch": weights["epoch"]} | split_metrics(plan, best, dataset, weights["model"])
    study.set_user_attr(TEST_ATTR, result)
    log.info("%s: trial %d test loss %.4f (val %.4f)", study.study_name, best.number, result["test_loss"], best.value)
    return result


def split_metrics(plan: StudyPlan, trial: optuna.trial.FrozenTrial, dataset: Dataset, state: dict) -> dict:
    train = plan.job.train
    arch = Arch.from_key(trial.params["arch"])
    model_config = arch.model_config(dataset.shape, head_dropout=train.head_dropout, revin=train.revin)
    device = pick_device(train.device)
    model = PatchTST(model_config).to(device)
    model.load_state_dict(state)
    config = TrainConfig(learning_rate=0.0, weight_decay=0.0, warmup_steps=0, epochs=0, device=device)
    loss, scores = evaluate(model, dataset, "test", config)
    targets = dataset.targets[dataset.splits["test"]]
    metrics = {"test_loss": loss, "n_test": len(targets)}
    if dataset.task == "binary":
        metrics["test_auc"] = auc(scores, targets)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return metrics
