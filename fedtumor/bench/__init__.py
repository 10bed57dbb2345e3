"""What the benchmark and study scripts under scripts/ share: observing a simulation, reporting results,
the federated-versus-baselines comparison (compare, compare_study) and the privacy audit (privacy, privacy_study)."""
