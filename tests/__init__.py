"""fedtumor's test suite; it mirrors the source tree, end-to-end runs live in tests/e2e/."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout the suite tests
