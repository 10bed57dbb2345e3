"""The federation framework: plugin API, registry, strategy mixin, wire format, ledger, FeTS hooks, DP, conformance."""
