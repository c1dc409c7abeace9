"""Shared pieces of the region-encoder tests (tests/test_regions_*.py)."""
import pytest
from align_fakes import single_thread

# Tiny convolutions: one thread avoids thread spin-waiting on a busy machine. Autouse in every test module that
# imports it.
_one_thread = pytest.fixture(autouse=True, scope="module", name="_one_thread")(single_thread)
