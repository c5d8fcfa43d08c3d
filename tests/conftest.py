"""Shared pytest set-up: markers and small helpers every test folder may use."""
import os

import pytest
import torch

# Two cores here: keep torch from oversubscribing when tests start worker processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs of a minute or more (still run in CI)")
    config.addinivalue_line("markers", "oracle: compares against an external implementation (skips when absent)")


@pytest.fixture
def rng():
    """A seeded numpy generator, so failures reproduce."""
    import numpy as np

    return np.random.default_rng(0)
