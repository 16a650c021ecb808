"""The Optuna study of one (job, budget, horizon): its sampler, pruner and objective.

The architecture is sampled by key from the budget's grid; the first trials are forced to the
grid's extremes; a trial that repeats the previous one's architecture and settings is pushed
to the other end of the dropout range. Every sampled value is the value the trainer uses.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from hpod import checkpoint as checkpoint_io
from hpod.budget import format_budget
from hpod.data import Dataset, data_shape
from hpod.errors import HpodError
from hpod.grid import Arch, GridEntry, extremes, require_grid
from hpod.guard import Guard
from hpod.job import JobSpec, SearchSpec
from hpod.liveness import is_dead, process_id
from hpod.memory import job_limit
from hpod.model import ModelConfig
from hpod.probe import ChoiceCache, Probe, choose_micro_batch, probe_steps
from hpod.pruners import WARMUP_EPOCHS, make_pruner
from hpod.records import log_line
from hpod.train import (
    EpochRecord,
    Interrupted,
    MemoryFailed,
    StepHook,
    TrainConfig,
    Trainer,
    TrainResult,
    pick_device,
    steps_per_epoch,
)

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MEMORY_FAILED = "memory_failed_archs"  # study user attr: keys that failed at micro-batch 1


class StudyFailed(HpodError):
    """Too many trials in a row failed: the job, not one trial, is broken."""

    exit_code = 1


@dataclass(frozen=True)
class StudyPlan:
    job: JobSpec
    budget: int
    horizon: int
    grid: list[GridEntry]
    excluded: frozenset[str] = frozenset()  # keys too big for the memory limit when queued

    @property
    def name(self) -> str:
        return f"{self.job.name}-{format_budget(self.budget)}-h{self.horizon}"

    @property
    def max_epochs(self) -> int:
        planned = max(self.job.search.epochs)
        cap = self.job.train.max_epochs
        return planned if cap is None else min(planned, cap)


def plan_study(job: JobSpec, budget: int, horizon: int) -> StudyPlan:
    """Everything a study needs that is known without data; errors if the grid is empty."""
    return StudyPlan(job, budget, horizon, require_grid(job.grid, data_shape(job.data), budget))


def distributions(
    search: SearchSpec, arch_keys: Sequence[str], widened: dict | None = None
) -> dict[str, BaseDistribution]:
    """The search space, in the order the objective samples it (arch and epochs before dropout),
    with ranges that imports widened (study user attr `widened`) in place of the job's."""
    warmup_low, warmup_high, warmup_step = search.warmup_steps
    space = {
        "arch": CategoricalDistribution(tuple(arch_keys)),
        "learning_rate": FloatDistribution(*search.learning_rate, log=True),
        "weight_decay": FloatDistribution(*search.weight_decay, log=True),
        "warmup_steps": IntDistribution(warmup_low, warmup_high, step=warmup_step),
        "epochs": CategoricalDistribution(search.epochs),
        "dropout": FloatDistribution(*search.dropout),
    }
    for name, fields in (widened or {}).items():
        space[name] = type(space[name])(**fields)
    return space


def suggest(trial: Trial, name: str, dist: BaseDistribution):
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class VariationSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler and forces variation: a trial with the previous trial's architecture,
    dropout within `variation_dropout_delta` and epochs within `variation_epochs_delta` gets
    dropout from the far end of `variation_dropout` instead. The replaced system's TPE kept
    re-sampling one architecture with near-identical settings.

    It also keeps trials off architectures that cannot fit in memory: those left out when the
    job was queued and those that failed at micro-batch 1 (study attr `memory_failed_archs`).
    The arch distribution keeps the whole grid, so a study shared with a bigger machine stays
    one search space."""

    def __init__(self, base: optuna.samplers.BaseSampler, spec: SearchSpec, excluded: frozenset[str] = frozenset()):
        self.base, self.spec, self.excluded = base, spec, excluded
        self.varied: dict[int, float] = {}  # trial number -> the dropout the base sampler chose

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.base.sample_relative(study, trial, search_space)
        if "arch" in params:
            params["arch"] = self._fitting(study, trial, params["arch"], search_space["arch"].choices)
        if {"arch", "epochs", "dropout"} <= params.keys():
            fixed = trial.system_attrs.get("fixed_params", {})
            arch, epochs = fixed.get("arch", params["arch"]), fixed.get("epochs", params["epochs"])
            params["dropout"] = self._vary(study, trial, arch, epochs, params["dropout"])
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name == "arch":
            value = self._fitting(study, trial, value, param_distribution.choices)
        if param_name == "dropout" and {"arch", "epochs"} <= trial.params.keys():
            value = self._vary(study, trial, trial.params["arch"], trial.params["epochs"], value)
        return value

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def _fitting(self, study, trial: FrozenTrial, arch: str, choices: Sequence[str]) -> str:
        """The sampled architecture, or, if it cannot fit in memory, one drawn among those that can."""
        # Hyperband hands samplers a per-bracket view without user_attrs; the storage has them.
        attrs = study._storage.get_study_user_attrs(study._study_id)
        excluded = self.excluded | set(attrs.get(MEMORY_FAILED, ()))
        allowed = [c for c in choices if c not in excluded]
        if arch not in excluded or not allowed:
            return arch
        pick = random.Random(zlib.crc32(f"{study.study_name}:{trial.number}".encode())).choice(allowed)
        log.info("trial %d: %s does not fit in memory; %s instead", trial.number, arch, pick)
        return pick

    def _vary(self, study, trial: FrozenTrial, arch: str, epochs: int, dropout: float) -> float:
        previous = previous_trial(study, trial.number)
        if previous is None or previous.params["arch"] != arch:
            return dropout
        last_dropout = previous.params["dropout"]
        if (
            abs(dropout - last_dropout) >= self.spec.variation_dropout_delta
            or abs(epochs - previous.params["epochs"]) >= self.spec.variation_epochs_delta
        ):
            return dropout
        low, high = self.spec.variation_dropout
        forced = high if last_dropout < (low + high) / 2 else low
        self.varied[trial.number] = dropout
        log.info(
            "trial %d repeats trial %d's %s: dropout %.3f -> %.2f", trial.number, previous.number, arch, dropout, forced
        )
        return forced


def previous_trial(study: optuna.Study, number: int) -> FrozenTrial | None:
    """The latest trial before `number` that sampled an architecture and a dropout."""
    earlier = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < number and {"arch", "dropout", "epochs"} <= t.params.keys()
    ]
    return max(earlier, key=lambda t: t.number, default=None)


def open_study(plan: StudyPlan, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study or load it; a new one gets its metadata and forced extreme trials.

    The sampler is seeded from the study, the job's seed and the number of trials already
    started, so a process that reopens the study (each trial's worker does) does not replay
    earlier draws, and studies of different budgets do not share theirs."""
    study = optuna.create_study(
        storage=storage,
        study_name=plan.name,
        direction="minimize",
        load_if_exists=True,
        pruner=make_pruner(plan.job.search.pruner, plan.max_epochs),
    )
    trials = study.get_trials(deepcopy=False)
    search = plan.job.search
    started = sum(t.state != TrialState.WAITING for t in trials)
    seed = zlib.crc32(f"{plan.name}:{search.seed}:{started}".encode())
    tpe = optuna.samplers.TPESampler(n_startup_trials=search.n_startup_trials, seed=seed)
    study.sampler = VariationSampler(tpe, search, plan.excluded)
    if not trials and not study.user_attrs:
        for key, value in study_attrs(plan).items():
            study.set_user_attr(key, value)
        if search.forced_extremes:
            for arch in extremes([e for e in plan.grid if e.arch.key not in plan.excluded]):
                study.enqueue_trial({"arch": arch.key}, user_attrs={"forced_extreme": True})
    return study


def study_attrs(plan: StudyPlan) -> dict:
    return {
        "budget": plan.budget,
        "horizon": plan.horizon,
        "job_name": plan.job.name,
        "job_text": plan.job.text,
        "n_trials": plan.job.search.n_trials,
        "grid_size": len(plan.grid),
    }


class Objective:
    """Samples a trial's architecture and settings, trains it, returns its best val loss."""

    def __init__(
        self,
        plan: StudyPlan,
        dataset: Dataset,
        sampler: VariationSampler,
        on_epoch: Callable[[int, EpochRecord], None] | None = None,
        after_step: StepHook | None = None,
        checkpoints: Path | None = None,  # directory for resume state and best weights; None: none
        guard: Guard | None = None,  # pauses training when the machine is short of memory or hot
        choices: ChoiceCache | None = None,  # micro-batch choices kept across trials and processes
        probe: Probe = probe_steps,
        seed_offset: int = 0,  # added to each trial's training seed (seed runs use their own)
    ):
        self.plan, self.dataset, self.sampler = plan, dataset, sampler
        self.on_epoch, self.after_step, self.checkpoints = on_epoch, after_step, checkpoints
        self.guard, self.choices, self.probe, self.seed_offset = guard, choices, probe, seed_offset
        self.params_by_key = {e.arch.key: e.params for e in plan.grid}
        self.device = pick_device(plan.job.train.device)

    def __call__(self, trial: Trial) -> float:
        widened = trial.study.user_attrs.get("widened")
        space = distributions(self.plan.job.search, list(self.params_by_key), widened)
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        arch = Arch.from_key(params["arch"])
        model_config = arch.model_config(
            self.dataset.shape,
            dropout=params["dropout"],
            head_dropout=self.plan.job.train.head_dropout,
            revin=self.plan.job.train.revin,
        )
        config = self.train_config(params, trial.number)
        if self.guard is not None:  # a trial does not start, nor probe its memory, on a strained machine
            try:
                self.guard.between_steps(lambda: self.after_step and self.after_step(0, -1), can_shrink=False)
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
            result = trainer.fit(lambda r: self.report(trial, r), self.after_step)
        except (optuna.TrialPruned, Interrupted):
            raise
        except MemoryFailed as exc:
            self.fail_for_memory(trial, arch, exc)
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.record_run(trial, trainer)
        record_result(trial, result)
        return result.best_val_loss

    def micro_batch(self, trial: Trial, arch: Arch, model_config: ModelConfig, config: TrainConfig) -> int:
        """The cached choice for this architecture on this device and data, or a new one, probed."""
        limit = job_limit(self.plan.job.guard, self.device)
        key = ChoiceCache.key(arch, self.device, model_config, config.effective_batch)
        choice = None if self.choices is None else self.choices.get(key)
        if choice is None or choice.predicted > limit.bytes:
            params = self.params_by_key[arch.key]
            choice = choose_micro_batch(arch, params, model_config, config, self.dataset, limit, self.probe)
            if self.choices is not None:
                self.choices.put(key, choice)
        log.info("trial %d: %s, %s (limit %s)", trial.number, arch.key, choice.describe(), limit.source)
        trial.set_user_attr("micro_batch_choice", choice.describe())
        return choice.micro_batch

    def fail_for_memory(self, trial: Trial, arch: Arch, exc: MemoryFailed) -> None:
        """Record the architecture as memory-failed: no later trial of the study samples it."""
        failed = set(trial.study.user_attrs.get(MEMORY_FAILED, ()))
        trial.study.set_user_attr(MEMORY_FAILED, sorted(failed | {arch.key}))
        trial.set_user_attr("fail_reason", f"out of memory: {exc}")

    def record_run(self, trial: Trial, trainer: Trainer) -> None:
        """What the run did, however it ended: epochs, pauses, and a micro-batch halved on the way."""
        record_history(trial, trainer.result.history)
        if trainer.micro_batch != trainer.config.micro_batch:
            ran = dataclasses.replace(trainer.config, micro_batch=trainer.micro_batch)
            trial.set_user_attr("micro_batch", ran.micro_batch)
            trial.set_user_attr("accumulation_steps", ran.accumulation_steps)
        self.record_pauses(trial)

    def record_pauses(self, trial: Trial) -> None:
        """Add the guard's pauses since the last record to the trial's (a resumed trial keeps its
        earlier ones)."""
        if self.guard is None:
            return
        taken = self.guard.take_pauses()
        if taken:
            pauses = trial.user_attrs.get("pauses", []) + taken
            trial.set_user_attr("pauses", pauses)
            trial.set_user_attr("paused_s", sum(p["seconds"] for p in pauses))

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
        resumes = trial.user_attrs.get("resumed_from", [])
        trial.set_user_attr("resumed_from", [*resumes, {"epoch": epoch, "step": step}])
        reported = trial.study.get_trials(deepcopy=False)[trial.number].intermediate_values
        for record in trainer.result.history:
            if record.epoch not in reported:
                trial.report(record.best_val_loss, record.epoch)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A finished trial needs no resume state; only the study's best keeps its best weights,
        except in seed runs (seed_offset set), which all keep theirs for the evaluation."""
        if self.checkpoints is None:
            return
        if self.seed_offset:
            checkpoint_io.resume_path(self.checkpoints, study.study_name, trial.number).unlink(missing_ok=True)
            return
        best = best_trial(study)
        checkpoint_io.prune(self.checkpoints, study.study_name, trial.number, None if best is None else best.number)

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
            seed=self.plan.job.search.seed + self.seed_offset + number,
            device=self.device,
        )

    def record_setup(self, trial: Trial, arch: Arch, config: TrainConfig) -> None:
        """Store what the trial will run before it runs, so a crash still leaves it readable."""
        sizes = self.dataset.sizes()
        attrs = {
            "d_model": arch.d_model,
            "n_layers": arch.n_layers,
            "n_heads": arch.n_heads,
            "d_ff": arch.d_ff,
            "param_count": self.params_by_key[arch.key],
            "micro_batch": config.micro_batch,
            "accumulation_steps": config.accumulation_steps,
            "epochs_planned": config.epochs,
            WARMUP_EPOCHS: math.ceil(config.warmup_steps / steps_per_epoch(self.dataset, config.effective_batch)),
            "device": config.device,
            "worker": process_id(),  # lets a restarted daemon tell an orphaned trial from a live one
            "seed": config.seed,
            **{f"n_{split}": n for split, n in sizes.items()},
        }
        if trial.number in self.sampler.varied:
            attrs["dropout_before_variation"] = self.sampler.varied[trial.number]
        if self.dataset.task == "binary":
            val_targets = self.dataset.targets[self.dataset.splits["val"]]
            attrs["val_positive_rate"] = float(val_targets.mean())
        else:  # losses are in standardised units: original = value × std + mean
            attrs["target_mean"], attrs["target_std"] = self.dataset.target_mean, self.dataset.target_std
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def report(self, trial: Trial, record: EpochRecord) -> None:
        if self.on_epoch is not None:
            self.on_epoch(trial.number, record)
        trial.report(record.best_val_loss, record.epoch)  # the objective's value, so a pruned trial keeps its best
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record.epoch} (best val loss {record.best_val_loss:.4f})")


def record_history(trial: Trial, history: list[EpochRecord]) -> None:
    trial.set_user_attr("epochs_run", len(history))
    trial.set_user_attr("learning_curve", [vars(r) for r in history])
    if history:
        best = min(history, key=lambda r: r.val_loss)
        trial.set_user_attr("best_val_loss", best.val_loss)
        trial.set_user_attr("best_epoch", best.epoch)


def record_result(trial: Trial, result: TrainResult) -> None:
    trial.set_user_attr("baseline_val_loss", result.baseline_val_loss)
    if result.val_auc is not None:
        trial.set_user_attr("val_auc", result.val_auc)


class TrialLog:
    """Optuna callback writing each finished trial's log line, durably, to a file and the log."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        line = log_line(trial)
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("%s", line)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while there is none (Optuna raises instead)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value, default=None)


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward a job's target: complete and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trial(
    study: optuna.Study,
    objective: Objective,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    resume: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FrozenTrial:
    """Run one trial by ask and tell: a new one, or trial `resume` left RUNNING by a stopped or
    dead process, which keeps its parameters. An exception fails the trial, not the caller;
    Interrupted leaves it RUNNING, to be resumed."""
    trial = study.ask() if resume is None else reopen_trial(study, resume)
    if on_start is not None:
        on_start(trial.number)
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        frozen = study.tell(trial, state=TrialState.PRUNED)
    except Interrupted:
        raise
    except Exception:
        log.warning("trial %d failed", trial.number, exc_info=True)
        frozen = study.tell(trial, state=TrialState.FAIL)
    else:
        frozen = study.tell(trial, value)
    objective.after_trial(study, frozen)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def reopen_trial(study: optuna.Study, number: int) -> Trial:
    """A Trial handle on an existing RUNNING trial; its suggest calls return its stored params."""
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state != TrialState.RUNNING:
        raise HpodError(f"trial {number} of {study.study_name} is {frozen.state.name}, not RUNNING")
    return Trial(study, frozen._trial_id)  # Optuna keeps the storage id private; optimize() does the same


def orphaned_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose worker process is gone: to be resumed, not run anew."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if is_dead(t.user_attrs.get("worker"))]


def fail_trial(study: optuna.Study, number: int, reason: str) -> FrozenTrial:
    """Record a RUNNING trial whose worker died as failed, with the reason."""
    trial = reopen_trial(study, number)
    trial.set_user_attr("fail_reason", reason)
    return study.tell(trial, state=TrialState.FAIL)


def run_study(
    study: optuna.Study,
    objective: Objective,
    target: int,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> None:
    """Run trials in this process until `target` have finished, continuing first any trial that
    a stopped or killed run left behind; a failing trial fails alone, unless `max_failures`
    fail in a row, which fails the study."""
    failures = 0
    while finished_count(study) < target:
        trial = run_trial(study, objective, callbacks, resume=next(iter(orphaned_trials(study)), None))
        gc.collect()  # trials share this process: free the last one's model before the next is built
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        reason = trial.user_attrs.get("fail_reason", "unknown")
        check_failures(study.study_name, failures, objective.plan.job.search.max_failures, reason)


def check_failures(study_name: str, failures: int, limit: int, last_reason: str | None) -> None:
    """Fail the study once `limit` trials in a row have failed: the job, not a trial, is broken."""
    if failures >= limit:
        raise StudyFailed(f"study {study_name}: {failures} trials in a row failed (last: {last_reason})")
