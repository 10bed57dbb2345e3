"""Aggregation strategies as plugins: the registry, the built-ins, the client-hook interface."""
