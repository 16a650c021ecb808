import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpod.trial.data import load_dataset
from hpod.trial.grid import Arch
from hpod.trial.metrics import auc, evaluate
from hpod.trial.model import PatchTST
from hpod.trial.train import (
    Diverged,
    EarlyStopping,
    Interrupted,
    TrainConfig,
    Trainer,
    accumulate_gradients,
    check_divergence,
    make_optimizer,
    make_schedule,
    train,
)

ARCH = Arch(16, 1, 2, 32)


def config(**kw) -> TrainConfig:
    base = {"learning_rate": 1e-3, "weight_decay": 1e-3, "warmup_steps": 10, "epochs": 2}
    return TrainConfig(**(base | kw))


def gradients(dataset, micro_batch: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = PatchTST(ARCH.model_config(dataset.shape, dropout=0.0))
    batch = dataset.splits["train"][:96]
    accumulate_gradients(model, dataset, batch, config(effective_batch=96), micro_batch)
    return [p.grad.clone() for p in model.parameters()]


def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch(dataset_h5):
    whole = gradients(dataset_h5, 96)
    for micro in (32, 7):  # 7 leaves a ragged last micro-batch
        for a, b in zip(whole, gradients(dataset_h5, micro), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_accumulation_steps_cover_the_effective_batch():
    assert config(effective_batch=256, micro_batch=64).accumulation_steps == 4
    assert config(effective_batch=256, micro_batch=256).accumulation_steps == 1


def test_early_stopping_waits_patience_epochs_without_a_min_delta_gain():
    stopper = EarlyStopping(patience=3, min_delta=0.01)
    losses = [1.0, 0.9, 0.895, 0.894, 0.893]  # gains after 0.9 are below min_delta
    assert [stopper.step(v) for v in losses] == [False, False, False, False, True]


def test_training_stops_early_and_returns_the_best_epochs_loss(dataset_h5):
    result = train(
        ARCH.model_config(dataset_h5.shape, dropout=0.0),
        config(epochs=30, patience=2, min_delta=1.0),  # no gain can reach min_delta
        dataset_h5,
    )
    assert result.epochs_run == 3
    assert result.best_val_loss == min(r.val_loss for r in result.history)
    assert result.history[result.best_epoch].val_loss == result.best_val_loss
    assert 0.0 < result.val_auc < 1.0


def test_weight_decay_reaches_the_optimizer_for_matrices_only(dataset_h5):
    model = PatchTST(ARCH.model_config(dataset_h5.shape))
    optimizer = make_optimizer(model, config(weight_decay=3.3e-3))
    decays = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}
    assert set(decays) == {3.3e-3, 0.0}
    assert decays[3.3e-3] > decays[0.0] > 0


def test_warmup_steps_shape_the_learning_rate(dataset_h5):
    model = PatchTST(ARCH.model_config(dataset_h5.shape))
    cfg = config(learning_rate=1e-3, warmup_steps=20, epochs=2)
    optimizer = make_optimizer(model, cfg)
    schedule = make_schedule(optimizer, cfg, steps_per_epoch=50)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(1e-3 / 20)
    assert rates[19] == pytest.approx(1e-3) and max(rates) == rates[19]
    assert rates[-1] == pytest.approx(1e-3 / 80)  # linear decay to zero at the last step


def test_a_diverging_run_raises_with_the_reason(dataset_h5):
    with pytest.raises(Diverged, match="val loss|train loss"):
        train(ARCH.model_config(dataset_h5.shape), config(learning_rate=1e4, warmup_steps=0, grad_clip=1e9), dataset_h5)


def test_training_is_reproducible_with_a_seed(dataset_h5):
    model_config = ARCH.model_config(dataset_h5.shape)
    a = train(model_config, config(epochs=1, seed=3), dataset_h5)
    b = train(model_config, config(epochs=1, seed=3), dataset_h5)
    assert a.best_val_loss == b.best_val_loss


def test_auc_matches_the_pairwise_definition():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])
    pairs = [(p, n) for p in (0.35, 0.8) for n in (0.1, 0.4, 0.7)]
    assert auc(scores, labels) == pytest.approx(sum(p > n for p, n in pairs) / len(pairs))
    assert auc(scores, torch.zeros(5)) is None
    assert math.isclose(auc(torch.arange(4.0), torch.tensor([0.0, 0, 1, 1])), 1.0)


@settings(max_examples=50, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 3).map(float), st.booleans()), min_size=2, max_size=40).filter(
        lambda pairs: len({label for _, label in pairs}) == 2
    )
)
def test_auc_counts_a_tie_as_half_a_pair(pairs):
    """Few distinct scores (a trailing rate, a constant) make ties; each counts one half."""
    scores = torch.tensor([score for score, _ in pairs])
    labels = torch.tensor([float(label) for _, label in pairs])
    by_pair = [(p > n) + 0.5 * (p == n) for p, lp in pairs if lp for n, ln in pairs if not ln]
    assert auc(scores, labels) == pytest.approx(sum(by_pair) / len(by_pair))


class StopAt:
    """An after_step hook that stops training once, at (epoch, step)."""

    def __init__(self, epoch: int, step: int):
        self.at, self.fired = (epoch, step), False

    def __call__(self, epoch: int, step: int) -> None:
        if (epoch, step) == self.at and not self.fired:
            self.fired = True
            raise Interrupted("test stop")


@pytest.mark.parametrize("stop_at", [(0, 12), (0, 44), (1, 0)])
def test_a_stopped_run_continues_from_its_checkpoint_exactly_as_if_never_stopped(dataset_h5, tmp_path, stop_at):
    model_config = ARCH.model_config(dataset_h5.shape, dropout=0.2)
    cfg = config(epochs=2, seed=7)
    straight = Trainer(model_config, cfg, dataset_h5).fit()
    path = tmp_path / "trial.pt"
    with pytest.raises(Interrupted):
        Trainer(model_config, cfg, dataset_h5, checkpoint=path).fit(after_step=StopAt(*stop_at))
    resumed = Trainer(model_config, cfg, dataset_h5, checkpoint=path)
    assert resumed.resumed_from == (stop_at[0], stop_at[1] + 1)
    result = resumed.fit()
    assert [r.val_loss for r in result.history] == [r.val_loss for r in straight.history]
    assert result.best_val_loss == straight.best_val_loss and result.epochs_run == 2


def test_a_checkpoint_of_other_settings_is_ignored(dataset_h5, tmp_path):
    model_config = ARCH.model_config(dataset_h5.shape)
    path = tmp_path / "trial.pt"
    Trainer(model_config, config(epochs=1), dataset_h5, checkpoint=path).fit()
    assert Trainer(model_config, config(epochs=1), dataset_h5, checkpoint=path).resumed_from == (1, 0)
    assert Trainer(model_config, config(epochs=1, learning_rate=5e-4), dataset_h5, checkpoint=path).resumed_from is None


def test_the_best_epochs_weights_are_kept_beside_the_checkpoint(dataset_h5, tmp_path):
    model_config = ARCH.model_config(dataset_h5.shape)
    best = tmp_path / "best.pt"
    trainer = Trainer(model_config, config(epochs=2), dataset_h5, best_weights=best)
    result = trainer.fit()
    saved = torch.load(best, weights_only=True)
    assert saved["epoch"] == result.best_epoch
    model = PatchTST(model_config)
    model.load_state_dict(saved["model"])
    assert evaluate(model, dataset_h5, "val", "cpu")[0] == pytest.approx(result.best_val_loss, rel=1e-6)


def return_dataset(tiny_job):
    return load_dataset(dataclasses.replace(tiny_job.data, target="return"), 5)


def test_a_fresh_model_predicts_the_train_mean_so_its_first_loss_is_the_constant_predictors(tiny_job, dataset_h5):
    for dataset in (dataset_h5, return_dataset(tiny_job)):
        trainer = Trainer(ARCH.model_config(dataset.shape), config(), dataset)
        loss, outputs = evaluate(trainer.model, dataset, "val", "cpu")
        train_targets = dataset.targets[dataset.splits["train"]].double()
        expected = torch.logit(train_targets.mean()) if dataset.task == "binary" else train_targets.mean()
        torch.testing.assert_close(outputs.double(), torch.full_like(outputs.double(), float(expected)))
        assert loss == pytest.approx(trainer.result.baseline_val_loss, rel=1e-5)


def test_min_delta_is_a_fraction_of_the_constant_predictors_loss(tiny_job, dataset_h5):
    for dataset in (dataset_h5, return_dataset(tiny_job)):
        trainer = Trainer(ARCH.model_config(dataset.shape), config(min_delta=0.01), dataset)
        assert trainer.stopper.min_delta == pytest.approx(0.01 * trainer.result.baseline_val_loss)


def test_a_return_target_trains_without_divergence_from_near_the_constant_baseline(tiny_job):
    """It failed 5 of 5 trials with 'Diverged at epoch 0' before targets were standardised."""
    dataset = return_dataset(tiny_job)
    assert dataset.task == "regression" and abs(dataset.target_std - 0.025) < 0.015
    result = train(ARCH.model_config(dataset.shape), config(epochs=3, learning_rate=1e-3), dataset)
    assert result.history[0].val_loss < 2 * result.baseline_val_loss
    assert all(math.isfinite(r.val_loss) for r in result.history)


def test_the_divergence_factor_is_not_applied_during_warm_up():
    check_divergence(50.0, 1.0, 10.0, epoch=0, warming_up=True)
    with pytest.raises(Diverged, match="exceeds 10x"):
        check_divergence(50.0, 1.0, 10.0, epoch=3)
    with pytest.raises(Diverged, match="nan"):
        check_divergence(float("nan"), 1.0, 10.0, epoch=0, warming_up=True)


def test_each_epoch_record_carries_the_running_minimum(dataset_h5):
    result = train(ARCH.model_config(dataset_h5.shape), config(epochs=4, learning_rate=3e-3), dataset_h5)
    running = [min(r.val_loss for r in result.history[: i + 1]) for i in range(len(result.history))]
    assert [r.best_val_loss for r in result.history] == running
