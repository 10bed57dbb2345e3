"""An example fedtumor strategy plugin: FedAvg with norm-clipped site updates."""
