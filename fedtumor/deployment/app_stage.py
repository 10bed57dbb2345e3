"""The files ``flwr run`` bundles into the app's FAB, copied to a folder of their own first.

``flwr run APP_DIR`` walks every file under the app folder and only then filters them
(``flwr.cli.utils.collect_files``): with the venv inside the checkout that is some 50,000
files and about 3 s before every run starts, for a FAB of about 240. :func:`staged_app`
copies only the files Flower could bundle (its built-in include patterns, ``pyproject.toml``
and ``.gitignore``), skipping the folders Flower excludes wholesale (``.venv``, ``venv``,
``env``, ``ENV`` at the top and every ``__pycache__``), into a temporary folder, and
``flwr run`` builds from there: the same files, so the same FAB, byte for byte.

Example::

    with staged_app(Path(".")) as app:
        subprocess.run(["flwr", "run", str(app), "local"])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flwr.cli.utils import build_pathspec
from flwr.common.constant import FAB_INCLUDE_PATTERNS

TOP_LEVEL_ENVIRONMENTS = frozenset({".venv", "venv", "env", "ENV"})  # Flower excludes these folders entirely
ALWAYS = frozenset({"pyproject.toml", ".gitignore"})


def bundle_candidates(app_dir: Path) -> list[str]:
    """Relative POSIX paths of the files Flower could put into the FAB (it filters them further)."""
    root = app_dir.resolve()
    include = build_pathspec(FAB_INCLUDE_PATTERNS)  # Flower's own matcher, so the same files match
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [
            name for name in dirnames if name != "__pycache__" and not (here == root and name in TOP_LEVEL_ENVIRONMENTS)
        ]
        for filename in filenames:
            path = here / filename
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                continue  # Flower skips these too
            relative = path.relative_to(root).as_posix()
            if relative in ALWAYS or include.match_file(relative):
                found.append(relative)
    return sorted(found)


@contextlib.contextmanager
def staged_app(app_dir: Path) -> Iterator[Path]:
    """A temporary copy of what ``flwr run`` may bundle from ``app_dir``; removed afterwards."""
    stage = Path(tempfile.mkdtemp(prefix="fedtumor-fab-"))
    try:
        for relative in bundle_candidates(Path(app_dir)):
            target = stage / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(app_dir) / relative, target)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
