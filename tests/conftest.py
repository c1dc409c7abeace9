import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DVSA_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_datasets() -> Path:
    """../shared/datasets, or skip (a user's clone has none)."""
    d = SHARED / "datasets"
    if not d.is_dir():
        pytest.skip("../shared/datasets is absent")
    return d
