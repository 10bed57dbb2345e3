"""The Flower ServerApp (wiring only): config, strategy, rounds, run folder."""
