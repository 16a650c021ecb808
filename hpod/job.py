"""Job files: the search space, data and training settings of one kind of study, as YAML.

Every field has the default of `jobs/architectural_search.yaml`; a job file overrides what it
names, and a key it misspells is an error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hpod.errors import HpodError
from hpod.state import regular_file

TARGETS = ("threshold", "return", "column")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # no path separators, no "..", no leading dot
PRUNERS = ("none", "median", "hyperband")


@dataclass(frozen=True)
class DataSpec:
    path: str | None = None  # CSV or Parquet; None: the bundled S&P 500 series
    target: str = "threshold"  # threshold (BCE) | return (MSE) | column (the named column, h rows ahead)
    threshold_pct: float = 1.0  # threshold: close rises at least this many percent within h rows
    price_column: str = "close"  # threshold and return targets derive from it
    target_column: str | None = None  # for target: column
    date_column: str | None = "date"  # rows are sorted by it when present (any capitalisation)
    date_format: str | None = None  # e.g. "%d/%m/%Y"; None: the one common format that reads every row
    features: tuple[str, ...] | None = None  # None: derived from open/high/low/close/volume
    context: int = 60  # rows per input window
    patch_len: int = 10
    stride: int = 5
    split: tuple[float, ...] = (0.7, 0.15, 0.15)  # train/val/test, chronological
    min_val_samples: int = 500  # fewer validation samples than this: refuse the job
    bootstrap_block: int = 20  # rows per block of the report's moving-block bootstrap (serial correlation)
    max_mb: int = 512  # a data file larger than this (or expanding past it, gzipped) is refused

    def __post_init__(self) -> None:
        _check(self.target in TARGETS, f"data.target must be one of {TARGETS} but got {shown(self.target)}")
        _check(self.target != "column" or self.target_column, "data.target: column needs data.target_column")
        _check(self.threshold_pct > 0, f"data.threshold_pct must be positive but got {self.threshold_pct}")
        _check(self.patch_len >= 1 and self.stride >= 1, "data.patch_len and data.stride must be >= 1")
        _check(
            self.context >= self.patch_len,
            f"data.context ({self.context}) must be at least data.patch_len ({self.patch_len})",
        )
        _check(
            len(self.split) == 3 and all(f > 0 for f in self.split) and abs(sum(self.split) - 1) < 1e-6,
            f"data.split must be three positive fractions summing to 1 but got {list(self.split)}",
        )
        _check(self.min_val_samples >= 1, f"data.min_val_samples must be >= 1 but got {self.min_val_samples}")
        _check(self.bootstrap_block >= 1, f"data.bootstrap_block must be >= 1 but got {self.bootstrap_block}")
        _check(self.features is None or len(self.features) >= 1, "data.features must name at least one column")
        _check(self.max_mb >= 1, f"data.max_mb must be >= 1 but got {self.max_mb}")
        _check(self.date_format is None or reads_dates(self.date_format), f"data.date_format {shown(self.date_format)} "
               "cannot read dates (see Python's strptime directives, e.g. %d/%m/%Y)")  # fmt: skip


@dataclass(frozen=True)
class GridSpec:
    d_model: tuple[int, ...] = (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
    n_layers: tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 180, 192, 256)
    n_heads: tuple[int, ...] = (2, 4, 8, 16, 32)  # only those dividing d_model are used
    d_ff_mult: tuple[int, ...] = (2, 4)  # d_ff = d_model × each
    tolerance: float = 0.25  # keep architectures within ±tolerance of the budget

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_ff_mult"):
            values = getattr(self, name)
            _check(values and all(v >= 1 for v in values), f"grid.{name} must be positive integers")
        _check(0 < self.tolerance < 1, f"grid.tolerance must lie in (0, 1) but got {self.tolerance}")
        size = len(self.d_model) * len(self.n_layers) * len(self.n_heads) * len(self.d_ff_mult)
        _check(size <= MAX_GRID, f"the grid combines {size:,} architectures; at most {MAX_GRID:,}")


@dataclass(frozen=True)
class SearchSpec:
    n_trials: int = 50  # finished (complete + pruned) trials per study
    seed: int = 0
    n_startup_trials: int = 20  # random trials before TPE models the space
    forced_extremes: bool = True  # first trials: min/max d_model, n_layers, n_heads
    learning_rate: tuple[float, ...] = (1e-4, 1e-3)  # log-uniform
    weight_decay: tuple[float, ...] = (1e-4, 5e-3)  # log-uniform
    warmup_steps: tuple[int, ...] = (100, 500, 100)  # low, high, step (optimizer steps)
    epochs: tuple[int, ...] = (50, 75, 100)  # categorical
    dropout: tuple[float, ...] = (0.1, 0.3)  # uniform
    variation_dropout_delta: float = 0.08  # same architecture as the last trial and dropout
    variation_epochs_delta: int = 20  # and epochs this close: move dropout to the far end of
    variation_dropout: tuple[float, ...] = (0.12, 0.27)  # these two values
    pruner: str = "hyperband"  # none | median | hyperband
    max_failures: int = 5  # consecutive failed trials that stop a study
    final_seeds: int = 3  # when the search ends, retrain its best with this many more seeds (0: none)
    max_crashes: int = 3  # deaths of the daemon holding the job (kill -9, OOM, power) before it fails
    max_days: float = 7.0  # a study estimated at enqueue to run longer is refused unless --force
    transfer: bool = True  # budgets queued together form a ladder; each starts from the smaller ones' best
    transfer_trials: int = 3  # configurations carried from the smaller budgets (after the extremes)

    def __post_init__(self) -> None:
        _check(
            isinstance(self.max_days, int | float) and 0 < self.max_days < math.inf,
            f"search.max_days must be a positive number of days but got {shown(self.max_days)}",
        )
        _check(self.n_trials >= 1, f"search.n_trials must be >= 1 but got {self.n_trials}")
        _check(self.pruner in PRUNERS, f"search.pruner must be one of {PRUNERS} but got {shown(self.pruner)}")
        for name in ("learning_rate", "weight_decay", "dropout", "variation_dropout"):
            low, high = _pair(self, name)
            _check(0 <= low < high, f"search.{name} must be [low, high] with 0 <= low < high")
        _check(_pair(self, "learning_rate")[0] > 0, "search.learning_rate must be positive")
        _check(_pair(self, "weight_decay")[0] > 0, "search.weight_decay must be positive")
        _check(
            len(self.warmup_steps) == 3
            and 0 <= self.warmup_steps[0] <= self.warmup_steps[1]
            and self.warmup_steps[2] >= 1,
            f"search.warmup_steps must be [low, high, step] but got {list(self.warmup_steps)}",
        )
        _check(self.epochs and min(self.epochs) >= 1, "search.epochs must be positive integers")
        _check(self.max_failures >= 1, f"search.max_failures must be >= 1 but got {self.max_failures}")
        _check(0 <= self.final_seeds <= 100, f"search.final_seeds must lie in [0, 100] but got {self.final_seeds}")
        _check(0 <= self.seed < 2**32, f"search.seed must lie in [0, 2^32) but got {self.seed}")
        _check(self.n_startup_trials >= 0, f"search.n_startup_trials must be >= 0 but got {self.n_startup_trials}")
        _check(
            0 <= self.transfer_trials <= 64,
            f"search.transfer_trials must lie in [0, 64] but got {self.transfer_trials}",
        )
        _check(self.max_crashes >= 1, f"search.max_crashes must be >= 1 but got {self.max_crashes}")


@dataclass(frozen=True)
class TrainSpec:
    effective_batch: int = 256  # samples per optimizer step (micro-batch × accumulation)
    patience: int = 10  # epochs without a min_delta improvement before stopping
    min_delta: float = 0.001
    grad_clip: float = 1.0
    head_dropout: float = 0.0
    revin: bool = False
    device: str = "auto"  # auto | cpu | cuda | mps
    divergence_factor: float = 10.0  # val loss above this × a constant predictor's: diverged
    max_epochs: int | None = None  # cap on the sampled epochs (--max-epochs)

    def __post_init__(self) -> None:
        _check(self.effective_batch >= 1, f"train.effective_batch must be >= 1 but got {self.effective_batch}")
        _check(self.patience >= 1, f"train.patience must be >= 1 but got {self.patience}")
        _check(0 <= self.head_dropout < 1, f"train.head_dropout must lie in [0, 1) but got {self.head_dropout}")
        _check(self.effective_batch <= 2**20, f"train.effective_batch must be <= 2^20 but got {self.effective_batch}")
        _check(self.min_delta >= 0, f"train.min_delta cannot be negative but got {self.min_delta}")
        devices = ("auto", "cpu", "cuda", "mps")
        _check(self.device in devices, f"train.device {shown(self.device)} is not auto/cpu/cuda/mps")
        _check(self.max_epochs is None or self.max_epochs >= 1, f"max epochs must be >= 1 but got {self.max_epochs}")


@dataclass(frozen=True)
class GuardSpec:
    """When a trial pauses between optimizer steps, and when it may go on: each pause bound has
    a lower resume bound that readings must stay under for `hold_s` (no flapping)."""

    memory_margin: float = 0.10  # the memory limit is available RAM / free GPU memory less this
    memory_limit_gib: float | None = None  # a fixed limit instead (--memory-limit)
    memory_floor_gib: float = 1.0  # pause when available RAM falls below this
    memory_resume_gib: float = 2.0  # ... and resume only above this
    pressure_pause_pct: float = 20.0  # /proc/pressure/memory "some avg10"
    pressure_resume_pct: float = 5.0
    swap_in_pause_mib_s: float = 16.0
    swap_in_resume_mib_s: float = 1.0
    cpu_temp_c: float = 85.0  # pause at the sensor's own `high` mark, or at this without one
    gpu_temp_margin_c: float = 5.0  # pause this far below the GPU's slowdown temperature
    temp_resume_drop_c: float = 10.0  # resume this far below the pause temperature
    hold_s: float = 60.0  # readings stay under the resume bounds this long before resuming
    shrink_after_s: float = 120.0  # memory pressure this long into a pause: halve the micro-batch
    check_s: float = 1.0  # readings are taken at most this often between steps
    poll_s: float = 2.0  # and this often while paused

    def __post_init__(self) -> None:
        _check(0 <= self.memory_margin < 1, f"guard.memory_margin must lie in [0, 1) but got {self.memory_margin}")
        _check(
            self.memory_limit_gib is None or self.memory_limit_gib > 0,
            f"guard.memory_limit_gib must be positive but got {self.memory_limit_gib}",
        )
        for pause, resume in (
            ("memory_resume_gib", "memory_floor_gib"),
            ("pressure_pause_pct", "pressure_resume_pct"),
            ("swap_in_pause_mib_s", "swap_in_resume_mib_s"),
        ):
            _check(
                getattr(self, pause) >= getattr(self, resume),
                f"guard.{pause} must be at least guard.{resume} (hysteresis)",
            )
        for name in ("hold_s", "shrink_after_s", "check_s", "poll_s", "temp_resume_drop_c"):
            _check(getattr(self, name) >= 0, f"guard.{name} cannot be negative but got {getattr(self, name)}")


@dataclass(frozen=True)
class JobSpec:
    name: str = "architectural_search"
    data: DataSpec = field(default_factory=DataSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    guard: GuardSpec = field(default_factory=GuardSpec)
    on_event: str | None = None  # shell command run when the job ends or the guard pauses it (daemon's --on-event)
    text: str = ""  # the YAML this was read from, kept with the study

    def __post_init__(self) -> None:
        _check(
            isinstance(self.name, str) and SAFE_NAME.fullmatch(self.name) is not None,
            f"job name {shown(self.name)} must be letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it names the study and its files in the state directory)",
        )
        _check(
            self.on_event is None or (isinstance(self.on_event, str) and self.on_event.strip() != ""),
            f"on_event must be a shell command but got {shown(self.on_event)}",
        )

    def with_overrides(
        self,
        *,
        data: str | None = None,
        trials: int | None = None,
        max_epochs: int | None = None,
        memory_limit_gib: float | None = None,
        transfer: bool | None = None,
    ) -> JobSpec:
        """Apply command-line options on top of the job file."""
        job = self
        if memory_limit_gib is not None:
            job = dataclasses.replace(job, guard=dataclasses.replace(job.guard, memory_limit_gib=memory_limit_gib))
        if data is not None:
            job = dataclasses.replace(job, data=dataclasses.replace(job.data, path=data))
        if trials is not None:
            job = dataclasses.replace(job, search=dataclasses.replace(job.search, n_trials=trials))
        if max_epochs is not None:
            job = dataclasses.replace(job, train=dataclasses.replace(job.train, max_epochs=max_epochs))
        if transfer is not None:
            job = dataclasses.replace(job, search=dataclasses.replace(job.search, transfer=transfer))
        return job


_SECTIONS = {"data": DataSpec, "grid": GridSpec, "search": SearchSpec, "train": TrainSpec, "guard": GuardSpec}


def load_job(path: str | Path | None) -> JobSpec:
    """Read a job file (None: the built-in architectural search); errors name the file and key."""
    if path is None:
        return JobSpec()
    path = Path(path)
    regular_file(path, "job file", MAX_JOB_BYTES)
    try:
        text = path.read_text()
    except OSError as exc:
        raise HpodError(f"job file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise HpodError(f"job file {path}: not UTF-8 text") from None
    return parse_job(text, source=str(path), default_name=path.stem)


def reads_dates(date_format: str) -> bool:
    """Whether strptime takes the format: a date written by it can be read back by it."""
    try:
        dt.datetime.strptime(dt.datetime(2001, 12, 31).strftime(date_format), date_format)
    except ValueError:
        return False
    return True


def shown(value: object) -> str:
    """A value as a message quotes it: its repr, cut short (a job file's value may be megabytes)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    return short.repr(value)


class AliasRefused(yaml.YAMLError):
    pass


class NoAliasLoader(yaml.SafeLoader):
    """safe_load without aliases: `*name` expands an anchored value wherever it is used, so a
    few lines of YAML can grow into billions of values (a "billion laughs"); job files need none."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasRefused(f"a YAML alias (*{event.anchor[:40]}) at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def parse_job(text: str, *, source: str = "<job>", default_name: str = "job") -> JobSpec:
    """Build a JobSpec from YAML text."""
    try:
        raw = yaml.load(text, Loader=NoAliasLoader) or {}  # a SafeLoader: no object construction
    except AliasRefused as exc:
        raise HpodError(f"job file {source}: {exc}; aliases are not allowed in job files") from None
    except yaml.YAMLError as exc:
        raise HpodError(f"job file {source}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise HpodError(f"job file {source}: expected a mapping of sections at the top level")
    unknown = set(raw) - set(_SECTIONS) - {"name", "on_event"}
    if unknown:
        raise HpodError(f"job file {source}: unknown section {shown(sorted(map(str, unknown))[0])}")
    try:
        sections = {name: _build(cls, raw.get(name) or {}, name) for name, cls in _SECTIONS.items()}
    except HpodError as exc:
        raise HpodError(f"job file {source}: {exc}") from None
    try:
        return JobSpec(name=raw.get("name", default_name), on_event=raw.get("on_event"), text=text, **sections)
    except HpodError as exc:
        raise HpodError(f"job file {source}: {exc}") from None


def guard_overrides(spec: GuardSpec, pairs: tuple[str, ...]) -> GuardSpec:
    """Apply `KEY=VALUE` settings (the daemon's --guard options) on top of a job's guard."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise HpodError(f"--guard {shown(pair)} is not KEY=VALUE (e.g. cpu_temp_c=80)")
        try:
            values[key.strip()] = yaml.load(value, Loader=NoAliasLoader)
        except yaml.YAMLError:
            raise HpodError(f"--guard {shown(pair)}: {shown(value)} is not a value") from None
    checked = _build(GuardSpec, values, "guard")  # names and types, with one clear error
    return dataclasses.replace(spec, **{key: getattr(checked, key) for key in values})


MAX_LIST = 64  # entries of any list in a job file (a grid axis, features, epochs)
MAX_INT = 10**9  # any integer or number in a job file
MAX_TEXT = 4096  # characters of any string
MAX_GRID = 100_000  # architectures a grid's axes may combine to (each is sized at enqueue)
MAX_JOB_BYTES = 2**20  # a job file: every key at its longest lists fits many times over


def _build(cls: type, values: dict, section: str):
    if not isinstance(values, dict):
        raise HpodError(f"section {shown(section)} must be a mapping")
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        name = f"{section}.{sorted(map(str, unknown))[0]}"
        raise HpodError(f"unknown key {name if name.isprintable() else repr(name)}")
    kwargs = {key: _coerce(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Convert a YAML value to the field's type (YAML reads `1e-4` as a string)."""
    if isinstance(hint, types.UnionType):
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise HpodError(f"{where} must be a list but got {shown(value)}")
        if len(value) > MAX_LIST:
            raise HpodError(f"{where} has {len(value)} entries; at most {MAX_LIST}")
        return tuple(_coerce(item, typing.get_args(hint)[0], where) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise HpodError(f"{where} must be true or false but got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HpodError(f"{where} must be an integer but got {shown(value)}")
        if abs(value) > MAX_INT:  # the command line's limit too (cli.COUNT), and within SQLite's integers
            raise HpodError(f"{where} must lie within ±{MAX_INT:,} but got {shown(value)}")
        return value
    if hint is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise HpodError(f"{where} must be a number but got {shown(value)}") from None
        if not math.isfinite(number) or abs(number) > MAX_INT:
            raise HpodError(f"{where} must be a finite number within ±{MAX_INT:,} but got {shown(value)}")
        return number
    if not isinstance(value, str):
        raise HpodError(f"{where} must be a string but got {shown(value)}")
    if len(value) > MAX_TEXT:
        raise HpodError(f"{where} is {len(value):,} characters long; at most {MAX_TEXT:,}")
    return value


def _pair(spec, name: str) -> tuple[float, float]:
    values = getattr(spec, name)
    _check(len(values) == 2, f"{name} must be [low, high] but got {list(values)}")
    return values[0], values[1]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise HpodError(message)
