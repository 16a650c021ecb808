"""Checkpoints: written whole or not at all, read back or refused quietly, pruned to the best."""

from __future__ import annotations

import torch

from hpod.trial import checkpoint


def test_a_checkpoint_reads_back_whole(tmp_path):
    path = tmp_path / "study" / "trial_00001.pt"
    checkpoint.save(path, {"model": {"w": torch.arange(4.0)}, "epoch": 3})
    state = checkpoint.load(path)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.arange(4.0))
    assert not list(path.parent.glob("*.tmp"))  # the temp file was renamed over the target


def test_a_missing_or_damaged_checkpoint_reads_as_none(tmp_path):
    assert checkpoint.load(tmp_path / "absent.pt") is None
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a torch file")
    assert checkpoint.load(damaged) is None


def test_pruning_drops_the_finished_trials_resume_state_and_the_losers_weights_only(tmp_path):
    for number in (0, 1, 2, 3):
        checkpoint.save(checkpoint.best_path(tmp_path, "s", number), {"epoch": number})
    checkpoint.save(checkpoint.resume_path(tmp_path, "s", 2), {"epoch": 2})
    checkpoint.prune(tmp_path, "s", finished=2, losers={0, 2})  # 1 is the best, 3 still runs
    left = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert left == ["trial_00001.best.pt", "trial_00003.best.pt"]
