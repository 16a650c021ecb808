"""One trial's training: the model and its architecture grid, the data, the trainer, checkpoints,
and memory sizing (the memory model, the micro-batch probe, the device)."""
