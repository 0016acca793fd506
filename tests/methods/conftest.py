"""Shared fixtures for the methods' tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # These tests run many tiny ops; on the shared 2-core machines intra-op threading only adds
    # contention (measured: 2.3 s with one thread vs 28 s with two for the overfitting test).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
