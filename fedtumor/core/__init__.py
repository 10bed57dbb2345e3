"""The ML core: run config, errors, model, losses, regions, metrics, training loops (no Flower)."""
