"""Shared tooling of the benchmark scripts under scripts/: observing a simulation, reporting results."""
