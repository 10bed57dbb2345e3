"""Running federations: simulation runner, flwr run submission, processes, loopback federation, centre proxy."""
