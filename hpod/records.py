"""One trial as a flat record: the trial log line, and the rows of `hpod export`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import os
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from hpod.errors import HpodError
from hpod.logs import DATE_FORMAT
from hpod.state import open_no_follow, refuse_link

log = logging.getLogger(__name__)
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND
# Study user attrs
MEMORY_FAILED = "memory_failed_archs"  # architecture keys that failed at micro-batch 1
WIDENED = "widened"  # param -> distribution fields an import widened, which later trials sample from
BASELINES = "baselines"  # baseline name -> {val_loss, test_loss} (results/baselines.py)
TEST_EVALUATION = "test_evaluation"  # what the evaluation measured at the study's end (results/evaluation.py)
N_TRIALS = "n_trials"  # the target of the latest job that opened it
TRANSFER = "transfer"  # the ladder's transfer into it: source studies and trials, the learning-rate fit
SOURCE_TRIAL = "trial"  # a seed study's: the search trial whose settings it reruns
# Trial user attrs (with ARCH_FIELDS and the split sizes n_train, n_val, n_test)
WORKER = "worker"  # host:pid:start time of the process running the trial
SURPLUS = "surplus"  # a trial that yielded because the study's target was already met or running
BEAT = "beat"  # when the trial's worker last said it is alive (time.time()), for other hosts
WARMUP_EPOCHS = "warmup_epochs"  # the epochs its warm-up spans, rounded up
FAIL_REASON = "fail_reason"  # why a trial failed, one line: `Type: message` for an exception
TRACEBACK = "traceback"  # the file holding the full traceback of the exception that failed it
MICRO_BATCH_CHOICE = "micro_batch_choice"  # the probe's choice in words: predicted and measured GiB
MICRO_BATCH = "micro_batch"  # rows per forward pass
ACCUMULATION_STEPS = "accumulation_steps"  # micro-batches per optimizer step
EPOCHS_PLANNED = "epochs_planned"  # the sampled epochs, capped by --max-epochs
EPOCHS_RUN = "epochs_run"  # epochs trained (early stopping and pruning end some sooner)
LEARNING_CURVE = "learning_curve"  # each epoch's EpochRecord as a dict
BEST_VAL_LOSS = "best_val_loss"  # the best epoch's val loss (a pruned trial's value is its last)
BEST_EPOCH = "best_epoch"
BASELINE_VAL_LOSS = "baseline_val_loss"  # the constant predictor's, on the same split
VAL_AUC = "val_auc"  # binary targets only
PAUSES = "pauses"  # the guard's pauses: reason, start, seconds
PAUSED_S = "paused_s"
RESUMED_FROM = "resumed_from"  # each resume's epoch and step
SEED = "seed"  # the training seed
DEVICE = "device"
DROPOUT_BEFORE_VARIATION = "dropout_before_variation"  # the sampled dropout a forced variation replaced
VAL_POSITIVE_RATE = "val_positive_rate"  # binary targets: the val split's base rate
TARGET_MEAN = "target_mean"  # regression: losses are in standardised units (value x std + mean)
TARGET_STD = "target_std"
ORIGINAL_NUMBER = "original_number"  # an imported trial's number where it came from
IMPORT_KEY = "import_key"  # what makes an import idempotent
IMPORTED_FROM = "imported_from"  # the file an imported trial came from
IMPORTED_PARAM_COUNT = "imported_param_count"  # the count the source file claimed
FORCED_EXTREME = "forced_extreme"  # an enqueued grid extreme
TRANSFERRED_FROM = "transferred_from"  # an enqueued smaller budget's trial: "study#number"
REASON_CHARS = 500  # a reason is a line of the log, not the traceback

ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "param_count")
PARAMS = ("learning_rate", "weight_decay", "warmup_steps", "dropout", "epochs")
COLUMNS = (
    "number", "state", "arch", *ARCH_FIELDS, "micro_batch", "accumulation_steps", *PARAMS,
    "epochs_run", "best_epoch", "val_loss", "val_auc", "duration_s", "pauses", "paused_s", "fail_reason",
    "traceback",
)  # fmt: skip


def outcome_of(trial: FrozenTrial) -> tuple[str, str | None]:
    """A finished trial as the daemon counts it: SURPLUS, else Optuna's state; and its failure's
    reason, if it has one."""
    return "SURPLUS" if trial.user_attrs.get(SURPLUS) else trial.state.name, trial.user_attrs.get(FAIL_REASON)


def trial_row(trial: FrozenTrial) -> dict:
    """Export columns of a trial; values it lacks (a trial failed early) are None."""
    attrs = trial.user_attrs
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    queued = trial.system_attrs.get("fixed_params", {})  # a waiting trial's enqueued params
    row = {"number": trial.number, "state": trial.state.name, "arch": trial.params.get("arch", queued.get("arch"))}
    row |= {name: attrs.get(name) for name in (*ARCH_FIELDS, "micro_batch", "accumulation_steps")}
    row |= {name: trial.params.get(name) for name in PARAMS}
    row |= {
        "epochs_run": attrs.get("epochs_run"),
        "best_epoch": attrs.get("best_epoch"),
        "val_loss": attrs.get("best_val_loss", trial.value),  # a pruned trial's value is its last epoch's
        "val_auc": attrs.get("val_auc"),
        "duration_s": None if duration is None else round(duration, 3),
        "pauses": len(attrs.get("pauses", [])),
        "paused_s": attrs.get("paused_s"),
        "fail_reason": attrs.get(FAIL_REASON),
        "traceback": attrs.get(TRACEBACK),
    }
    return row


def failure_reason(exc: BaseException) -> str:
    """An exception as a trial's reason: its type and message on one line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}"[:REASON_CHARS] if message else type(exc).__name__


def log_line(trial: FrozenTrial) -> str:
    """The trial log line of DESIGN.md, from which `hpod import` can recover the trial."""
    r = trial_row(trial)
    parts = [
        f"d_model={r['d_model']}",
        f"n_layers={r['n_layers']}",
        f"n_heads={r['n_heads']}",
        f"d_ff={r['d_ff']}",
        f"params={_thousands(r['param_count'])}",
        f"batch={r['micro_batch']}x{r['accumulation_steps']}" if r["micro_batch"] is not None else "batch=?",
        f"learning_rate={_sci(r['learning_rate'])}",
        f"weight_decay={_sci(r['weight_decay'])}",
        f"warmup_steps={r['warmup_steps']}",
        f"dropout={_fixed(r['dropout'], 2)}",
        f"epochs={r['epochs_run'] if r['epochs_run'] is not None else 0}/{r['epochs']}",  # run / the epochs param
        f"state={r['state']}",
        f"val_loss={_fixed(r['val_loss'], 4)}",
    ]
    if r["fail_reason"]:
        where = f" (traceback: {r['traceback']})" if r["traceback"] else ""
        parts.append(f"reason={r['fail_reason']}{where}")
    return f"Trial {trial.number}: " + ", ".join(parts)


class TrialLog:
    """Optuna callback writing each finished trial's log line, durably, to a file and the log."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        line = log_line(trial)
        try:
            with os.fdopen(open_no_follow(refuse_link(self.path.parent) / self.path.name, APPEND), "a") as f:
                f.write(f"{timestamp()} {line}\n")
                f.flush()
                os.fsync(f.fileno())
        except (OSError, HpodError) as exc:  # a full disk, a planted link: the line is in the daemon's log
            log.warning("%s not written (%s)", self.path, exc.strerror or exc)
        log.info("%s", line)


def timestamp() -> str:
    """Local time with its offset, second precision: what a log line the morning after needs."""
    return dt.datetime.now().astimezone().strftime(DATE_FORMAT)


def export_text(trials: list[FrozenTrial], fmt: str) -> str:
    """All trials as CSV or JSON text with the export columns."""
    rows = [trial_row(t) for t in trials]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _thousands(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _sci(value: float | None) -> str:
    return "?" if value is None else f"{value:.1e}"


def _fixed(value: float | None, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
