"""Running federations: the simulation runner, flwr run submission, processes, the loopback federation, the centre's proxy."""
