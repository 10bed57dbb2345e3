"""The built-in aggregation strategies, one per file, registered as plugins through entry points like any other."""
