"""The staged app folder `flwr run` builds from: Flower's FAB, byte for byte, without walking the venv."""

import shutil

from flwr.cli.build import build_fab_from_disk

from fedtumor.deployment.app_stage import bundle_candidates, staged_app
from tests import REPO


def test_the_staged_app_gives_the_fab_flower_builds_from_the_folder_itself(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(REPO / "scripts" / "bare_flower_app", app)
    (app / ".gitignore").write_text("outputs/\n")
    (app / "outputs").mkdir()
    (app / "outputs" / "run.json").write_text("{}")  # ignored by .gitignore: Flower leaves it out
    (app / "notes").mkdir()
    (app / "notes" / "plan.md").write_text("# plan\n")  # bundled
    (app / "notes" / "figure.png").write_bytes(b"\x89PNG")  # not a bundled extension
    for folder in (".venv/lib/site-packages/pkg", "src/__pycache__"):
        (app / folder).mkdir(parents=True)
        (app / folder / "module.py").write_text("x = 1\n")
    (app / "linked.py").symlink_to(app / "bare_app.py")  # Flower skips symlinks

    candidates = bundle_candidates(app)
    assert "notes/plan.md" in candidates and "outputs/run.json" in candidates  # .gitignore is Flower's to apply
    assert not any(c.startswith((".venv/", "src/__pycache__/")) or c.endswith(".png") for c in candidates)
    assert "linked.py" not in candidates
    with staged_app(app) as stage:
        assert stage != app and (stage / "pyproject.toml").is_file()
        assert build_fab_from_disk(stage) == build_fab_from_disk(app)
    assert not stage.exists()  # removed afterwards
