"""The run folder: every file named once, the writer, audit log, resume state, checkpoints, plots, report."""
