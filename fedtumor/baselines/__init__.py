"""Non-federated baselines on the same model, data and compute budget as a federated run.

- :mod:`fedtumor.baselines.centralized`: one model on the pooled training subjects of every site
  (the "centrally shared data" upper bound);
- :mod:`fedtumor.baselines.local`: one model per site, trained on that site alone.

Both read the run config exactly as a federation does and write the same run folder.
"""
