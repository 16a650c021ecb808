"""The CUDA path, once, on a machine that has a GPU: model, bf16 autocast, checkpoint and
resume, and a micro-batch probe that measures memory (torch.cuda.max_memory_allocated and
torch.cuda.mem_get_info) beside the fixed memory_score rule hpod uses today.

    python bench/cuda_path.py [OUT_FILE]

Prints one line per measurement; needs torch, numpy, pandas and pyyaml (not Optuna).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpod.job import DataSpec
from hpod.trial.data import load_dataset
from hpod.trial.grid import Arch, count_parameters
from hpod.trial.memory import estimate
from hpod.trial.train import Interrupted, TrainConfig, Trainer, accumulate_gradients

ARCHS = (Arch(128, 8, 4, 512), Arch(512, 6, 8, 2048), Arch(1024, 16, 16, 4096), Arch(2048, 32, 16, 8192))
STEPS = 8


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def probe(arch: Arch, data, micro: int) -> str:
    """Time STEPS optimizer steps of effective batch 256 at this micro-batch; report peak memory."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free_before = torch.cuda.mem_get_info()[0]
    config = TrainConfig(3e-4, 1e-3, 10, 1, effective_batch=256, micro_batch=micro, device="cuda")
    trainer = Trainer(arch.model_config(data.shape), config, data)
    batches = data.splits["train"][: 256 * (STEPS + 2)].split(256)
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up steps
            torch.cuda.synchronize()
            start = time.perf_counter()
        accumulate_gradients(trainer.model, data, batch, config, micro)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = STEPS * 256 * data.shape.n_patches
    params = count_parameters(arch, data.shape)
    flops = 6 * params * tokens / seconds
    peak, free_after = torch.cuda.max_memory_allocated(), torch.cuda.mem_get_info()[0]
    predicted = estimate(arch, params, data.shape, micro, "cuda").peak
    del trainer
    return (
        f"{arch.key:>22} {params / 1e6:8.1f}M micro {micro:3d}x{config.accumulation_steps}: "
        f"{tokens / seconds:12,.0f} tokens/s {flops / 1e12:7.2f} TFLOP/s (6N) "
        f"peak {gib(peak)} predicted {gib(predicted)} free {gib(free_before)} -> {gib(free_after)}"
    )


def resume_check(data) -> str:
    """Stop mid-epoch on CUDA, resume from the checkpoint, compare with an unstopped run."""
    arch = ARCHS[0]
    config = TrainConfig(3e-4, 1e-3, 10, 2, device="cuda", seed=3)
    straight = Trainer(arch.model_config(data.shape, dropout=0.0), config, data).fit()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial.pt"

        def stop(epoch: int, step: int) -> None:
            if (epoch, step) == (0, 20):
                raise Interrupted("check")

        with contextlib.suppress(Interrupted):
            Trainer(arch.model_config(data.shape, dropout=0.0), config, data, checkpoint=path).fit(after_step=stop)
        resumed = Trainer(arch.model_config(data.shape, dropout=0.0), config, data, checkpoint=path)
        result = resumed.fit()
    a, b = [r.val_loss for r in straight.history], [r.val_loss for r in result.history]
    diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
    return f"resume from {resumed.resumed_from}: straight {a} resumed {b} max diff {diff:.2e}"


def main() -> None:
    lines = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    free, total = torch.cuda.mem_get_info()
    say(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, free {gib(free)} of {gib(total)}")
    data = load_dataset(DataSpec(), 5)
    for arch in ARCHS:
        for micro in (32, 64, 128, 256):
            try:
                say(probe(arch, data, micro))
            except torch.OutOfMemoryError:
                say(f"{arch.key} micro {micro}: out of memory")
                torch.cuda.empty_cache()
    say(resume_check(data))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
