"""Resource guard: how much work a trial may put on the machine at once."""

from __future__ import annotations

# The replaced system's rule, kept until micro-batches are chosen from measured memory:
# (memory score upper bound, micro-batch), memory score = d_model² × n_layers / 1e9.
_MICRO_BATCH_BY_SCORE = ((0.1, 256), (0.5, 128), (1.5, 64), (3.0, 32))
_SMALLEST_MICRO_BATCH = 16


def micro_batch_for(d_model: int, n_layers: int, effective_batch: int) -> int:
    """The micro-batch for an architecture, never above the effective batch."""
    score = d_model**2 * n_layers / 1e9
    micro = next((size for bound, size in _MICRO_BATCH_BY_SCORE if score <= bound), _SMALLEST_MICRO_BATCH)
    return min(micro, effective_batch)
