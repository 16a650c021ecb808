"""The study of one (job, budget, horizon): its plan and forced extremes, forced variation, the
objective (every sampled value reaches the trainer, the best epoch is returned), and trials run,
failed and continued through the supervisor's ask-and-tell loop."""

import dataclasses
import socket

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpod.records import TrialLog
from hpod.study.objective import Objective, TrialHooks, TrialResources
from hpod.study.plan import distributions, finished_count, open_study, plan_study
from hpod.study.sampler import VariationSampler
from hpod.supervisor.trials import StudyFailed, reopen_trial, run_study, run_trial
from hpod.trial.data import load_dataset
from hpod.trial.grid import Arch, extremes
from hpod.trial.train import Interrupted
from tests.helpers import log_lines

BUDGET = 20_000


def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def start(tmp_path, job, dataset, budget=BUDGET):
    plan = plan_study(job, budget, 5)
    study = open_study(plan, storage(tmp_path))
    return plan, study, Objective(plan, dataset, study.sampler)


def without_extremes(job, **search):
    return dataclasses.replace(job, search=dataclasses.replace(job.search, forced_extremes=False, **search))


def test_a_new_study_queues_the_grid_extremes_first_and_none_past_its_target(tmp_path, fast_job, dataset_h5):
    eight = dataclasses.replace(fast_job, search=dataclasses.replace(fast_job.search, n_trials=8))
    plan, study, objective = start(tmp_path, eight, dataset_h5, budget=100_000)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    expected = [a.key for a in extremes(plan.grid)]
    assert [t.system_attrs["fixed_params"]["arch"] for t in waiting] == expected and len(expected) == 6
    assert study.metric_names == ["val_loss"]  # the objective's name in optuna-dashboard
    run_study(study, objective, target=1)
    assert study.trials[0].params["arch"] == expected[0]
    assert study.trials[0].user_attrs["forced_extreme"] is True
    two = open_study(plan_study(fast_job, 100_000, 5), optuna.storages.InMemoryStorage())  # a target of 2
    assert [t.system_attrs["fixed_params"]["arch"] for t in two.trials] == expected[:2]  # none left waiting


def test_reopening_a_study_queues_nothing_again(tmp_path, fast_job, dataset_h5):
    start(tmp_path, fast_job, dataset_h5)
    _, study, _ = start(tmp_path, fast_job, dataset_h5)
    assert len(study.trials) == min(fast_job.search.n_trials, len(extremes(plan_study(fast_job, BUDGET, 5).grid))) == 2


def test_the_architecture_at_grid_position_zero_and_a_zero_dropout_are_used_and_logged(tmp_path, fast_job, dataset_h5):
    """The replaced system's `idx or fallback` skipped architecture index 0."""
    job = without_extremes(fast_job, dropout=(0.0, 0.3))
    plan, study, objective = start(tmp_path, job, dataset_h5)
    first = plan.grid[0].arch
    study.enqueue_trial({"arch": first.key, "dropout": 0.0})
    log_file = tmp_path / "trials.log"
    run_study(study, objective, target=1, callbacks=[TrialLog(log_file)])
    trial = study.trials[0]
    assert trial.params["dropout"] == 0.0
    assert (trial.user_attrs["d_model"], trial.user_attrs["n_layers"]) == (first.d_model, first.n_layers)
    [line] = log_lines(log_file)
    assert line.startswith(f"Trial 0: d_model={first.d_model}, n_layers={first.n_layers}, n_heads={first.n_heads}")
    assert "dropout=0.00," in line and "state=COMPLETE" in line


def test_every_sampled_parameter_reaches_the_trainer(tmp_path, fast_job, dataset_h5):
    _, _, objective = start(tmp_path, fast_job, dataset_h5)
    params = {"arch": "d32-L2-h4-f64", "learning_rate": 3e-4, "weight_decay": 2e-3, "warmup_steps": 30, "epochs": 2}
    config = objective.train_config(params, number=4)
    assert (config.learning_rate, config.weight_decay, config.warmup_steps, config.epochs) == (3e-4, 2e-3, 30, 2)
    assert config.seed == fast_job.search.seed + 4
    assert config.micro_batch * config.accumulation_steps >= config.effective_batch


def test_the_objective_is_the_best_epochs_loss_and_the_trial_keeps_its_record(tmp_path, fast_job, dataset_h5):
    job = without_extremes(fast_job, epochs=(2,))
    _, study, objective = start(tmp_path, job, dataset_h5)
    run_study(study, objective, target=1)
    trial = study.trials[0]
    curve = [e["val_loss"] for e in trial.user_attrs["learning_curve"]]
    assert len(curve) == trial.user_attrs["epochs_run"] == 2
    assert trial.value == min(curve)
    attrs = trial.user_attrs
    assert attrs["param_count"] == objective.params_by_key[trial.params["arch"]]
    assert attrs["n_val"] == len(dataset_h5.splits["val"]) and attrs["n_train"] > attrs["n_val"]
    assert 0 < attrs["val_positive_rate"] < 1 and 0 < attrs["val_auc"] < 1
    assert attrs["best_epoch"] in (0, 1)


def test_a_pruned_trial_records_its_epochs_and_counts_as_finished(tmp_path, fast_job, dataset_h5):
    _, study, objective = start(tmp_path, without_extremes(fast_job, epochs=(2,)), dataset_h5)
    study.pruner = optuna.pruners.ThresholdPruner(upper=0.0)  # every loss is above 0: prune at once
    run_study(study, objective, target=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs_run"] == 1 and finished_count(study) == 1


def test_a_failing_trial_fails_alone_with_its_reason_then_the_study_stops_after_max_failures(
    tmp_path, fast_job, dataset_h5
):
    job = without_extremes(fast_job, learning_rate=(1e3, 1e4), max_failures=2)
    _, study, objective = start(tmp_path, job, dataset_h5)
    with pytest.raises(StudyFailed, match="2 trials in a row failed"):
        run_study(study, objective, target=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("Diverged" in t.user_attrs["fail_reason"] for t in study.trials)


class Scripted(optuna.samplers.RandomSampler):
    """A base sampler that always proposes the same values (independent or relative)."""

    def __init__(self, values: dict, relative: bool = False):
        super().__init__(seed=0)
        self.values, self.relative = values, relative

    def infer_relative_search_space(self, study, trial):
        return optuna.search_space.intersection_search_space(study.get_trials()) if self.relative else {}

    def sample_relative(self, study, trial, search_space):
        return {k: v for k, v in self.values.items() if k in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.values.get(param_name, super().sample_independent(study, trial, param_name, param_distribution))


def sample_dropout(study, arch="d32-L2-h4-f64", epochs=75) -> float:
    trial = study.ask()
    trial.suggest_categorical("arch", ["d32-L2-h4-f64", "d16-L1-h2-f32"])
    trial.suggest_categorical("epochs", [50, 75, 100])
    dropout = trial.suggest_float("dropout", 0.1, 0.3)
    study.tell(trial, 1.0)
    return dropout


@pytest.mark.parametrize("relative", [False, True])
def test_forced_variation_moves_a_repeated_trials_dropout_to_the_far_end(fast_job, relative):
    search = dataclasses.replace(fast_job.search, epochs=(50, 75, 100), variation_epochs_delta=20)
    values = {"arch": "d32-L2-h4-f64", "epochs": 75, "dropout": 0.2}
    sampler = VariationSampler(Scripted(values, relative), search)
    study = optuna.create_study(sampler=sampler)
    assert sample_dropout(study) == 0.2  # nothing before it to repeat
    assert sample_dropout(study) == 0.12  # 0.2 again: pushed to the end away from 0.2
    assert sample_dropout(study) == 0.2  # differs from 0.12 by more than 0.08
    sampler.base.values = {"arch": "d16-L1-h2-f32", "epochs": 75, "dropout": 0.21}
    assert sample_dropout(study) == 0.21  # another architecture
    sampler.base.values = {"arch": "d16-L1-h2-f32", "epochs": 100, "dropout": 0.21}
    assert sample_dropout(study) == 0.21  # epochs moved by 25
    sampler.base.values = {"arch": "d16-L1-h2-f32", "epochs": 100, "dropout": 0.15}
    assert sample_dropout(study) == 0.12  # 0.15 is near the last 0.21, which was on the high side
    assert sample_dropout(study) == 0.27  # 0.15 is near the last 0.12, on the low side
    assert sampler.varied == {1: 0.2, 5: 0.15, 6: 0.15}


def test_the_stored_parameter_is_the_varied_value_the_trainer_used(tmp_path, fast_job, dataset_h5):
    job = without_extremes(fast_job)
    _, study, objective = start(tmp_path, job, dataset_h5)
    arch = plan_study(job, BUDGET, 5).grid[0].arch.key
    space = distributions(job.search, list(objective.params_by_key))
    params = {"arch": arch, "epochs": 2, "dropout": 0.25}
    previous = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=0.7, params=params, distributions={k: space[k] for k in params}
    )
    study.add_trial(previous)
    study.enqueue_trial({"arch": arch, "epochs": 2})
    study.sampler.base = Scripted({"dropout": 0.24})
    run_study(study, objective, target=2)
    trial = study.trials[1]
    assert trial.params["dropout"] == 0.12
    assert trial.user_attrs["dropout_before_variation"] == 0.24


def test_architecture_keys_of_the_study_are_those_of_the_grid(tmp_path, fast_job, dataset_h5):
    plan, _, objective = start(tmp_path, fast_job, dataset_h5)
    assert list(objective.params_by_key) == [e.arch.key for e in plan.grid]
    assert all(Arch.from_key(k) for k in objective.params_by_key)


def test_each_reopening_of_a_study_draws_new_parameters(tmp_path, fast_job, dataset_h5):
    """Every daemon trial runs in a new process that reopens the study with a new sampler."""
    for _ in range(3):
        _, study, objective = start(tmp_path, fast_job, dataset_h5)
        run_study(study, objective, target=finished_count(study) + 1)
    rates = [t.params["learning_rate"] for t in study.trials if t.state != TrialState.WAITING]
    assert len(rates) == 3 and len(set(rates)) == 3


def test_a_trial_left_running_by_a_dead_process_is_continued_from_its_checkpoint(tmp_path, fast_job, dataset_h5):
    job = without_extremes(fast_job, epochs=(2,))
    plan, study, _ = start(tmp_path, job, dataset_h5)

    def stop_early(epoch: int, step: int) -> None:
        if (epoch, step) == (0, 3):
            raise Interrupted("stopped")

    stopping = Objective(
        plan, dataset_h5, study.sampler, TrialHooks(after_step=stop_early), TrialResources(checkpoints=tmp_path / "ck")
    )
    with pytest.raises(Interrupted):
        run_trial(study, stopping)
    params = dict(study.trials[0].params)
    reopen_trial(study, 0).set_user_attr("worker", f"{socket.gethostname()}:999999999:0.00")  # long gone

    objective = Objective(plan, dataset_h5, study.sampler, resources=TrialResources(checkpoints=tmp_path / "ck"))
    run_study(study, objective, target=1)
    trials = study.trials
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE
    assert trials[0].params == params and trials[0].user_attrs["resumed_from"] == [{"epoch": 0, "step": 4}]
    assert not list((tmp_path / "ck" / plan.name).glob("trial_*[0-9].pt"))  # resume state gone
    assert (tmp_path / "ck" / plan.name / "trial_00000.best.pt").exists()  # the best trial's weights kept


class Recording(optuna.pruners.BasePruner):
    """Prunes nothing; keeps what each should_prune call saw."""

    def __init__(self):
        self.seen: list[dict[int, float]] = []

    def prune(self, study, trial) -> bool:
        self.seen.append(dict(trial.intermediate_values))
        return False


def test_the_pruner_receives_each_epochs_running_minimum(tmp_path, fast_job, dataset_h5):
    _, study, objective = start(
        tmp_path, without_extremes(fast_job, epochs=(4,), learning_rate=(3e-3, 4e-3)), dataset_h5
    )
    study.pruner = recording = Recording()
    run_study(study, objective, target=1)
    curve = [r["val_loss"] for r in study.trials[0].user_attrs["learning_curve"]]
    reported = recording.seen[-1]
    assert [reported[e] for e in sorted(reported)] == [min(curve[: i + 1]) for i in range(len(curve))]
    assert study.trials[0].value == min(curve)


def another_daily_series(tmp_path) -> str:
    """A CSV as exported elsewhere: capitalised columns, US dates, newest row first, and a
    random walk with drift and volatility of its own (not the S&P 500)."""
    rng = np.random.default_rng(5)
    days = pd.bdate_range("1990-01-02", periods=4000)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0004, 0.017, len(days))))
    frame = pd.DataFrame({
        "Date": days.strftime("%m/%d/%Y"), "Open": close * (1 + rng.normal(0, 0.003, len(days))),
        "High": close * 1.012, "Low": close * 0.988, "Close": close,
        "Volume": rng.integers(10_000, 90_000, len(days)),
    })  # fmt: skip
    path = tmp_path / "other.csv"
    frame.iloc[::-1].to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("series", ["bundled", "other"])
def test_a_return_target_study_trains_from_near_the_constant_baseline_without_divergence(tmp_path, fast_job, series):
    """Before targets were standardised a return study failed 5 of 5 trials ("Diverged at epoch 0")."""
    data = dataclasses.replace(fast_job.data, target="return", min_val_samples=300)
    if series == "other":
        data = dataclasses.replace(data, path=another_daily_series(tmp_path))
    job = dataclasses.replace(without_extremes(fast_job, n_trials=3, epochs=(2,)), data=data)
    _, study, objective = start(tmp_path, job, load_dataset(data, 5))
    run_study(study, objective, target=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        first = trial.user_attrs["learning_curve"][0]["val_loss"]
        assert first < 2 * trial.user_attrs["baseline_val_loss"], trial.user_attrs


def test_a_trial_finishing_beside_a_running_one_never_removes_the_running_ones_best_weights(
    tmp_path, fast_job, dataset_h5
):
    """The race of two workers: trial 0 is still running (its best epoch's weights on disk, and
    it may end as the study's best) when trial 1 finishes worse than trial 2 did."""
    from hpod.trial import checkpoint

    plan = plan_study(without_extremes(fast_job), BUDGET, 5)
    study = open_study(plan, storage(tmp_path))
    objective = Objective(plan, dataset_h5, study.sampler, resources=TrialResources(checkpoints=tmp_path / "ckpt"))
    running, worse, better = study.ask(), study.ask(), study.ask()
    for trial in (running, worse, better):
        checkpoint.save(checkpoint.best_path(tmp_path / "ckpt", study.study_name, trial.number), {"n": trial.number})
    study.tell(better, 0.40)
    objective.after_trial(study, study.tell(worse, 0.45))
    kept = sorted(p.name for p in (tmp_path / "ckpt" / study.study_name).glob("*.best.pt"))
    assert kept == ["trial_00000.best.pt", "trial_00002.best.pt"]  # the running one's and the best's
    objective.after_trial(study, study.tell(running, 0.30))  # it ends as the best: its weights are there
    assert [p.name for p in (tmp_path / "ckpt" / study.study_name).glob("*.best.pt")] == ["trial_00000.best.pt"]
