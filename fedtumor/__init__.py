"""fedtumor: federated brain-tumour segmentation on Flower, MONAI and TorchIO.

One subpackage per concern (see docs/architecture.md): ``core`` (the ML core, no Flower),
``run`` (the run folder), ``federation`` (the strategy framework and plugin API), ``security``,
``baselines``, ``deployment``, ``bench``; ``cli`` composes them into the ``fedtumor`` command.
"""

__version__ = "0.1.0"
