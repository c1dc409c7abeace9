"""Shared pieces of the alignment-model tests (tests/test_align_*.py)."""
import pytest
import torch


def single_thread():
    """Run with one torch thread, then restore the count (a generator for pytest fixtures of any scope).
    Tiny matrices: one thread is faster, and far faster when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# autouse in every test module that imports it
one_thread = pytest.fixture(autouse=True, name="one_thread")(single_thread)
