"""Trainer throughput: hpod's training step against the machine's dense matmul and HuggingFace's
PatchTSTForPrediction at equal architecture, in patch tokens/s and FLOP/s (equal work: HF's
PatchTST is channel-independent, so one of its samples is n_features sequences).

    python bench/throughput.py [--smoke]

Each (implementation, size) runs in a fresh process, so that its peak memory (VmHWM on CPU,
the allocator's peak on CUDA) is its own. FLOPs per token: 6 × encoder parameters (forward
and backward matmuls) + 12 × n_patches × d_model per layer (attention scores and values).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from hpod.job import DataSpec
from hpod.trial.data import load_dataset
from hpod.trial.device import pick_device
from hpod.trial.grid import Arch, count_parameters
from hpod.trial.memory import estimate, machine_limit
from hpod.trial.probe import PeakMeter, choose_micro_batch
from hpod.trial.train import TrainConfig, Trainer

SIZES = {"200K": Arch(64, 4, 4, 256), "2M": Arch(192, 4, 4, 768), "20M": Arch(512, 6, 8, 2048)}
EFFECTIVE_BATCH = 256
HF_BATCH = 64  # samples; × n_features channel sequences
STEPS, WARMUP = 4, 2


def encoder_flops_per_token(arch: Arch, n_patches: int) -> float:
    block = 4 * arch.d_model**2 + 2 * arch.d_model * arch.d_ff
    return arch.n_layers * (6 * block + 12 * n_patches * arch.d_model)


def matmul_flops(device: str, n: int = 2048, repeats: int = 8) -> float:
    """Dense matmul FLOP/s: fp32 on CPU, bf16 on CUDA."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(step, device: str, steps: int) -> float:
    for _ in range(WARMUP):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def run_hpod(size: str, device: str, steps: int, dropout: float) -> dict:
    data = load_dataset(DataSpec(), 5)
    arch = SIZES[size]
    params = count_parameters(arch, data.shape)
    model_config = arch.model_config(data.shape, dropout=dropout)
    config = TrainConfig(3e-4, 1e-3, 10, 1, effective_batch=EFFECTIVE_BATCH, device=device)
    limit = machine_limit(device, 0.1)
    # the choice by prediction alone: this run is the probe, and its peak is measured below
    choice = choose_micro_batch(arch, params, model_config, config, data, limit, probe=lambda *args: 0)
    config = TrainConfig(
        3e-4, 1e-3, 10, 1, effective_batch=EFFECTIVE_BATCH, micro_batch=choice.micro_batch, device=device
    )
    meter = PeakMeter(device)
    meter.reset()
    trainer = Trainer(model_config, config, data)
    batches = iter(data.splits["train"].split(EFFECTIVE_BATCH))

    def step() -> None:
        trainer.gradients(next(batches))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    seconds = timed_steps(step, device, steps)
    tokens = EFFECTIVE_BATCH * data.shape.n_patches
    return {
        "impl": "hpod" if dropout == 0 else f"hpod-d{dropout:g}",
        "size": size,
        "arch": arch.key,
        "params": params,
        "batch": f"{config.micro_batch}x{config.accumulation_steps}",
        "tokens_per_s": tokens / seconds,
        "flops": encoder_flops_per_token(arch, data.shape.n_patches) * tokens / seconds,
        "peak": meter.peak(),
        "predicted_peak": estimate(arch, params, data.shape, config.micro_batch, device).peak,
    }


def run_hf(size: str, device: str, steps: int) -> dict:
    from transformers import PatchTSTConfig, PatchTSTForPrediction

    data = load_dataset(DataSpec(), 5)
    arch, shape = SIZES[size], data.shape
    config = PatchTSTConfig(
        num_input_channels=shape.n_features,
        context_length=shape.context,
        patch_length=shape.patch_len,
        patch_stride=shape.stride,
        prediction_length=1,
        d_model=arch.d_model,
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        ffn_dim=arch.d_ff,
        pooling_type=None,
        head_dropout=0.0,
        dropout=0.0,
        do_mask_input=False,
        share_embedding=True,
    )
    meter = PeakMeter(device)
    meter.reset()
    torch.manual_seed(0)
    model = PatchTSTForPrediction(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=True)
    rows = iter(data.splits["train"].split(HF_BATCH))

    def step() -> None:
        chunk = next(rows)
        x = data.windows(chunk).to(device)
        target = torch.zeros(len(chunk), 1, shape.n_features, device=device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = model(past_values=x, future_values=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed_steps(step, device, steps)
    tokens = HF_BATCH * shape.n_features * shape.n_patches
    encoder = sum(p.numel() for p in model.model.encoder.layers.parameters())
    return {
        "impl": "hf",
        "size": size,
        "arch": arch.key,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": f"{HF_BATCH}x{shape.n_features}ch",
        "tokens_per_s": tokens / seconds,
        "flops": (6 * encoder + 12 * shape.n_patches * arch.d_model * arch.n_layers) * tokens / seconds,
        "peak": meter.peak(),
        "predicted_peak": None,
    }


IMPLS = {  # equal work at dropout 0; hpod also at the middle of the search's dropout range
    "hpod": lambda size, device, steps: run_hpod(size, device, steps, 0.0),
    "hf": run_hf,
    "hpod-d0.2": lambda size, device, steps: run_hpod(size, device, steps, 0.2),
}


def one(impl: str, size: str, device: str, steps: int) -> dict | None:
    """Run one case in a fresh process; None if it could not run (HF not installed)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", impl, size, device, str(steps)], capture_output=True, text=True
    )
    if out.returncode != 0:
        if "No module named 'transformers'" in out.stderr:
            return None
        raise RuntimeError(f"{impl} {size} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(smoke: bool) -> None:
    device = pick_device("auto")
    sizes = ["200K"] if smoke else list(SIZES)
    steps = 1 if smoke else STEPS
    peak = matmul_flops(device, n=512 if smoke else 2048)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"dense matmul ({'bf16' if device.startswith('cuda') else 'fp32'}): {peak / 1e9:.1f} GFLOP/s")
    header = f"{'size':>5} {'impl':>9} {'arch':>18} {'params':>11} {'batch':>9} {'tokens/s':>10} {'GFLOP/s':>8}"
    print(header + f" {'of matmul':>9} {'peak MiB':>9} {'predicted':>9}")
    for size in sizes:
        results = {impl: one(impl, size, device, steps) for impl in IMPLS}
        for r in filter(None, results.values()):
            predicted = "-" if r["predicted_peak"] is None else f"{r['predicted_peak'] / 2**20:.0f}"
            print(
                f"{size:>5} {r['impl']:>9} {r['arch']:>18} {r['params']:>11,} {r['batch']:>9} "
                f"{r['tokens_per_s']:>10,.0f} {r['flops'] / 1e9:>8.1f} {r['flops'] / peak:>9.0%} "
                f"{r['peak'] / 2**20:>9.0f} {predicted:>9}"
            )
        hpod, hf = results["hpod"], results["hf"]
        if hf is None:
            print(f"{size:>5} ratio: HF PatchTST not installed (pip install 'hpod[bench]')")
            continue
        print(
            f"{size:>5} ratio hpod/HF: tokens/s {hpod['tokens_per_s'] / hf['tokens_per_s']:.2f}x, "
            f"FLOP/s {hpod['flops'] / hf['flops']:.2f}x; hpod at {hpod['flops'] / peak:.0%} of matmul"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        impl_arg, size_arg, device_arg, steps_arg = sys.argv[2:6]
        print(json.dumps(IMPLS[impl_arg](size_arg, device_arg, int(steps_arg))))
    else:
        main(smoke="--smoke" in sys.argv)
