"""Training: model specs trained on dataset versions, logged to tracking, and the data loop.

``train`` fits a model spec on a dataset version and logs the run (params, metrics per fold and
on a held-out split, the version as the run's dataset input, the model registered under the
spec's name); ``error-analysis`` ranks suspected label errors by confident learning on
out-of-sample probabilities and shapes the top ones as a relabel batch; ``augment`` writes a
seeded, deterministic augmentation of a version as a new version; ``sweep`` trains a grid of a
spec's params on one version and can promote the best model. Everything runs as a job
(``mlops-workload training``), never in a charm hook.
"""
