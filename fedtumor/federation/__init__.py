"""The federation framework: plugin API and registry, strategy mixin, wire format, ledger, FeTS hooks, DP, conformance kit."""
