"""Deleting a study for good: through Optuna, with its seed studies, checkpoints and trial log.

Only `hpod remove --studies` and `hpod clean --studies` call this, after a person confirmed it;
a study is days of compute, so nothing else in hpod deletes one.
"""

from __future__ import annotations

import shutil

import optuna

from hpod.state import StateDir, refuse_link
from hpod.study.seeds import seed_study_name
from hpod.trial.checkpoint import trial_dir


def with_seed_studies(storage, name: str) -> list[str]:
    """The study and the seed studies of its best trials, as they stand on the storage."""
    prefix = seed_study_name(name, 0).removesuffix("0")
    names = optuna.get_all_study_names(storage)
    return [n for n in names if n == name or (n.startswith(prefix) and n[len(prefix) :].isdigit())]


def delete_study(state: StateDir, storage, name: str) -> list[str]:
    """Delete the study, its seed studies and what each keeps in the state directory; the names
    deleted."""
    names = with_seed_studies(storage, name)
    for each in names:
        optuna.delete_study(study_name=each, storage=storage)
        folder = trial_dir(state.checkpoints, each)
        if folder.is_dir():
            shutil.rmtree(folder)
        log = refuse_link(state.logs / f"{each}.log")
        log.unlink(missing_ok=True)
    return names
