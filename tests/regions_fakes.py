"""Shared pieces of the region-encoder tests (tests/test_regions_*.py)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one thread avoids thread spin-waiting on a busy machine. Autouse in every test module
    that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
