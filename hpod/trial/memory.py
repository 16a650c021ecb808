"""Peak training memory of an architecture, predicted before anything is allocated, and the
limit it must fit: the replaced system started a trial that needed 115 GB on a 64 GB machine.

The prediction counts what PyTorch keeps alive during a training step:
- fp32 weights, AdamW's two moments (12 bytes per parameter), the gradients (4), and the
  full-size temporary of foreach AdamW's denominator (4): 20 bytes per parameter at the
  optimizer step (30.1 GiB measured against 29.8 GiB predicted at 1.6B parameters on an H100);
- during forward and backward, the tensors each layer saves for its backward pass, per token:
  LayerNorm, attention and MLP inputs and outputs, 9·d_model + 2·d_ff values, dropout masks of
  one byte, and SDPA's log-sum-exp (its fused kernel keeps no attention matrix), plus the
  embedding's patches and the head's input;
- under bf16 autocast (CUDA), the bf16 copies of the weights and 2-byte activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpod.errors import HpodError
from hpod.job import GuardSpec
from hpod.trial.grid import Arch, GridEntry
from hpod.trial.model import DataShape

GIB = 2**30
OPTIMIZER_BYTES = 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq, per parameter
GRAD_BYTES = 4
FOREACH_TEMP_BYTES = 4  # foreach AdamW's sqrt(exp_avg_sq) temporary, one per parameter
# Backward holds, besides the saved activations, the gradients flowing through a layer, copies
# and the allocator's slack. CPU: fitted over the 34 architectures of jobs/tiny.yaml at
# micro-batches 32 and 256 (measured/counted growth: median 1.57, range 1.35-2.01; with 1.7,
# predicted peaks are 0.95-1.10 of measured ones). CUDA: fitted to the H100 peaks of
# bench/RESULTS.md (1.6M-1.6B parameters), where bf16 autocast and fused kernels keep less.
WORKSPACE_FACTOR = {"cpu": 1.7, "cuda": 0.7}
# A process's first training step pages in kernels and starts thread pools on CPU (85-88 MiB
# measured whatever the model); on CUDA, cuBLAS workspaces and allocator rounding.
RUNTIME_BYTES = {"cpu": 86 * 2**20, "cuda": 64 * 2**20}


def device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step's peak, in parts, so a refusal can name what does not fit."""

    state: int  # weights, gradients and AdamW moments: paid whatever the micro-batch
    optimizer_temp: int  # foreach AdamW's temporary, alive only during the optimizer step
    activations: int  # saved for backward, grows with the micro-batch
    cast_weights: int  # bf16 weight copies under autocast
    runtime: int  # the process's own first-step cost, whatever the model

    @property
    def peak(self) -> int:
        """Forward/backward and the optimizer step do not overlap; the larger one is the peak."""
        return self.runtime + self.state + max(self.activations + self.cast_weights, self.optimizer_temp)


def activation_bytes(arch: Arch, shape: DataShape, micro_batch: int, device: str) -> int:
    """What forward saves for backward, times the workspace backward adds."""
    value_bytes = 2 if device.startswith("cuda") else 4
    d, f, h, t = arch.d_model, arch.d_ff, arch.n_heads, shape.n_patches
    per_layer = t * (9 * d + 2 * f) * value_bytes + t * 2 * d + h * t * 4  # values, masks, SDPA's logsumexp
    patches = t * shape.patch_len * shape.n_features * 4
    embed_and_head = patches + shape.context * shape.n_features * 4 + 3 * t * d * value_bytes
    per_sample = arch.n_layers * per_layer + embed_and_head
    return math.ceil(WORKSPACE_FACTOR[device_kind(device)] * micro_batch * per_sample)


def estimate(arch: Arch, params: int, shape: DataShape, micro_batch: int, device: str) -> MemoryEstimate:
    cuda = device.startswith("cuda")
    return MemoryEstimate(
        state=params * (OPTIMIZER_BYTES + GRAD_BYTES),
        optimizer_temp=params * FOREACH_TEMP_BYTES,
        activations=activation_bytes(arch, shape, micro_batch, device),
        cast_weights=params * 2 if cuda else 0,
        runtime=RUNTIME_BYTES[device_kind(device)],
    )


@dataclass(frozen=True)
class Limit:
    """The most a trial's training may add to the machine's memory, and where that came from."""

    bytes: int
    source: str  # for messages: "22.8 GiB available less the 10% margin", "--memory-limit 16 GiB"


def machine_limit(device: str, margin: float) -> Limit:
    """Available RAM (CPU) or free GPU memory, less the margin."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        what = "free on the GPU"
    else:
        import psutil

        free, what = psutil.virtual_memory().available, "available"
    return Limit(int(free * (1 - margin)), f"{free / GIB:.1f} GiB {what} less the {margin:.0%} margin")


def job_limit(spec: GuardSpec, device: str, share: float = 1.0) -> Limit:
    """The job's fixed limit (--memory-limit), else the machine's now; a worker that shares the
    device with others (`hpod daemon --workers`) gets its `share` of it."""
    if spec.memory_limit_gib is not None:
        limit = Limit(int(spec.memory_limit_gib * GIB), f"--memory-limit {spec.memory_limit_gib:g} GiB")
    else:
        limit = machine_limit(device, spec.memory_margin)
    if share >= 1.0:
        return limit
    return Limit(int(limit.bytes * share), f"{share:.0%} of {limit.source}, shared with other workers")


def fits(entry: GridEntry, shape: DataShape, micro_batch: int, device: str, limit: Limit) -> bool:
    return estimate(entry.arch, entry.params, shape, micro_batch, device).peak <= limit.bytes


def feasible(
    grid: list[GridEntry], shape: DataShape, device: str, limit: Limit
) -> tuple[list[GridEntry], list[GridEntry]]:
    """(architectures that train at micro-batch 1 within the limit, those that cannot)."""
    kept = [e for e in grid if fits(e, shape, 1, device, limit)]
    dropped = [e for e in grid if e not in kept]
    return kept, dropped


def require_feasible(
    grid: list[GridEntry], shape: DataShape, device: str, limit: Limit, budget_text: str
) -> list[GridEntry]:
    """The architectures that fit; an error with the numbers when none does."""
    kept, _ = feasible(grid, shape, device, limit)
    if kept:
        return kept
    smallest = min(grid, key=lambda e: e.params)
    need = estimate(smallest.arch, smallest.params, shape, 1, device)
    raise HpodError(
        f"budget {budget_text}: the smallest architecture ({smallest.params / 1e9:.2f}B params) needs "
        f"{need.state / GIB:.1f} GiB for weights, gradients and AdamW state before activations "
        f"({need.peak / GIB:.1f} GiB at its peak); the limit is {limit.bytes / GIB:.1f} GiB ({limit.source}); "
        "use --force to queue it for a bigger machine sharing the storage"
    )
