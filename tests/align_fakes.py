"""Shared pieces of the alignment-model tests (tests/test_align_*.py)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and far faster when the CPU is shared. Autouse in every test module
    that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
