"""One Optuna study of a (job, budget, horizon): its plan and search space, sampler, pruner,
objective and seed runs. It knows nothing of processes or the queue."""
