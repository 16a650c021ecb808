"""The numbers a report rests on, computed once a study's search and seed runs have ended.

The held-out test split is touched here only: the best trial's best-epoch weights, and those of
each seed run of its configuration, are evaluated on val and test. Their per-sample losses, and
the baselines', go to a small array file beside the checkpoints (`samples.npz`), so that the
report can bootstrap skill and the scaling fit over the evaluation samples; a summary goes to
the study's `test_evaluation` attribute. Nothing is tuned on test.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from hpod.records import BASELINES, TEST_EVALUATION
from hpod.results.baselines import EVALUATED, baseline_losses, baseline_outputs, sample_losses, summary
from hpod.study.plan import StudyPlan, best_trial
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.data import Dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import Arch
from hpod.trial.metrics import auc, evaluate
from hpod.trial.model import PatchTST

log = logging.getLogger(__name__)
SAMPLES_FILE = "samples.npz"


def ensure_baselines(study: optuna.Study, dataset: Dataset) -> dict:
    """The study's baselines, computed once (when its first trial's process starts)."""
    stored = study.user_attrs.get(BASELINES)
    if stored is None:
        stored = summary(baseline_losses(dataset))
        study.set_user_attr(BASELINES, stored)
    return stored


def samples_path(checkpoints: Path, study_name: str) -> Path:
    return checkpoint_io.trial_dir(checkpoints, study_name) / SAMPLES_FILE


def evaluate_study(
    plan: StudyPlan, study: optuna.Study, dataset: Dataset, checkpoints: Path, seeds: optuna.Study | None = None
) -> dict | None:
    """Evaluate the best trial and the seed runs on val and test, once; returns the stored summary
    (None when there is no complete trial or its weights are gone)."""
    best = best_trial(study)
    if best is None:
        return None
    seed_trials = [] if seeds is None else seeds.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    stored = study.user_attrs.get(TEST_EVALUATION)
    if stored is not None and stored["trial"] == best.number and stored.get("seeds", 0) == len(seed_trials):
        return stored
    weights = checkpoint_io.load(checkpoint_io.best_path(checkpoints, study.study_name, best.number))
    if weights is None:
        log.warning("%s: the best trial %d has no saved weights; no test evaluation", study.study_name, best.number)
        return None
    runs = [(best, weights)] + [
        (t, w)
        for t in seed_trials
        if (w := checkpoint_io.load(checkpoint_io.best_path(checkpoints, seeds.study_name, t.number))) is not None
    ]
    outputs = {split: [run_outputs(plan, t, dataset, w["model"], split) for t, w in runs] for split in EVALUATED}
    targets = {split: dataset.targets[dataset.splits[split]] for split in EVALUATED}
    losses = {s: np.stack([sample_losses(o, targets[s], dataset.task) for o in outs]) for s, outs in outputs.items()}
    baseline_scores = baseline_outputs(dataset)
    baselines = baseline_losses(dataset, baseline_scores)
    scores = {}
    if dataset.task == "binary":  # what the report's AUC ranks, beside the labels
        scores = {"model": {s: torch.stack(o).float().cpu().numpy() for s, o in outputs.items()}} | baseline_scores
        scores["labels"] = {s: t.numpy() for s, t in targets.items()}
    write_samples(samples_path(checkpoints, study.study_name), losses, baselines, scores)
    result = {
        "trial": best.number,
        "epoch": weights["epoch"],
        "test_loss": float(losses["test"][0].mean()),
        "n_val": losses["val"].shape[1],
        "n_test": losses["test"].shape[1],
        "seeds": len(runs) - 1,
        "seed_val_losses": losses["val"][1:].mean(axis=1).tolist(),
        "seed_test_losses": losses["test"][1:].mean(axis=1).tolist(),
    }
    if dataset.task == "binary":
        result["test_auc"] = auc(outputs["test"][0], targets["test"])
    study.set_user_attr(TEST_EVALUATION, result)
    study.set_user_attr(BASELINES, summary(baselines))
    log.info("%s: trial %d test loss %.4f (val %.4f)", study.study_name, best.number, result["test_loss"], best.value)
    return result


def run_outputs(plan: StudyPlan, trial: FrozenTrial, dataset: Dataset, state: dict, split: str) -> torch.Tensor:
    """A trial's best-epoch weights' outputs (logits or values) on one split."""
    train = plan.job.train
    arch = Arch.from_key(trial.params["arch"])
    model_config = arch.model_config(dataset.shape, head_dropout=train.head_dropout, revin=train.revin)
    device = pick_device(train.device)
    model = PatchTST(model_config).to(device)
    model.load_state_dict(state)
    _, outputs = evaluate(model, dataset, split, device)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return outputs


def write_samples(
    path: Path,
    model: dict[str, np.ndarray],
    baselines: dict[str, dict[str, np.ndarray]],
    scores: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:
    """Per-sample losses: model_val, model_test (runs, samples), row 0 the best trial, then the
    seed runs, and <baseline>_val, <baseline>_test; for a binary target also the outputs each
    ranks the samples by, scores_model_val … scores_<baseline>_test, and scores_labels_val and
    _test (the report's AUC); float32, in time order."""
    arrays = {f"model_{s}": v.astype(np.float32) for s, v in model.items()}
    arrays |= {f"{name}_{s}": v.astype(np.float32) for name, splits in baselines.items() for s, v in splits.items()}
    for name, splits in (scores or {}).items():
        arrays |= {f"scores_{name}_{s}": np.asarray(v, dtype=np.float32) for s, v in splits.items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    checkpoint_io.write_atomic(path, lambda f: f.write(buffer.getvalue()))


def read_samples(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays write_samples wrote, or None when the file is absent (another host's study)."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key].astype(np.float64) for key in data.files}
