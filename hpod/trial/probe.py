"""The micro-batch a trial trains with: the largest power of two whose predicted peak fits the
memory limit, confirmed by a short probe of real training steps and halved on OOM, with
accumulation doubled so the effective batch (and so the gradient) stays the same. Choices are
cached per (architecture, device, data shape) in the state directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hpod.keyed_file import KeyedFile
from hpod.trial.data import Dataset
from hpod.trial.grid import Arch
from hpod.trial.memory import GIB, Limit, estimate
from hpod.trial.model import ModelConfig, PatchTST
from hpod.trial.train import OUT_OF_MEMORY, MemoryFailed, TrainConfig, accumulate_gradients, make_optimizer

log = logging.getLogger(__name__)
PROBE_STEPS = 2  # the first step allocates AdamW's moments; the second is a steady one


def powers_of_two(effective_batch: int) -> list[int]:
    """Candidate micro-batches, largest first: effective batch's powers of two down to 1."""
    top = 1 << (effective_batch.bit_length() - 1)
    return [top >> i for i in range(top.bit_length())]


class PeakMeter:
    """The peak memory a block of code adds: CUDA's allocator peak, or on CPU the process's
    resident high-water mark (VmHWM), which Linux resets when 5 is written to clear_refs."""

    def __init__(self, device: str):
        self.device = device
        self.base = 0

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return _status_kib("VmHWM") * 1024 - self.base


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def can_measure(device: str) -> bool:
    return device.startswith("cuda") or Path("/proc/self/clear_refs").exists()


def train_steps(model_config: ModelConfig, config: TrainConfig, dataset: Dataset, micro_batch: int, steps: int):
    """Build the model and optimizer and train `steps` steps of one micro-batch each on real
    training rows; yields each step's seconds as (forward and backward, optimizer step), which a
    trial pays per micro-batch and per effective batch. Everything is freed when the generator
    closes."""
    model = PatchTST(model_config).to(config.device)
    optimizer = make_optimizer(model, config)
    rows = dataset.splits["train"][:micro_batch]
    try:
        for _ in range(steps):
            start = time.perf_counter()
            accumulate_gradients(model, dataset, rows, config, micro_batch)
            _synchronize(config.device)
            middle = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _synchronize(config.device)
            yield middle - start, time.perf_counter() - middle
    finally:
        del model, optimizer
        if config.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def probe_steps(model_config: ModelConfig, config: TrainConfig, dataset: Dataset, micro_batch: int) -> int:
    """Peak memory added by building the model and optimizer and training PROBE_STEPS steps of
    one micro-batch each on real training rows; everything is freed before it returns."""
    meter = PeakMeter(config.device)
    meter.reset()
    with contextlib.closing(train_steps(model_config, config, dataset, micro_batch, PROBE_STEPS)) as steps:
        for _ in steps:
            pass
        return meter.peak()


Probe = Callable[[ModelConfig, TrainConfig, Dataset, int], int]


def predicted_peaks(arch: Arch, params: int, shape, effective_batch: int, device: str) -> dict[int, int]:
    """The memory model's peak for each candidate micro-batch, largest first."""
    return {m: estimate(arch, params, shape, m, device).peak for m in powers_of_two(effective_batch)}


def fitting_micro_batches(predicted: dict[int, int], limit: Limit) -> list[int]:
    """The candidates predicted to fit the limit, largest first."""
    return [m for m, peak in predicted.items() if peak <= limit.bytes]


@dataclass(frozen=True)
class Choice:
    micro_batch: int
    predicted: int  # bytes
    measured: int | None  # bytes; None when the probe could not measure (no /proc)
    backoffs: int  # halvings after an OOM or a measured peak over the limit

    def describe(self) -> str:
        measured = "n/a" if self.measured is None else f"{self.measured / GIB:.2f}"
        return f"micro-batch {self.micro_batch}: predicted {self.predicted / GIB:.2f} GiB, measured {measured} GiB"


def choose_micro_batch(
    arch: Arch,
    params: int,
    model_config: ModelConfig,
    config: TrainConfig,
    dataset: Dataset,
    limit: Limit,
    probe: Probe = probe_steps,
) -> Choice:
    """The largest candidate predicted to fit, then probed: an OOM or a measured peak over the
    limit halves it. Raises MemoryFailed when even micro-batch 1 does not fit."""
    shape, device = dataset.shape, config.device
    predicted = predicted_peaks(arch, params, shape, config.effective_batch, device)
    fitting = fitting_micro_batches(predicted, limit)
    if not fitting:
        raise MemoryFailed(
            f"{arch.key} needs {predicted[1] / GIB:.2f} GiB at micro-batch 1; the limit is "
            f"{limit.bytes / GIB:.2f} GiB ({limit.source})"
        )
    backoffs = 0
    for micro_batch in fitting:
        try:
            measured = probe(model_config, config, dataset, micro_batch) if can_measure(device) else None
        except OUT_OF_MEMORY as exc:
            log.warning("%s: out of memory at micro-batch %d (%s); halving", arch.key, micro_batch, exc)
            backoffs += 1
            continue
        if measured is not None and measured > limit.bytes:
            log.warning("%s: micro-batch %d took %.2f GiB; halving", arch.key, micro_batch, measured / GIB)
            backoffs += 1
            continue
        return Choice(micro_batch, predicted[micro_batch], measured, backoffs)
    raise MemoryFailed(f"{arch.key} ran out of memory even at micro-batch {fitting[-1]} ({limit.source})")


class ChoiceCache(KeyedFile):
    """Micro-batch choices by (architecture, device, data shape, batch)."""

    @staticmethod
    def key(arch: Arch, device: str, config: ModelConfig, effective_batch: int) -> str:
        s = config.shape
        return f"{arch.key}|{device}|c{s.context}x{s.n_features}-p{s.patch_len}s{s.stride}|b{effective_batch}"

    def get(self, key: str) -> Choice | None:
        entry = self.read().get(key)
        return None if entry is None else Choice(**entry)

    def put(self, key: str, choice: Choice) -> None:
        super().put(key, asdict(choice))


@dataclass(frozen=True)
class StepSeconds:
    compute: float  # forward and backward of one micro-batch
    update: float  # the optimizer step, once per effective batch


def time_micro_step(
    model_config: ModelConfig, config: TrainConfig, dataset: Dataset, micro_batch: int, repeats: int = 2
) -> StepSeconds:
    """One training step of one micro-batch on real rows: the medians of `repeats` after a
    warm-up step (the first allocates AdamW's moments and warms the kernels)."""
    times = list(train_steps(model_config, config, dataset, micro_batch, repeats + 1))[1:]
    return StepSeconds(statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))


def measure(job_file: str | None, horizon: int, key: str, micro_batch: int, device: str = "cpu") -> dict:
    """Predicted and measured peak of PROBE_STEPS steps of one architecture: for the memory
    model's test and benchmark, run in a fresh process (`python -m hpod.trial.probe`) so that the
    process's first-step cost is counted as a trial's worker pays it."""
    from hpod.job import load_job
    from hpod.trial.data import load_dataset
    from hpod.trial.grid import count_parameters

    job = load_job(job_file)
    dataset = load_dataset(job.data, horizon)
    arch = Arch.from_key(key)
    params = count_parameters(arch, dataset.shape)
    config = TrainConfig(1e-3, 1e-3, 10, 1, effective_batch=micro_batch, micro_batch=micro_batch, device=device)
    measured = probe_steps(arch.model_config(dataset.shape), config, dataset, micro_batch)
    predicted = estimate(arch, params, dataset.shape, micro_batch, device)
    return (
        {"arch": key, "params": params, "micro_batch": micro_batch, "measured": measured}
        | asdict(predicted)
        | {"predicted": predicted.peak}
    )


if __name__ == "__main__":
    import sys

    job_arg, horizon_arg, key_arg, micro_arg, *device_arg = sys.argv[1:]
    result = measure(None if job_arg == "-" else job_arg, int(horizon_arg), key_arg, int(micro_arg), *device_arg)
    print(json.dumps(result))
