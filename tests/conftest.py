"""Shared test helpers: where ../shared lives, and skipping cleanly without it."""
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLES = ROOT / "examples"


def shared_file(rel: str) -> Path:
    """A file from ../shared, or skip the test when the folder is not beside the checkout."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"../shared/{rel} not available")
    return path


@pytest.fixture
def portrait_path() -> Path:
    return EXAMPLES / "portrait.png"


@pytest.fixture
def driver_path() -> Path:
    return EXAMPLES / "driver.mp4"
