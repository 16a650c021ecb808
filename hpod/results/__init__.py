"""What studies produce: baselines, evaluation, the report and its scaling fit, plots, and
imported trials."""
