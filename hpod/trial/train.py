"""The trainer: AdamW with warm-up and linear decay, gradient accumulation, early stopping.

It knows nothing of Optuna: the search passes `on_epoch`, which may raise to prune.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hpod.guard.policy import Guard
from hpod.trial import checkpoint as checkpoint_io
from hpod.trial.data import Dataset
from hpod.trial.device import autocast
from hpod.trial.metrics import auc, baseline_loss, evaluate, loss_sum
from hpod.trial.model import ModelConfig, PatchTST

log = logging.getLogger(__name__)
OUT_OF_MEMORY = (torch.OutOfMemoryError, MemoryError)


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float
    weight_decay: float
    warmup_steps: int  # optimizer steps of linear warm-up, then linear decay to 0
    epochs: int  # planned epochs (the schedule's length); early stopping may end sooner
    effective_batch: int = 256  # samples per optimizer step
    micro_batch: int = 256  # samples per forward/backward; accumulation fills the rest
    patience: int = 10
    min_delta: float = 0.001  # an improvement is at least this fraction of the constant predictor's loss
    grad_clip: float = 1.0
    divergence_factor: float = 10.0
    seed: int = 0
    device: str = "cpu"

    @property
    def accumulation_steps(self) -> int:
        return math.ceil(self.effective_batch / self.micro_batch)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    best_val_loss: float | None = None  # the running minimum up to this epoch: what the objective returns
    learning_rate: float | None = None  # the schedule's at the epoch's end
    seconds: float | None = None  # training and validating it (since the resume, for a resumed epoch)


@dataclass
class TrainResult:
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    baseline_val_loss: float  # a constant predictor's val loss: the floor to beat
    val_auc: float | None  # binary targets only, at the best epoch
    history: list[EpochRecord] = field(default_factory=list)


class Interrupted(Exception):
    """Training was asked to stop at a step boundary; the trial is to be continued later."""


class Diverged(RuntimeError):
    """The loss became non-finite or blew far past a constant predictor's."""


class MemoryFailed(RuntimeError):
    """The architecture does not train even at micro-batch 1 within the memory limit."""


class EarlyStopping:
    """Stop after `patience` epochs without an improvement of at least `min_delta`."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.reference: float | None = None
        self.bad_epochs = 0

    def step(self, val_loss: float) -> bool:
        """Record an epoch's loss; True when training should stop."""
        if self.reference is None or val_loss < self.reference - self.min_delta:
            self.reference, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


def init_head(model: PatchTST, output: float) -> None:
    """A fresh model predicts `output` (the train optimum of a constant) for every window, so its
    first loss is the constant predictor's and not that of an output with std ~0.5 (a return
    target's std is ~0.025 before standardising)."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(output)


def make_optimizer(model: PatchTST, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW decaying matrices only: biases, norms and positions keep their scale (nanoGPT)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, foreach=True)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def accumulate_gradients(model, dataset: Dataset, batch: torch.Tensor, config: TrainConfig, micro_batch: int) -> float:
    """Forward and backward one optimizer step's samples in micro-batches; returns the mean loss.

    Each micro-batch's summed loss is divided by the whole batch size, so the gradient equals
    that of one big batch whatever the micro-batch."""
    total = 0.0
    for chunk in batch.split(micro_batch):
        x = dataset.windows(chunk).to(config.device, non_blocking=True)
        y = dataset.targets[chunk].to(config.device, non_blocking=True)
        with autocast(config.device):
            logits = model(x)
        loss = loss_sum(logits, y, dataset.task) / len(batch)
        loss.backward()
        total += loss.detach()
    return float(total)


StepHook = Callable[[int, int], None]  # (epoch, step) after each optimizer step; may block or raise


@dataclass
class Position:
    """Where training stands; with the RNG states, enough to continue exactly."""

    epoch: int = 0  # the epoch in progress
    step: int = 0  # the next optimizer step within it
    order: torch.Tensor | None = None  # this epoch's shuffled train rows
    losses: list[float] = field(default_factory=list)  # this epoch's step losses so far
    done: bool = False  # early stopping or the last epoch ended training
    micro_batch: int | None = None  # once an OOM or memory pressure has halved the config's


class Trainer:
    """One trial's training run. It can stop between any two steps and continue from its
    checkpoint as if it had never stopped: model, optimizer, schedule, RNG, epoch, position in
    the epoch, best loss and early-stopping counter all come back."""

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainConfig,
        dataset: Dataset,
        checkpoint: Path | None = None,
        best_weights: Path | None = None,
        guard: Guard | None = None,
    ):
        self.config, self.dataset, self.guard = config, dataset, guard
        self.checkpoint, self.best_weights = checkpoint, best_weights
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = PatchTST(model_config).to(config.device)
        init_head(self.model, dataset.constant_output())
        self.optimizer = make_optimizer(self.model, config)
        self.steps_per_epoch = steps_per_epoch(dataset, config.effective_batch)
        self.schedule = make_schedule(self.optimizer, config, self.steps_per_epoch)
        self.epoch_started = time.perf_counter()
        self.result = TrainResult(math.inf, -1, 0, baseline_loss(dataset), None)
        self.stopper = EarlyStopping(config.patience, config.min_delta * self.result.baseline_val_loss)
        self.position = Position()
        self.resumed_from: tuple[int, int] | None = None  # (epoch, step) of the checkpoint used
        state = None if checkpoint is None else checkpoint_io.load(checkpoint)
        if state is not None and same_run(state["config"], asdict(config)):
            self.restore(state)

    @property
    def micro_batch(self) -> int:
        return self.config.micro_batch if self.position.micro_batch is None else self.position.micro_batch

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None, after_step: StepHook | None = None):
        """Train to early stopping or the planned epochs; the result's loss is the best epoch's.

        `after_step` runs between optimizer steps: it may pause (block) or stop (raise
        Interrupted), in which case the position is checkpointed before Interrupted goes on."""
        try:
            while not self.position.done and self.position.epoch < self.config.epochs:
                train_loss = self.train_epoch(after_step or _no_op)
                record = self.end_epoch(train_loss)
                self.save()
                if on_epoch is not None:
                    on_epoch(record)
        except Interrupted:
            self.save()
            raise
        return self.result

    def train_epoch(self, after_step: StepHook) -> float:
        self.epoch_started = time.perf_counter()
        self.model.train()
        position, config = self.position, self.config
        if position.order is None:
            train_ends = self.dataset.splits["train"]
            position.order = train_ends[torch.randperm(len(train_ends), generator=self.generator)]
        batches = position.order.split(config.effective_batch)
        while position.step < len(batches):
            loss = self.gradients(batches[position.step])
            if not math.isfinite(loss):
                raise Diverged(f"train loss became {loss} at epoch {position.epoch} step {position.step}")
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            position.losses.append(loss)
            position.step += 1
            after_step(position.epoch, position.step - 1)
            self.ask_guard(after_step)
        return sum(position.losses) / len(position.losses)

    def gradients(self, batch: torch.Tensor) -> float:
        """One step's gradients; an OOM halves the micro-batch (accumulation doubles, so the
        gradient is the same) and tries the step again, down to micro-batch 1."""
        while True:
            try:
                return accumulate_gradients(self.model, self.dataset, batch, self.config, self.micro_batch)
            except OUT_OF_MEMORY as exc:
                self.optimizer.zero_grad(set_to_none=True)
                if self.micro_batch == 1:
                    raise MemoryFailed(f"out of memory at micro-batch 1 ({exc})") from exc
                log.warning("out of memory at micro-batch %d; halving it", self.micro_batch)
                self.position.micro_batch = self.micro_batch // 2

    def ask_guard(self, after_step: StepHook) -> None:
        """Pause while the guard says so; halve the micro-batch when memory pressure persists."""
        if self.guard is None:
            return
        epoch, step = self.position.epoch, self.position.step - 1
        if self.guard.between_steps(lambda: after_step(epoch, step), can_shrink=self.micro_batch > 1):
            self.position.micro_batch = self.micro_batch // 2
            log.warning("memory pressure persisted; micro-batch now %d", self.micro_batch)

    def end_epoch(self, train_loss: float) -> EpochRecord:
        """Validate, keep the best, decide on early stopping, and move to the next epoch."""
        epoch, result = self.position.epoch, self.result
        val_loss, scores = evaluate(self.model, self.dataset, "val", self.config.device)
        warming_up = (epoch + 1) * self.steps_per_epoch < self.config.warmup_steps
        check_divergence(val_loss, result.baseline_val_loss, self.config.divergence_factor, epoch, warming_up)
        seconds = time.perf_counter() - self.epoch_started
        lr = self.schedule.get_last_lr()[0]
        record = EpochRecord(epoch, train_loss, val_loss, min(val_loss, result.best_val_loss), lr, seconds)
        result.history.append(record)
        result.epochs_run = epoch + 1
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            if self.dataset.task == "binary":
                result.val_auc = auc(scores, self.dataset.targets[self.dataset.splits["val"]])
            if self.best_weights is not None:
                self.write(self.best_weights, {"model": self.model.state_dict(), "epoch": epoch})
        stop = self.stopper.step(val_loss)
        if stop:
            log.info("early stop at epoch %d: best %.4f at epoch %d", epoch, result.best_val_loss, result.best_epoch)
        self.position = Position(epoch=epoch + 1, done=stop, micro_batch=self.position.micro_batch)
        return record

    def save(self) -> None:
        if self.checkpoint is None:
            return
        position, result = self.position, self.result
        self.write(
            self.checkpoint,
            {
                "config": asdict(self.config),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
                | ({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
                "position": vars(position) | {"losses": list(position.losses)},
                "result": vars(result) | {"history": [vars(r) for r in result.history]},
                "stopper": {"reference": self.stopper.reference, "bad_epochs": self.stopper.bad_epochs},
            },
        )

    def write(self, path: Path, state: dict) -> None:
        """A checkpoint written; on a full disk the guard pauses the trial until it can be."""
        if self.guard is None:
            checkpoint_io.save(path, state)
        else:
            self.guard.until_written(lambda: checkpoint_io.save(path, state), path)

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.position = Position(**state["position"])
        history = [EpochRecord(**r) for r in state["result"]["history"]]
        self.result = TrainResult(**(state["result"] | {"history": history}))
        self.stopper.reference, self.stopper.bad_epochs = state["stopper"]["reference"], state["stopper"]["bad_epochs"]
        self.resumed_from = (self.position.epoch, self.position.step)
        log.info("resuming from checkpoint at epoch %d step %d", *self.resumed_from)


def train(
    model_config: ModelConfig,
    config: TrainConfig,
    dataset: Dataset,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    after_step: StepHook | None = None,
) -> TrainResult:
    """Train without checkpoints (tests and benchmarks): see Trainer.fit."""
    return Trainer(model_config, config, dataset).fit(on_epoch, after_step)


def _no_op(epoch: int, step: int) -> None:
    return None


def same_run(saved: dict, config: dict) -> bool:
    """A checkpoint continues this run if all but the micro-batch agree: the micro-batch is
    chosen by the machine, and the gradient does not depend on it."""
    return {**saved, "micro_batch": None} == {**config, "micro_batch": None}


def steps_per_epoch(dataset: Dataset, effective_batch: int) -> int:
    return math.ceil(len(dataset.splits["train"]) / effective_batch)


def check_divergence(val_loss: float, baseline: float, factor: float, epoch: int, warming_up: bool = False) -> None:
    """A non-finite loss always fails; a loss past `factor` × the constant predictor's only after
    warm-up, when the learning rate has reached its peak and a spike is no longer transient."""
    if not math.isfinite(val_loss):
        raise Diverged(f"val loss became {val_loss} at epoch {epoch}")
    if not warming_up and val_loss > factor * baseline:
        raise Diverged(
            f"val loss {val_loss:.4g} at epoch {epoch} exceeds {factor:g}x a constant predictor's {baseline:.4g}"
        )
