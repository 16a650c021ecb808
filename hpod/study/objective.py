"""The objective: samples a trial's architecture and settings, sizes its micro-batch, trains it,
records what it ran, and returns its best val loss."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from hpod.guard.policy import Guard
from hpod.records import (
    ACCUMULATION_STEPS,
    BASELINE_VAL_LOSS,
    BEST_EPOCH,
    BEST_VAL_LOSS,
    DEVICE,
    DROPOUT_BEFORE_VARIATION,
    EPOCHS_PLANNED,
    EPOCHS_RUN,
    FAIL_REASON,
    LEARNING_CURVE,
    MEMORY_FAILED,
    MICRO_BATCH,
    MICRO_BATCH_CHOICE,
    PAUSED_S,
    PAUSES,
    RESUMED_FROM,
    SEED,
    TARGET_MEAN,
    TARGET_STD,
    VAL_AUC,
    VAL_POSITIVE_RATE,
    WARMUP_EPOCHS,
    WIDENED,
)
from hpod.study.plan import StudyPlan, distributions, suggest
from hpod.study.sampler import VariationSampler
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.data import Dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import Arch
from hpod.trial.memory import job_limit
from hpod.trial.model import ModelConfig
from hpod.trial.probe import ChoiceCache, Probe, choose_micro_batch, probe_steps
from hpod.trial.train import (
    EpochRecord,
    Interrupted,
    MemoryFailed,
    StepHook,
    TrainConfig,
    Trainer,
    TrainResult,
    steps_per_epoch,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialHooks:
    """What the caller hears of a running trial (the worker tells the daemon)."""

    on_epoch: Callable[[int, EpochRecord], None] | None = None
    after_step: StepHook | None = None  # between optimizer steps: where a stop or pause is taken
    on_setup: Callable[[int, int, int], None] | None = None  # (trial, planned epochs, steps per epoch)


@dataclass(frozen=True)
class TrialResources:
    """Where a trial keeps its files and what it may use; the defaults keep nothing."""

    checkpoints: Path | None = None  # resume state and best weights
    tracebacks: Path | None = None  # a failed trial's full traceback; None: the log only
    guard: Guard | None = None  # pauses training when the machine is short of memory or hot
    choices: ChoiceCache | None = None  # micro-batch choices kept across trials and processes
    probe: Probe = probe_steps
    seed_offset: int = 0  # added to each trial's training seed (seed runs use their own)
    device: str | None = None  # a worker slot's device; None: the job's train.device
    memory_share: float = 1.0  # of the memory limit, when workers share the device


class Objective:
    """Samples a trial's architecture and settings, trains it, returns its best val loss."""

    def __init__(
        self,
        plan: StudyPlan,
        dataset: Dataset,
        sampler: VariationSampler,
        hooks: TrialHooks = TrialHooks(),
        resources: TrialResources = TrialResources(),
    ):
        self.plan, self.dataset, self.sampler, self.hooks, self.resources = plan, dataset, sampler, hooks, resources
        self.device = pick_device(plan.job.train.device if resources.device is None else resources.device)
        self.checkpoints, self.tracebacks, self.guard = resources.checkpoints, resources.tracebacks, resources.guard
        self.params_by_key = {e.arch.key: e.params for e in plan.grid}

    def __call__(self, trial: Trial) -> float:
        widened = trial.study.user_attrs.get(WIDENED)
        space = distributions(self.plan.job.search, list(self.params_by_key), widened)
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        arch = Arch.from_key(params["arch"])
        self.record_arch(trial, arch)
        model_config = arch.model_config(
            self.dataset.shape,
            dropout=params["dropout"],
            head_dropout=self.plan.job.train.head_dropout,
            revin=self.plan.job.train.revin,
        )
        config = self.train_config(params, trial.number)
        if self.guard is not None:  # a trial does not start, nor probe its memory, on a strained machine
            try:
                self.guard.between_steps(
                    lambda: self.hooks.after_step and self.hooks.after_step(0, -1), can_shrink=False
                )
            finally:
                self.record_pauses(trial)
        try:
            config = dataclasses.replace(config, micro_batch=self.micro_batch(trial, arch, model_config, config))
        except MemoryFailed as exc:
            self.fail_for_memory(trial, arch, exc)
            raise
        self.record_setup(trial, arch, config)
        trainer = Trainer(
            model_config,
            config,
            self.dataset,
            *self.checkpoint_paths(trial.study.study_name, trial.number),
            guard=self.guard,
        )
        if trainer.resumed_from is not None:
            self.record_resume(trial, trainer)
        try:
            result = trainer.fit(lambda r: self.report(trial, r), self.hooks.after_step)
        except (optuna.TrialPruned, Interrupted):
            raise
        except MemoryFailed as exc:
            self.fail_for_memory(trial, arch, exc)
            raise
        finally:
            self.record_run(trial, trainer)
        record_result(trial, result)
        return result.best_val_loss

    def micro_batch(self, trial: Trial, arch: Arch, model_config: ModelConfig, config: TrainConfig) -> int:
        """The cached choice for this architecture on this device and data, or a new one, probed."""
        limit = job_limit(self.plan.job.guard, self.device, self.resources.memory_share)
        key = ChoiceCache.key(arch, self.device, model_config, config.effective_batch)
        choice = None if self.resources.choices is None else self.resources.choices.get(key)
        if choice is None or choice.predicted > limit.bytes:
            params = self.params_by_key[arch.key]
            choice = choose_micro_batch(arch, params, model_config, config, self.dataset, limit, self.resources.probe)
            if self.resources.choices is not None:
                self.resources.choices.put(key, choice)
        log.info("trial %d: %s, %s (limit %s)", trial.number, arch.key, choice.describe(), limit.source)
        trial.set_user_attr(MICRO_BATCH_CHOICE, choice.describe())
        return choice.micro_batch

    def fail_for_memory(self, trial: Trial, arch: Arch, exc: MemoryFailed) -> None:
        """Record the architecture as memory-failed: no later trial of the study samples it."""
        failed = set(trial.study.user_attrs.get(MEMORY_FAILED, ()))
        trial.study.set_user_attr(MEMORY_FAILED, sorted(failed | {arch.key}))
        trial.set_user_attr(FAIL_REASON, f"out of memory: {exc}")

    def record_run(self, trial: Trial, trainer: Trainer) -> None:
        """What the run did, however it ended: epochs, pauses, and a micro-batch halved on the way."""
        record_history(trial, trainer.result.history)
        if trainer.micro_batch != trainer.config.micro_batch:
            ran = dataclasses.replace(trainer.config, micro_batch=trainer.micro_batch)
            trial.set_user_attr(MICRO_BATCH, ran.micro_batch)
            trial.set_user_attr(ACCUMULATION_STEPS, ran.accumulation_steps)
        self.record_pauses(trial)

    def record_pauses(self, trial: Trial) -> None:
        """Add the guard's pauses since the last record to the trial's (a resumed trial keeps its
        earlier ones)."""
        if self.guard is None:
            return
        taken = self.guard.take_pauses()
        if taken:
            pauses = trial.user_attrs.get(PAUSES, []) + taken
            trial.set_user_attr(PAUSES, pauses)
            trial.set_user_attr(PAUSED_S, sum(p["seconds"] for p in pauses))

    def checkpoint_paths(self, name: str, number: int) -> tuple[Path | None, Path | None]:
        """Resume state and best weights of trial `number` of study `name` (a search or seed study)."""
        if self.checkpoints is None:
            return None, None
        return checkpoint_io.resume_path(self.checkpoints, name, number), checkpoint_io.best_path(
            self.checkpoints, name, number
        )

    def record_resume(self, trial: Trial, trainer: Trainer) -> None:
        """Note where the trial continued from, and report epochs Optuna missed before the stop."""
        epoch, step = trainer.resumed_from
        resumes = trial.user_attrs.get(RESUMED_FROM, [])
        trial.set_user_attr(RESUMED_FROM, [*resumes, {"epoch": epoch, "step": step}])
        reported = trial.study.get_trials(deepcopy=False)[trial.number].intermediate_values
        for record in trainer.result.history:
            if record.epoch not in reported:
                trial.report(record.best_val_loss, record.epoch)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A finished trial needs no resume state; only the study's best keeps its best weights,
        except in seed runs (seed_offset set), which all keep theirs for the evaluation."""
        if self.checkpoints is None:
            return
        if self.resources.seed_offset:
            checkpoint_io.resume_path(self.checkpoints, study.study_name, trial.number).unlink(missing_ok=True)
            return
        trials = study.get_trials(deepcopy=False)  # one snapshot, so the best and the losers agree
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(complete, key=lambda t: t.value, default=None)
        # A finished trial that is not the best can never become it (the best only improves).
        losers = {t.number for t in trials if t.state.is_finished() and (best is None or t.number != best.number)}
        checkpoint_io.prune(self.checkpoints, study.study_name, trial.number, losers)

    def train_config(self, params: dict, number: int) -> TrainConfig:
        train_spec = self.plan.job.train
        epochs = params["epochs"] if train_spec.max_epochs is None else min(params["epochs"], train_spec.max_epochs)
        return TrainConfig(
            learning_rate=params["learning_rate"],
            weight_decay=params["weight_decay"],
            warmup_steps=params["warmup_steps"],
            epochs=epochs,
            effective_batch=train_spec.effective_batch,
            micro_batch=train_spec.effective_batch,  # until the memory probe chooses
            patience=train_spec.patience,
            min_delta=train_spec.min_delta,
            grad_clip=train_spec.grad_clip,
            divergence_factor=train_spec.divergence_factor,
            seed=self.plan.job.search.seed + self.resources.seed_offset + number,
            device=self.device,
        )

    def record_arch(self, trial: Trial, arch: Arch) -> None:
        """Store the architecture as soon as it is sampled, so that a trial failing in its memory
        probe or its set-up still has it in its record and log line."""
        shape = {"d_model": arch.d_model, "n_layers": arch.n_layers, "n_heads": arch.n_heads, "d_ff": arch.d_ff}
        for key, value in (shape | {"param_count": self.params_by_key[arch.key]}).items():
            trial.set_user_attr(key, value)

    def record_setup(self, trial: Trial, arch: Arch, config: TrainConfig) -> None:
        """Store what the trial will run before it runs, so a crash still leaves it readable."""
        sizes = self.dataset.sizes()
        attrs = {
            MICRO_BATCH: config.micro_batch,
            ACCUMULATION_STEPS: config.accumulation_steps,
            EPOCHS_PLANNED: config.epochs,
            WARMUP_EPOCHS: math.ceil(config.warmup_steps / steps_per_epoch(self.dataset, config.effective_batch)),
            DEVICE: config.device,
            SEED: config.seed,
            **{f"n_{split}": n for split, n in sizes.items()},
        }
        if trial.number in self.sampler.varied:
            attrs[DROPOUT_BEFORE_VARIATION] = self.sampler.varied[trial.number]
        if self.dataset.task == "binary":
            val_targets = self.dataset.targets[self.dataset.splits["val"]]
            attrs[VAL_POSITIVE_RATE] = float(val_targets.mean())
        else:  # losses are in standardised units: original = value × std + mean
            attrs[TARGET_MEAN], attrs[TARGET_STD] = self.dataset.target_mean, self.dataset.target_std
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.hooks.on_setup is not None:
            self.hooks.on_setup(trial.number, config.epochs, steps_per_epoch(self.dataset, config.effective_batch))

    def report(self, trial: Trial, record: EpochRecord) -> None:
        if self.hooks.on_epoch is not None:
            self.hooks.on_epoch(trial.number, record)
        trial.report(record.best_val_loss, record.epoch)  # the objective's value, so a pruned trial keeps its best
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch} (best val loss {record.best_val_loss:.4f})")


def record_history(trial: Trial, history: list[EpochRecord]) -> None:
    trial.set_user_attr(EPOCHS_RUN, len(history))
    trial.set_user_attr(LEARNING_CURVE, [vars(r) for r in history])
    if history:
        best = min(history, key=lambda r: r.val_loss)
        trial.set_user_attr(BEST_VAL_LOSS, best.val_loss)
        trial.set_user_attr(BEST_EPOCH, best.epoch)


def record_result(trial: Trial, result: TrainResult) -> None:
    trial.set_user_attr(BASELINE_VAL_LOSS, result.baseline_val_loss)
    if result.val_auc is not None:
        trial.set_user_attr(VAL_AUC, result.val_auc)
