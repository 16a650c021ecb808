"""A cell's loss on each evaluated split beside every baseline's on the same samples: skill
against each and against the strongest, with SEs from the report's shared bootstrap, and AUC,
which tells ranking apart from calibration.

Skill = 1 − L / L_baseline. The headline is the strongest baseline's (lowest loss on the split):
skill over the train constant alone is partly the base rate moving between splits, which the
trailing rate follows with no future data.
"""

from __future__ import annotations

import numpy as np
import torch

from hpod.results.resample import replicate_losses, resampled_means, standard_error
from hpod.trial.metrics import auc

SPLITS = ("val", "test")
BASELINE_NAMES = ("constant", "zero", "linear", "trailing")


def split_skill(samples: dict, split: str, counts: np.ndarray, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """The cell's loss on a split (seed mean, else the best trial), the baselines', and skill
    against each, all with bootstrap SEs; and the loss's replicates."""
    runs = samples[f"model_{split}"]
    kept = slice(1 if len(runs) > 1 else 0, None)  # the seed runs; the best trial alone without them
    runs = runs[kept]
    loss = replicate_losses(runs, counts, rng)
    out = {"loss": float(runs.mean()), "loss_se": standard_error(loss), "runs": len(runs)}
    for name in BASELINE_NAMES:
        key = f"{name}_{split}"
        if key not in samples:
            continue
        base = resampled_means(samples[key], counts)[:, 0]
        out[name] = float(samples[key].mean())
        out[f"skill_{name}"] = 1 - out["loss"] / out[name]
        out[f"skill_{name}_se"] = standard_error(1 - loss / base)
    if f"scores_labels_{split}" in samples:
        out |= ranking(samples, split, kept)
    present = [name for name in BASELINE_NAMES if name in out]
    if present:
        out["strongest"] = min(present, key=lambda name: out[name])
        out["skill"], out["skill_se"] = out[f"skill_{out['strongest']}"], out[f"skill_{out['strongest']}_se"]
    return out, loss


def ranking(samples: dict, split: str, runs: slice) -> dict[str, float | None]:
    """AUC of the seed runs (their mean) and of each baseline: how well each orders the windows,
    apart from calibration, which the loss mixes in."""
    labels = torch.from_numpy(samples[f"scores_labels_{split}"])
    found = [auc(torch.from_numpy(run), labels) for run in samples[f"scores_model_{split}"][runs]]
    out = {"auc": None if None in found else float(np.mean(found))}
    for name in BASELINE_NAMES:
        if f"scores_{name}_{split}" in samples:
            out[f"auc_{name}"] = auc(torch.from_numpy(samples[f"scores_{name}_{split}"]), labels)
    return out


def beats(skill: dict, baseline: str, split: str) -> bool | None:
    """Whether a cell's loss is below `baseline`'s (or the strongest's, "") on the split by more
    than 2 SE of their difference (None: unmeasured); `skill` is split -> split_skill's dict."""
    measured = skill.get(split, {})
    key = f"skill_{baseline}" if baseline else "skill"
    if measured.get(key) is None:
        return None
    return measured[key] > 2 * measured[f"{key}_se"]


def falls_short(skill: dict, baseline: str) -> list[str]:
    """The splits on which a cell does not beat `baseline` beyond 2 SE."""
    return [split for split in SPLITS if beats(skill, baseline, split) is False]
