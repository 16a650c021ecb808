"""`hpod import`: prior trials into a job's study with `add_trials`, all or nothing.

Reads hpod's JSON export, the replaced system's one-trial-per-file JSON, and hpod log files
(the trial log line). Where a historical value lies outside the job's range the range is
widened (kept in the study's `widened` user attr, which the objective samples from); trials
whose architecture is excluded or not in the grid (a categorical cannot be widened) are skipped
with a reason; a trial already imported is not imported again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpod.errors import HpodError
from hpod.records import (
    ACCUMULATION_STEPS,
    ARCH_FIELDS,
    BEST_EPOCH,
    BEST_VAL_LOSS,
    COLUMNS,
    EPOCHS_RUN,
    FAIL_REASON,
    IMPORT_KEY,
    IMPORTED_FROM,
    IMPORTED_PARAM_COUNT,
    LEARNING_CURVE,
    MEMORY_FAILED,
    MICRO_BATCH,
    ORIGINAL_NUMBER,
    PARAMS,
    VAL_AUC,
    WIDENED,
)
from hpod.state import regular_file
from hpod.study.plan import StudyPlan, distributions
from hpod.trial.grid import Arch

SEARCH_PARAMS = ("arch", *PARAMS)
MAX_IMPORT_BYTES = 64 * 2**20  # trial records: a million trials fit; /dev/zero does not
# Export columns kept as user attrs; pauses, paused_s and duration_s describe another run's machine.
EXPORT_ATTRS = (*ARCH_FIELDS, MICRO_BATCH, ACCUMULATION_STEPS, EPOCHS_RUN, BEST_EPOCH, VAL_AUC, FAIL_REASON)
LEGACY_USER_PARAMS = ("batch_size",)  # sampled by the replaced system, not searched by hpod
STATES = {s.name: s for s in TrialState}
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_LOG_LINE = re.compile(r"^(?:\S+ )?Trial (\d+): (.*)$")  # after the time it was written, since logs carry one


@dataclass
class Candidate:
    source: str  # file and trial, for messages
    state: TrialState
    value: float | None
    params: dict
    user_attrs: dict = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity for idempotence: the same trial from the same kind of record imports once."""
        payload = json.dumps([self.state.name, self.value, self.params, self.user_attrs.get(ORIGINAL_NUMBER)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Outcome:
    added: Counter = field(default_factory=Counter)  # by state
    skipped: Counter = field(default_factory=Counter)  # by reason
    widened: dict[str, tuple] = field(default_factory=dict)


def read_candidates(path: Path) -> list[Candidate]:
    """Every trial in a file, in any of the three formats; errors name the file and the trial."""
    regular_file(path, "import file", MAX_IMPORT_BYTES)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HpodError(f"import file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise HpodError(f"import file {path}: not UTF-8 text (byte {exc.start:,})") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HpodError(f"import file {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise HpodError(f"import file {path}: JSON nested too deeply to be trial records") from None
        records = records if isinstance(records, list) else [records]
        return [from_json(record, f"{path}[{i}]") for i, record in enumerate(records)]
    matches = [match for line in text.splitlines() if (match := _LOG_LINE.search(line))]
    if not matches:
        raise HpodError(f"import file {path}: neither JSON nor hpod log lines")
    return [from_log_line(match, f"{path}:Trial {match.group(1)}") for match in matches]


def from_json(record: dict, source: str) -> Candidate:
    if not isinstance(record, dict):
        raise HpodError(f"{source}: expected a trial object")
    if "trial_number" in record:
        return from_legacy(record, source)
    if isinstance(record.get("params"), dict):
        return from_optuna(record, source)
    unknown = set(record) - set(COLUMNS)
    if unknown:
        raise HpodError(
            f"{source}: unknown field {sorted(unknown)[0]!r} (neither an hpod export column nor a trial file)"
        )
    params = {name: record.get(name) for name in SEARCH_PARAMS if record.get(name) is not None}
    attrs = {k: record[k] for k in EXPORT_ATTRS if record.get(k) is not None}
    attrs |= {ORIGINAL_NUMBER: record.get("number")}
    return Candidate(source, parse_state(record.get("state"), source), record.get("val_loss"), params, attrs)


def from_optuna(record: dict, source: str) -> Candidate:
    """Optuna's own trial record (`number`, `state`, `value`, `params`, `user_attrs`), as a study's
    trials are commonly dumped; params use hpod's names, the architecture as `arch`."""
    unknown = set(record["params"]) - set(SEARCH_PARAMS)
    if unknown:
        raise HpodError(f"{source}: unknown parameter {sorted(unknown)[0]!r}")
    user_attrs = mapping(record, "user_attrs", source)
    attrs = {k: user_attrs[k] for k in EXPORT_ATTRS if user_attrs.get(k) is not None}
    attrs |= {ORIGINAL_NUMBER: record.get("number")}
    value = record.get("value")
    return Candidate(source, parse_state(record.get("state"), source), value, dict(record["params"]), attrs)


def from_legacy(record: dict, source: str) -> Candidate:
    """The replaced system's trials/trial_NNNN.json (architecture beside params or in user_attrs)."""
    user_attrs = mapping(record, "user_attrs", source)
    arch = record.get("architecture") or user_attrs.pop("architecture", None)
    if not isinstance(arch, dict):
        raise HpodError(f"{source}: no architecture (neither 'architecture' nor 'user_attrs.architecture')")
    raw = mapping(record, "params", source)
    unknown = set(raw) - set(PARAMS) - set(LEGACY_USER_PARAMS)
    if unknown:
        raise HpodError(f"{source}: unknown parameter {sorted(unknown)[0]!r}")
    params = {"arch": arch_key(arch, source)} | {k: v for k, v in raw.items() if k in PARAMS}
    attrs = user_attrs | {k: raw[k] for k in LEGACY_USER_PARAMS if k in raw}
    attrs |= {ORIGINAL_NUMBER: record["trial_number"], IMPORTED_PARAM_COUNT: arch.get("param_count")}
    try:
        curve = user_attrs.get(LEARNING_CURVE) or []
        intermediate = {int(e["epoch"]): float(e["val_loss"]) for e in curve if e.get("val_loss") is not None}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise HpodError(f"{source}: learning_curve entries need an integer epoch and a numeric val_loss") from None
    return Candidate(source, parse_state(record.get("state"), source), record.get("value"), params, attrs, intermediate)


def from_log_line(match: re.Match, source: str) -> Candidate:
    body, _, reason = match.group(2).partition(", reason=")
    reason = reason.partition(" (traceback: ")[0]  # a file on the machine that ran it
    parts = [part.split("=", 1) for part in body.split(", ")]
    if any(len(part) != 2 for part in parts):
        raise HpodError(f"{source}: not a trial log line (expected name=value fields)")
    fields = dict(parts)
    try:
        arch = {name: int(fields[name]) for name in ARCH_FIELDS[:4]}
        micro, accumulation = fields["batch"].split("x") if fields["batch"] != "?" else (None, None)
        run, planned = fields["epochs"].split("/")
        params = {
            "arch": Arch(**arch).key,
            "learning_rate": float(fields["learning_rate"]),
            "weight_decay": float(fields["weight_decay"]),
            "warmup_steps": int(fields["warmup_steps"]),
            "dropout": float(fields["dropout"]),
            "epochs": int(planned),
        }
        value = float(fields["val_loss"])
    except (KeyError, ValueError) as exc:
        raise HpodError(f"{source}: not a complete trial log line ({exc})") from None
    attrs = {EPOCHS_RUN: int(run)}
    if micro is not None:  # `batch=?`: the trial failed before its micro-batch was chosen
        attrs |= {MICRO_BATCH: int(micro), ACCUMULATION_STEPS: int(accumulation)}
    attrs |= {ORIGINAL_NUMBER: int(match.group(1))} | ({"fail_reason": reason} if reason else {})
    state = parse_state(fields.get("state"), source)
    return Candidate(source, state, None if state == TrialState.FAIL else value, params, attrs)


def mapping(record: dict, key: str, source: str) -> dict:
    """A field that must be an object (absent or null: empty)."""
    value = record.get(key) or {}
    if not isinstance(value, dict):
        raise HpodError(f"{source}: {key} must be an object, not {type(value).__name__}")
    return dict(value)


def arch_key(arch: dict, source: str) -> str:
    try:
        return Arch(*(int(arch[name]) for name in ARCH_FIELDS[:4])).key
    except (KeyError, TypeError, ValueError):
        raise HpodError(f"{source}: architecture needs d_model, n_layers, n_heads and d_ff") from None


def parse_state(state, source: str) -> TrialState:
    if not isinstance(state, str) or state not in STATES:
        raise HpodError(f"{source}: state {state!r} is not one of {', '.join(STATES)}")
    return STATES[state]


# What each parameter can be at all; a value outside is refused, never widened into the search.
DOMAINS = {
    "learning_rate": ("a positive number", lambda v: v > 0),
    "weight_decay": ("a positive number", lambda v: v > 0),  # sampled log-uniformly
    # whole numbers up to a bound that floats hold exactly: Optuna checks an int's step in floats
    "warmup_steps": ("a whole number of steps from 0 to 1e9", lambda v: float(v).is_integer() and 0 <= v <= 10**9),
    "epochs": ("a whole number of epochs from 1 to 1e6", lambda v: float(v).is_integer() and 1 <= v <= 10**6),
    "dropout": ("a probability in [0, 1)", lambda v: 0 <= v < 1),
}


INTEGER_PARAMS = ("warmup_steps", "epochs")


def check(candidate: Candidate) -> None:
    """Refuse what no widening can fix: non-finite numbers, values outside a parameter's domain
    (a dropout of 1.5 widened the range and failed the trials sampled from it), a finished trial
    without a value."""
    arch = candidate.params.get("arch")
    if not isinstance(arch, str):
        raise HpodError(f"{candidate.source}: arch is {arch!r}, not an architecture key such as d64-L2-h2-f128")
    try:
        Arch.from_key(arch)
    except HpodError as exc:
        raise HpodError(f"{candidate.source}: {exc}") from None
    value = candidate.value
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise HpodError(f"{candidate.source}: the value {value!r} is not a number")
    for name, value in candidate.params.items():
        if name == "arch":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise HpodError(f"{candidate.source}: parameter {name} is {value!r}, not a finite number")
        what, valid = DOMAINS.get(name, ("", lambda v: True))
        if not valid(value):
            raise HpodError(f"{candidate.source}: parameter {name} is {value!r}; it must be {what}")
        if name in INTEGER_PARAMS:
            candidate.params[name] = int(value)  # JSON writes 200 as 200.0 at times
    value = candidate.value
    if candidate.state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
        raise HpodError(f"{candidate.source}: a COMPLETE trial needs a finite value, not {value!r}")


def covers(dist: BaseDistribution, value) -> bool:
    if isinstance(dist, IntDistribution):
        return dist.low <= value <= dist.high and (value - dist.low) % dist.step == 0
    if isinstance(dist, FloatDistribution):
        return dist.low <= value <= dist.high
    return value in dist.choices


def widen(dist: BaseDistribution, value) -> BaseDistribution:
    """The distribution grown to cover `value` (int steps shrink to stay aligned)."""
    if isinstance(dist, IntDistribution):
        low, high = min(dist.low, value), max(dist.high, value)
        step = math.gcd(dist.step, value - low, dist.high - low) if not dist.log else 1
        return IntDistribution(low, high, log=dist.log, step=step)
    if isinstance(dist, FloatDistribution):
        return FloatDistribution(min(dist.low, value), max(dist.high, value), log=dist.log, step=dist.step)
    return dist


def load_candidates(paths: list[Path]) -> list[Candidate]:
    """Every trial of every file, each checked: a bad one refuses the import before anything is
    opened or written."""
    candidates = [c for path in paths for c in read_candidates(path)]
    for candidate in candidates:
        check(candidate)
    return candidates


def import_trials(study: optuna.Study, plan: StudyPlan, candidates: list[Candidate], exclude: set[str]) -> Outcome:
    """Add the importable candidates in one call; the rest are counted with the reason."""
    space = distributions(plan.job.search, [e.arch.key for e in plan.grid], study.user_attrs.get(WIDENED))
    excluded = exclude | set(study.user_attrs.get(MEMORY_FAILED, []))
    present = study.get_trials(deepcopy=False)
    seen = {t.user_attrs.get(IMPORT_KEY) for t in present}
    outcome, chosen = Outcome(), []
    for candidate in candidates:
        reason = skip_reason(candidate, space, excluded, seen) or already_present(candidate, present)
        if reason is not None:
            outcome.skipped[reason] += 1
            continue
        seen.add(candidate.key)
        for name, value in candidate.params.items():
            if not covers(space[name], value):
                space[name] = widen(space[name], value)
                outcome.widened[name] = space[name]
        chosen.append(candidate)
    trials = [to_trial(c, space, plan) for c in chosen]
    if outcome.widened:
        widened = study.user_attrs.get(WIDENED, {}) | {n: vars(d) for n, d in outcome.widened.items()}
        study.set_user_attr(WIDENED, widened)
    study.add_trials(trials)
    outcome.added.update(c.state.name for c in chosen)
    return outcome


def skip_reason(candidate: Candidate, space: dict, excluded: set[str], seen: set) -> str | None:
    arch = candidate.params["arch"]
    if candidate.state not in FINISHED_STATES:
        return f"{candidate.state.name.lower()} trials are not imported (only finished ones)"
    if candidate.key in seen:
        return "already imported"
    if arch in excluded:
        return f"architecture {arch} is excluded"
    if arch not in space["arch"].choices:
        return f"architecture {arch} is not in the job's grid"
    epochs = candidate.params.get("epochs")
    if epochs is not None and epochs not in space["epochs"].choices:
        return f"epochs {epochs} is not among the job's choices {list(space['epochs'].choices)}"
    return None


def already_present(candidate: Candidate, trials: list[optuna.trial.FrozenTrial]) -> str | None:
    """A trial of the study itself, come back through its own export or log: the same state,
    value and parameters at the precision of a log line."""
    mine = fingerprint(candidate.params, candidate.state, candidate.value)
    if any(fingerprint({k: t.params.get(k) for k in candidate.params}, t.state, t.value) == mine for t in trials):
        return "already in the study (its own export or log)"
    return None


def fingerprint(params: dict, state: TrialState, value: float | None) -> tuple:
    shown = {k: f"{v:.1e}" if k in ("learning_rate", "weight_decay") else f"{v:.2f}" if k == "dropout" else v
             for k, v in params.items() if v is not None}  # fmt: skip
    return state.name, None if value is None else f"{value:.4f}", tuple(sorted(shown.items()))


def to_trial(candidate: Candidate, space: dict, plan: StudyPlan) -> optuna.trial.FrozenTrial:
    arch = Arch.from_key(candidate.params["arch"])
    counts = {e.arch.key: e.params for e in plan.grid}
    attrs = candidate.user_attrs | {k: getattr(arch, k) for k in ARCH_FIELDS[:4]}
    attrs |= {"param_count": counts[arch.key], IMPORT_KEY: candidate.key, IMPORTED_FROM: candidate.source}
    if candidate.value is not None:
        attrs[BEST_VAL_LOSS] = candidate.value
    return optuna.trial.create_trial(
        state=candidate.state,
        value=candidate.value if candidate.state == TrialState.COMPLETE else None,
        params=candidate.params,
        distributions={name: space[name] for name in candidate.params},
        user_attrs={k: v for k, v in attrs.items() if v is not None},
        intermediate_values=candidate.intermediate,
    )


def summary(outcome: Outcome) -> list[str]:
    """What the import did, one line per fact."""
    added = ", ".join(f"{n} {s.lower()}" for s, n in sorted(outcome.added.items())) or "none"
    lines = [f"imported {sum(outcome.added.values())} trials ({added})"]
    lines += [f"skipped {n}: {reason}" for reason, n in sorted(outcome.skipped.items())]
    for name, dist in outcome.widened.items():
        step = f" step {dist.step}" if getattr(dist, "step", None) else ""
        lines.append(f"widened {name} to [{dist.low:g}, {dist.high:g}]{step} to cover imported values")
    return lines
