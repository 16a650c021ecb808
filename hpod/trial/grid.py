"""The architecture grid of a budget, with parameter counts that are exact, not estimated.

`count_parameters` is the closed form of `PatchTST`'s `sum(p.numel())`; `verify` builds each
architecture on torch's meta device (no memory) to prove the two agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from hpod.errors import HpodError
from hpod.job import GridSpec
from hpod.trial.model import DataShape, ModelConfig, PatchTST

_KEY = re.compile(r"^d(\d+)-L(\d+)-h(\d+)-f(\d+)$")


@dataclass(frozen=True)
class Arch:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    @property
    def key(self) -> str:
        """Stable identity of the architecture, independent of any grid's order."""
        return f"d{self.d_model}-L{self.n_layers}-h{self.n_heads}-f{self.d_ff}"

    @classmethod
    def from_key(cls, key: str) -> Arch:
        match = _KEY.match(key)
        if match is None:
            raise HpodError(f"architecture key {key!r} is not of the form d512-L8-h8-f2048")
        return cls(*(int(g) for g in match.groups()))

    def model_config(self, shape: DataShape, **kwargs) -> ModelConfig:
        return ModelConfig(shape, self.d_model, self.n_layers, self.n_heads, self.d_ff, **kwargs)


@dataclass(frozen=True)
class GridEntry:
    arch: Arch
    params: int


def count_parameters(arch: Arch, shape: DataShape) -> int:
    """Exact parameter count of PatchTST(arch) on data of this shape."""
    d, f, n = arch.d_model, arch.d_ff, shape.n_patches
    embed = shape.patch_len * shape.n_features * d + d + n * d  # projection, bias, positions
    block = 4 * d * d + 2 * d * f + 9 * d + f  # qkv + proj, MLP, two LayerNorms, biases
    head = 2 * d + n * d * shape.n_outputs + shape.n_outputs  # final LayerNorm, flatten head
    return embed + arch.n_layers * block + head


def sample_flops(arch: Arch, shape: DataShape) -> int:
    """Multiply-adds of one sample's forward pass: every patch through the embedding and each
    block (its weights and its attention over the patches), then the head. Backward costs about
    twice that in every part alike, so ratios between architectures hold for a training step."""
    n, d = shape.n_patches, arch.d_model
    block = 4 * d * d + 2 * d * arch.d_ff + 2 * n * d
    return n * (shape.patch_len * shape.n_features * d + arch.n_layers * block) + n * d * shape.n_outputs


def scaled_by_flops(arch: Arch, seconds: dict[str, float], shape: DataShape) -> tuple[float, str]:
    """`arch`'s seconds from those of the architecture keyed in `seconds` nearest it in FLOPs,
    scaled by FLOPs; with that key."""
    own = sample_flops(arch, shape)
    flops = {key: sample_flops(Arch.from_key(key), shape) for key in seconds}
    source = min(flops, key=lambda key: abs(math.log(flops[key] / own)))
    return seconds[source] * own / flops[source], source


def build_grid(spec: GridSpec, shape: DataShape, budget: int) -> list[GridEntry]:
    """Every architecture of the search space within ±tolerance of the budget, smallest first."""
    low, high = budget * (1 - spec.tolerance), budget * (1 + spec.tolerance)
    entries = []
    for d_model in sorted(set(spec.d_model)):
        for n_layers in sorted(set(spec.n_layers)):
            for n_heads in sorted(set(spec.n_heads)):
                if d_model % n_heads:
                    continue
                for mult in sorted(set(spec.d_ff_mult)):
                    arch = Arch(d_model, n_layers, n_heads, d_model * mult)
                    params = count_parameters(arch, shape)
                    if low <= params <= high:
                        entries.append(GridEntry(arch, params))
    return sorted(entries, key=lambda e: (e.params, e.arch.key))


def require_grid(spec: GridSpec, shape: DataShape, budget: int) -> list[GridEntry]:
    """The grid, or an error saying the search space has nothing near this budget."""
    entries = build_grid(spec, shape, budget)
    if not entries:
        raise HpodError(
            f"budget {budget:,}: no architecture of the grid lies within ±{spec.tolerance:.0%} "
            "(widen grid.tolerance or the grid's d_model/n_layers)"
        )
    return entries


def built_parameters(arch: Arch, shape: DataShape) -> int:
    """sum(p.numel()) of the real model, built on the meta device so no memory is used."""
    with torch.device("meta"):
        model = PatchTST(arch.model_config(shape))
    return sum(p.numel() for p in model.parameters())


def verify(entries: list[GridEntry], shape: DataShape) -> list[tuple[GridEntry, int]]:
    """Entries whose formula count differs from the built model's, with the built count."""
    mismatches = []
    for entry in entries:
        built = built_parameters(entry.arch, shape)
        if built != entry.params:
            mismatches.append((entry, built))
    return mismatches


def extremes(entries: list[GridEntry]) -> list[Arch]:
    """Architectures at the min and max of d_model, n_layers and n_heads, each taken with the
    other two dimensions as near the middle of the grid as possible. Where two extremes share
    their best architecture, the later one takes its next best, so each forced trial is new."""
    archs = [e.arch for e in entries]
    dims = ("d_model", "n_layers", "n_heads")
    ranks = {dim: sorted({getattr(a, dim) for a in archs}) for dim in dims}

    def off_middle(arch: Arch, dim: str) -> float:
        values = ranks[dim]
        return abs(values.index(getattr(arch, dim)) - (len(values) - 1) / 2)

    chosen: list[Arch] = []
    for dim in dims:
        for pick in (min, max):
            target = pick(ranks[dim])
            candidates = [a for a in archs if getattr(a, dim) == target and a not in chosen]
            others = [o for o in dims if o != dim]
            if candidates:
                chosen.append(min(candidates, key=lambda a: (sum(off_middle(a, o) for o in others), a.key)))
    return chosen
