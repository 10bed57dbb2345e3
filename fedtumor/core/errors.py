"""Errors that reach a user as one line: bad data names the subject and file, bad config the key."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A problem with input data, phrased as one line naming the subject and the file."""

    def __init__(self, message: str, subject: str | None = None, path: Path | str | None = None):
        self.subject = subject
        self.path = Path(path) if path is not None else None
        parts = []
        if subject:
            parts.append(f"subject {subject}")
        if path is not None:
            parts.append(str(path))
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(Exception):
    """A wrong run-config key or value; the message names the key."""
