"""fedtumor's test suite; it mirrors the source tree, end-to-end runs live in tests/e2e/."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout the suite tests

# One real BraTS 2023 case, both layouts, beside the checkout; never copied into it (see docs/data.md).
REALDATA = REPO.parent / "shared" / "realdata"
REAL_CASE_ID = "BraTS-GLI-00001-000"
