"""fedtumor core: config, model, losses, BraTS metrics, training loops, results and CLI.

Nothing in this package imports Flower's app layer, so the ML core can be tested and
benchmarked without a federation.
"""

__version__ = "0.1.0"
